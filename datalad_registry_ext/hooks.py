"""Register on push (``registry-on-push``): a DataLad result hook that
submits a dataset's sibling to a registry after each ``datalad push`` to it.

DataLad runs *result hooks* on the results of its commands: a hook is two
configuration items, ``datalad.result-hook.<name>.match-json`` (which
results) and ``datalad.result-hook.<name>.call-json`` (a DataLad command and
its arguments, with ``{field}`` placeholders filled from the result). DataLad
reads ``call-json`` only from configuration that is not committed, so a
cloned dataset can never bring a hook along. :func:`install` writes a hook
whose match is a successful ``publish`` result of a dataset (what
``datalad push`` reports for each ref it updated) and whose call is
``registry_on_push`` with the pushed dataset (``{path}``) and sibling
(``{target}``); :func:`after_push` is what that call runs: the sibling's URL
(``remote.<sibling>.url``: where others clone from, not a ``pushurl``) is
registered in a local registry (:func:`registration.submit`) or submitted to
a DataLad-Registry service (:func:`sources.submit_to`).

Where DataLad looks for hooks: in the configuration of the dataset a command
is given (``datalad push -d DS``, ``ds.push()`` in Python), else in the
user's and system's configuration only. So a hook in the dataset's own
``.git/config`` (the default scope, ``local``) runs for ``datalad push -d
.``; one in the user's configuration (scope ``global``) runs for a plain
``datalad push`` too, and matches only the results of that dataset's path.

A hook must never break the push it follows: DataLad runs it between the
push's results, and an exception would end the push's command. The call
asks for ``on_failure: ignore`` and no rendering (the push's ``-f json``
output stays JSON), and :func:`after_push` turns every failure into an
outcome and a warning in the log. Credentials never leave the machine: a
sibling URL with credentials is used to clone into a local registry but
stored without them (as by ``registry-submit``), and is not submitted to a
service at all.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterator

from datalad_registry_ext import registration, sources
from datalad_registry_ext.gitcmd import RepositoryError, git
from datalad_registry_ext.records import scrub

lgr = logging.getLogger("datalad.registry_ext.on_push")

ACTION = "registry_on_push"
#: the DataLad command the hook calls (its Python API name)
COMMAND = "registry_on_push"
HOOK = "registry-on-push"
SCOPES = ("local", "global")
_SCP_LIKE = re.compile(r"^[^@/\s]+@[^/:\s]+:")


def hook_name(dataset: Path, scope: str) -> str:
    """The hook's name: ``registry-on-push`` in the dataset's config; in
    the user's, one per dataset (a hash of its path), so that several
    datasets can each have theirs."""
    if scope == "local":
        return HOOK
    digest = hashlib.sha256(str(dataset).encode("utf-8", "surrogatepass"))
    return f"{HOOK}-{digest.hexdigest()[:12]}"


def _key(name: str, item: str) -> str:
    return f"datalad.result-hook.{name}.{item}"


def _config(dataset: Path, scope: str, *args, check: bool = True) -> str:
    return git(["config", f"--{scope}", *args], cwd=dataset, check=check)


def _template_value(value) -> str:
    """``value`` as JSON inside the call template: DataLad fills the
    template with ``str.format``, so braces of ours are doubled."""
    return json.dumps(value).replace("{", "{{").replace("}", "}}")


def install(dataset: Path, *, registry: Path, to: str | None = None,
            scope: str = "local") -> dict:
    """Install (or replace) the hook of ``dataset`` in ``scope``: after each
    successful push of it, its sibling is registered in ``registry`` or,
    with ``to`` (a service's URL or a source name remembered in
    ``registry``), submitted to that service. Returns an outcome."""
    dataset = Path(dataset).absolute()
    registry = Path(registry).absolute()
    base = {"action": ACTION, "path": str(dataset), "type": "dataset",
            "scope": scope}
    target = None
    if to:
        try:
            name, target = sources.service_of(registry, to)
        except sources.SourceError as e:
            return dict(base, status=getattr(e, "status", "error"),
                        message=str(e))
    match = {"action": "publish", "status": "ok", "type": "dataset"}
    if scope == "global":
        # every dataset's pushes see the user's hooks: this one's only (by
        # its path as given and as resolved, either may be reported)
        paths = sorted({str(dataset), os.path.realpath(dataset)})
        match["path"] = ["in", paths]
    name = hook_name(dataset, scope)
    call = (COMMAND + ' {{"dataset": "{path}", "sibling": "{target}", '
            f'"registry": {_template_value(str(registry))}, '
            f'"to": {_template_value(target)}, '
            '"on_failure": "ignore", "result_renderer": "disabled"}}')
    _config(dataset, scope, "--replace-all", _key(name, "match-json"),
            json.dumps(match))
    _config(dataset, scope, "--replace-all", _key(name, "call-json"), call)
    where = f"the service {target}" if target else f"the registry {registry}"
    how = ("datalad push -d " + str(dataset)) if scope == "local" else \
        "datalad push"
    return dict(base, status="ok", hook=name, registry=str(registry),
                to=target,
                message=f"each push of {dataset} ({how}) now submits the "
                        f"pushed sibling's URL to {where}")


def remove(dataset: Path, *, scope: str = "local") -> dict:
    """Remove the hook of ``dataset`` from ``scope``; an outcome."""
    dataset = Path(dataset).absolute()
    name = hook_name(dataset, scope)
    base = {"action": ACTION, "path": str(dataset), "type": "dataset",
            "scope": scope, "hook": name}
    present = installed(dataset, scope)
    for item in ("match-json", "call-json"):
        # exit code 5: not set; nothing to remove
        _config(dataset, scope, "--unset-all", _key(name, item), check=False)
    if present is None:
        return dict(base, status="notneeded",
                    message=f"no registry hook for {dataset} in the {scope} "
                            "configuration")
    return dict(base, status="ok",
                message=f"pushes of {dataset} no longer submit anything")


def installed(dataset: Path, scope: str = "local") -> dict | None:
    """The hook's ``{"match", "call"}`` as configured, or None."""
    dataset = Path(dataset).absolute()
    name = hook_name(dataset, scope)
    out = {}
    for item in ("match-json", "call-json"):
        value = _config(dataset, scope, "--get", _key(name, item),
                        check=False).strip()
        if value:
            out[item.split("-")[0]] = value
    return out or None


# -- what the hook runs -----------------------------------------------------------

#: (dataset, sibling, destination) -> the refs state after which it was last
#: submitted in this process: ``datalad push`` reports one ``publish`` result
#: per ref (the branch, git-annex), all after one ``git push``, and the hook
#: runs for each; the second one has nothing new to submit
_submitted: dict[tuple, str] = {}


def sibling_url(dataset: Path, sibling: str) -> str | None:
    """The URL others clone ``sibling`` of ``dataset`` from: its
    ``remote.<sibling>.url``, a relative path made absolute (against the
    dataset, as git resolves it). None if it has none."""
    url = git(["config", "--get", f"remote.{sibling}.url"], cwd=dataset,
              check=False).strip()
    if not url:
        return None
    if "://" not in url and not _SCP_LIKE.match(url) and \
            not os.path.isabs(url):
        url = os.path.normpath(os.path.join(dataset, url))
    return url


def _refs_state(dataset: Path, sibling: str) -> str:
    return git(["for-each-ref", "--format=%(refname) %(objectname)",
                "refs/heads", f"refs/remotes/{sibling}"], cwd=dataset,
               check=False)


def after_push(dataset: Path, sibling: str, *, registry: Path,
               to: str | None = None) -> Iterator[dict]:
    """Submit the URL of ``sibling`` of ``dataset``, just pushed to: register
    it in ``registry``, or submit it to the service ``to``. Yields outcomes
    and logs them (the hook's results are not rendered); never raises."""
    dataset = Path(dataset).absolute()
    base = {"action": ACTION, "path": str(dataset), "type": "dataset",
            "sibling": sibling}
    try:
        for outcome in _after_push(dataset, sibling, Path(registry), to,
                                   base):
            _log(outcome)
            yield outcome
    except Exception as e:  # noqa: BLE001 -- a hook must not break the push
        message = scrub(f"registering the push of {dataset} to {sibling} "
                        f"failed: {type(e).__name__}: {e}")
        lgr.warning("registry-on-push: %s", message)
        yield dict(base, status="error", message=message)


def _after_push(dataset: Path, sibling: str, registry: Path, to, base
                ) -> Iterator[dict]:
    url = sibling_url(dataset, sibling)
    if url is None:
        yield dict(base, status="impossible",
                   message=f"the sibling {sibling} of {dataset} has no URL "
                           "(a special remote?): nothing to register")
        return
    key = (str(dataset), sibling, to or str(registry))
    try:
        state = _refs_state(dataset, sibling)
    except RepositoryError:
        state = None
    if state is not None and _submitted.get(key) == state:
        yield dict(base, status="notneeded", url=scrub(url),
                   message=f"{scrub(url)} was submitted after this push "
                           "already")
        return
    _submitted[key] = state
    if to:
        yield from sources.submit_to(registry, to, [url])
    else:
        yield from registration.submit(registry, [url])


def _log(outcome: dict) -> None:
    message = outcome.get("message") or ""
    if outcome.get("status") in ("error", "impossible"):
        lgr.warning("registry-on-push: %s", message)
    elif outcome.get("status") == "ok" and outcome.get("action") in (
            ACTION, registration.ACTION, sources.SUBMIT_ACTION):
        lgr.info("registry-on-push: %s", message)
    else:  # unchanged, and each extractor's run: the details
        lgr.debug("registry-on-push: %s", message)
