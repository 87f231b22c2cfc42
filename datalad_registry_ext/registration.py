"""Registering repositories: from a URL to a subdataset entry and a record.

:func:`submit` is what ``registry-submit`` runs: it resolves the given URLs
and paths (and ``--from`` lists), creates the registry on first use,
registers the batch and then extracts the metadata of what it registered
(:mod:`metadata`), yielding result-shaped outcomes.

:func:`register` registers a batch. For each repository it

1. clones it into the clone cache (or fetches an existing clone),
2. computes its facts (:mod:`facts`),

in parallel, each holding that clone's lock (:func:`clones.using`: the
cache is shared by the user's registries), and then, for the whole batch at
once and under the registry's lock,

3. commits the new and changed subdataset entries (:mod:`registry`), in one
   commit,
4. writes their records to the index (:mod:`index`).

A repository that fails at step 1 or 2 yields an error outcome and changes
nothing. The index remembers which registry commit it reflects, so if a
process dies between steps 3 and 4, the next one brings the index up to date
from the registry (:func:`reconcile_index`).
"""
from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import urlsplit

from datalad_registry_ext import facts as facts_mod
from datalad_registry_ext import metadata
from datalad_registry_ext import registry as reg
from datalad_registry_ext.clones import clone_or_update, using
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.gitcmd import RepositoryError
from datalad_registry_ext.index import Index, local_index
from datalad_registry_ext.index_sync import (
    own_records,
    reconcile_index,
    refs_warning_outcomes,
)
from datalad_registry_ext.records import (
    CHECK_FAILURE_FIELDS,
    LOCAL_SOURCE,
    canonical_url,
    changed_facts,
    checked,
    new_record,
    now_iso,
    registry_path_for_url,
    scrub,
    strip_credentials,
)
from datalad_registry_ext.url_lists import (
    UNSUPPORTED_SERVICES,
    UrlListError,
    read_url_list,
)

lgr = logging.getLogger("datalad.registry_ext.registration")

SUPPORTED_SCHEMES = ("http", "https", "ssh", "git+ssh", "git", "file")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"^[^@/\s]+@[^/:\s]+:")


class InputError(RegistryExtError, ValueError):
    status = "impossible"

    """A submitted item is not something that can be registered."""

@dataclass(frozen=True)
class Candidate:
    """One repository to register, as the user gave it."""
    given: str        # as given, shown in messages only after scrubbing
    source: str       # what git clones from (may carry credentials)
    url: str          # what is stored: no credentials, no trailing slash

    @property
    def key(self) -> str:
        return canonical_url(self.url)


def resolve_input(item: str, cwd: Path | None = None) -> Candidate:
    """Turn a command-line item (URL or local path) into a Candidate."""
    item = item.strip()
    if not item:
        raise InputError("an empty string is not a URL or path")
    if any(ord(c) < 32 or c == "\x7f" for c in item):
        # a newline would end the .gitmodules line that records it
        raise InputError(f"{scrub(item)!r} contains a control character; "
                         "rename the directory or quote the URL properly")
    m = _SCHEME.match(item)
    if m:
        scheme = m[1].lower()
        if scheme not in SUPPORTED_SCHEMES:
            raise InputError(
                f"URL scheme '{scheme}' is not supported (use one of: "
                f"{', '.join(SUPPORTED_SCHEMES)}, a git@host:path address or "
                "a local path)")
        try:
            url = strip_credentials(item)
            canonical_url(url)
        except ValueError as e:  # urlsplit: e.g. "Invalid IPv6 URL"
            raise InputError(f"{scrub(item)} is not a valid URL ({e})") from e
        if _is_osf(url):
            # as --from datalad-repos.json reports its OSF entries; no network
            raise InputError(f"{scrub(item)}: {UNSUPPORTED_SERVICES['osf']}")
        return Candidate(item, item, _trim(url))
    if _SCP_LIKE.match(item) and not os.path.exists(item):
        return Candidate(item, item, _trim(strip_credentials(item)))
    path = Path(cwd or Path.cwd()) / item
    if not path.exists():
        raise InputError(f"no such path: {path}")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a repository")
    path = Path(os.path.abspath(path))
    problem = facts_mod.local_repository_problem(path)
    if problem:
        raise InputError(problem)
    return Candidate(item, str(path), _trim(str(path)))


def _is_osf(url: str) -> bool:
    """Whether ``url`` points at the Open Science Framework (osf.io), whose
    projects are not git repositories."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    return host == "osf.io" or host.endswith(".osf.io")


def _trim(url: str) -> str:
    return url.rstrip("/") or "/"


# -- the batch ---------------------------------------------------------------------

def register(registry: Path, candidates: Iterable[Candidate], *, jobs: int = 1,
             progress: Callable[[int, int], None] | None = None
             ) -> Iterator[dict]:
    """Register ``candidates`` in ``registry``; yield one outcome per repository.

    An outcome is a dict with ``url``, ``status`` (``ok``, ``notneeded``,
    ``error``), ``message``, and on success ``record``, ``change`` (``new``,
    ``updated`` or ``unchanged``) and ``changed`` (the names of the facts
    that changed; all of them for a new registration).
    """
    registry = Path(registry)
    index = local_index(registry)
    reconcile_index(registry, index)

    unique: dict[str, Candidate] = {}
    for c in candidates:
        unique.setdefault(c.key, c)
    todo = list(unique.values())
    total = len(todo)
    done = 0

    def work(c: Candidate):
        try:
            # the clone is shared with the user's other registries: nobody
            # changes it between the fetch and the facts read from it
            with using(registry, c.key) as path:
                clone, _ = clone_or_update(c.source, path)
                return c, facts_mod.repository_facts(clone), None
        except RepositoryError as e:
            return c, None, str(e)
        except OSError as e:
            return c, None, scrub(f"{type(e).__name__}: {e}", [c.source])
        except RegistryExtError as e:
            # the clone's lock held too long by another registry, or its
            # references file cannot be written
            return c, None, scrub(str(e), [c.source])

    computed = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for c, facts, error in pool.map(work, todo):
            done += 1
            if progress:
                progress(done, total)
            computed.append((c, facts, error))

    failures = [
        _outcome(c, "error", f"cannot register {_public(c)}: {error}")
        for c, facts, error in computed if error is not None]
    ok = [(c, facts) for c, facts, error in computed if error is None]
    results = failures
    if ok:
        results += _commit_batch(registry, index, ok)
    order = {c.key: i for i, c in enumerate(todo)}
    yield from sorted(results, key=lambda r: order.get(r.pop("_key"), 0))


def _commit_batch(registry: Path, index: Index, ok) -> list[dict]:
    with reg.locked(registry):
        reconcile_index(registry, index)
        entries = reg.read_entries(registry)
        by_key = {canonical_url(r["url"]): r for r in entries.values()
                  if r.get("url")}
        current = {r["url"]: r for r in own_records(registry, index)}
        now = now_iso()
        # re-submitted unchanged after failed checks of registry-update: the
        # end of the back-off goes to the index only (nothing to commit)
        outcomes, changed_records, checked_records = [], [], []
        for c, facts in ok:
            committed = by_key.get(c.key)
            old = current.get(committed["url"]) if committed else None
            old = old or committed
            if old is None:
                path = reg.allocate_path(registry_path_for_url(c.key), c.url,
                                         entries)
                rec = new_record(c.url, **facts, registry_path=path,
                                 processed=True, last_update_dt=now,
                                 last_chk_dt=now)
                entries[path] = rec
                changed_records.append(rec)
                outcomes.append(_outcome(
                    c, "ok", f"registered {c.url} at {path}", record=rec,
                    change="new", changed=list(facts)))
                continue
            rec = new_record(old["url"])
            rec.update({k: v for k, v in old.items() if v is not None})
            rec.update(facts, processed=True, source=LOCAL_SOURCE)
            changes = changed_facts(old, rec)
            if not changes:
                cur = current.get(old["url"])
                if cur and any(cur.get(f) for f in CHECK_FAILURE_FIELDS):
                    old = checked(cur, now)
                    checked_records.append(old)
                outcomes.append(_outcome(
                    c, "notneeded", f"{rec['url']} is registered and unchanged",
                    record=old, change="unchanged", changed=[]))
                continue
            rec = checked(rec, now)
            rec.update(last_update_dt=now)
            changed_records.append(rec)
            before = {f: old.get(f) for f in changes}
            outcomes.append(_outcome(
                c, "ok",
                f"updated {rec['url']}: {describe_changes(before, rec, changes)}",
                record=rec, change="updated", changed=changes, before=before))
        if changed_records:
            commit = reg.commit_entries(
                registry, changed_records, _commit_message(changed_records, by_key))
            with index.transaction() as txn:
                for rec in changed_records:
                    txn.put(rec)
                txn.set_meta(registry_head=commit,
                             metadata_state=reg.metadata_state(registry))
        if checked_records:
            with index.transaction() as txn:
                for rec in checked_records:
                    # the index may have moved on (extraction): only the
                    # check's fields are ours to set
                    cur = txn.get(rec["url"]) or rec
                    txn.put(checked(cur, rec["last_chk_dt"]))
        return outcomes


def describe_changes(old: dict, new: dict, changes: list[str]) -> str:
    """``HEAD 1a2b3c4d -> 5e6f7a8b, branches changed``: what ``changes``
    (fact names) changed from ``old`` to ``new`` (records, or the old
    values of the changed facts)."""
    parts = []
    for f in changes:
        if f in ("head_describe", "head_dt") and "head" in changes:
            continue  # they follow from HEAD
        if f == "head":
            parts.append(f"HEAD {str(old.get('head'))[:8]} -> {new['head'][:8]}")
        elif f in ("annex_key_count", "annex_keys_known_count",
                   "annexed_files_in_wt_count", "annexed_files_in_wt_size",
                   "annexed_files_in_wt_unknown_size_count", "git_objects_kb"):
            parts.append(f"{f} {old.get(f)} -> {new.get(f)}")
        else:
            parts.append(f"{f} changed")
    return ", ".join(parts)


def _commit_message(records: list[dict], known: dict) -> str:
    new = [r for r in records if canonical_url(r["url"]) not in known]
    updated = [r for r in records if canonical_url(r["url"]) in known]
    head = []
    if new:
        head.append(f"register {len(new)}")
    if updated:
        head.append(f"update {len(updated)}")
    noun = "repository" if len(records) == 1 else "repositories"
    lines = [f"[registry] {' and '.join(head).capitalize()} {noun}", ""]
    lines += [f"register {r['registry_path']}: {r['url']}" for r in new]
    lines += [f"update {r['registry_path']}: {r['url']} @ {r['head'][:10]}"
              for r in updated]
    return "\n".join(lines) + "\n"


def _outcome(c: Candidate, status: str, message: str, **extra) -> dict:
    return {"url": c.url, "status": status, "message": message,
            "_key": c.key, **extra}


def _public(c: Candidate) -> str:
    return strip_credentials(c.given)


# -- register, then extract ---------------------------------------------------------

ACTION = "registry_submit"


def submit(location: Path, items: Iterable[str] = (), *, from_file=None,
           jobs: int = 1, extract: bool = True,
           extractors: list[str] | None = None,
           progress: Callable[[str, int, int], None] | None = None
           ) -> Iterator[dict]:
    """Register repositories, then extract their metadata.

    ``items`` are URLs or local paths, ``from_file`` a URL list or DataLad's
    ``datalad-repos.json`` (:mod:`url_lists`). The registry at ``location``
    is created if nothing is there. Yields outcomes shaped like result records
    (``action``, ``path``, ``type``, ``status``, ``message``, plus
    ``url``, ``registry_path``, ``record``, ... ); extraction outcomes come
    from :func:`metadata.extract`. ``progress(stage, done, total)`` reports
    each stage ("Registering", "Extracting").
    """
    location = Path(location)
    items = list(items)

    def refusal(message, **fields):
        return {"action": ACTION, "path": str(location), "type": "dataset",
                "status": "impossible", "message": scrub(message), **fields}

    if from_file:
        path = Path(from_file).expanduser().absolute()
        try:
            listed, skipped = read_url_list(path)
        except UrlListError as e:
            yield dict(refusal(str(e)), path=str(path), type="file")
            return
        items += listed
        for s in skipped:
            yield refusal(f"{s['url']}: {s['reason']}", url=s["url"])
    if not items:
        if not from_file:
            yield refusal("nothing to register: give URLs or paths, or "
                          "--from FILE")
        return

    candidates = []
    for item in items:
        try:
            candidates.append(resolve_input(item))
        except InputError as e:
            yield refusal(str(e), url=scrub(item))
    if not candidates:
        return

    registry = reg.ensure_registry(location)

    def stage(label):
        return (lambda done, total: progress(label, done, total)) \
            if progress else None

    try:
        outcomes = list(register(registry, candidates, jobs=jobs,
                                 progress=stage("Registering")))
    except RegistryExtError as e:
        outcomes = [dict(url=c.url, status="error", message=str(e))
                    for c in candidates]
    registered, results = [], []
    for o in outcomes:
        rec = o.get("record") or {}
        if o["status"] in ("ok", "notneeded") and rec:
            registered.append(rec)
        path = registry / rec["registry_path"] if rec.get(
            "registry_path") else registry
        results.append({
            "action": ACTION, "path": str(path), "type": "dataset",
            "status": o["status"], "message": o["message"],
            "url": o["url"], "registry": str(registry),
            "registry_path": rec.get("registry_path"),
            "ds_id": rec.get("ds_id"), "head": rec.get("head"),
            "change": o.get("change"), "changed": o.get("changed"),
            "before": o.get("before"), "record": rec or None})

    # registering brought the index up to date: a clone's missing metadata
    # refs are noticed then
    results += refs_warning_outcomes(registry)
    if not (extract and registered):
        yield from results
        return
    # as DataLad-Registry's pipeline: extraction follows registration; the
    # registration results wait for it, so their records carry the metadata
    # extracted by this call (extract yields its outcomes at its end anyway)
    current = {r["url"]: r for r in own_records(registry)}
    records = [current.get(r["url"], r) for r in registered]
    try:
        extracted = list(metadata.extract(
            registry, records, extractors or metadata.configured_extractors(),
            force=False, jobs=jobs, progress=stage("Extracting")))
    except BaseException:
        yield from results  # what was registered, before the failure
        raise
    current = {r["url"]: r for r in own_records(registry)}
    for res in results:
        if res["record"] and res["url"] in current:
            res["record"] = current[res["url"]]
    yield from results
    yield from extracted
