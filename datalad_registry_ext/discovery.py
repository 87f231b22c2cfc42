"""Discovery (``registry-update --discover``): what DataLad's usage dashboard
knows that the registry does not.

DataLad's usage dashboard publishes ``datalad-repos.json``, the DataLad
repositories it found on GitHub, GIN, hub.datalad.org, ATRIS and OSF, each
``active`` or ``gone`` (deleted, or no longer a DataLad repository).
DataLad-Registry reads it every day and submits the active repositories it
does not have (its ``usage_dashboard_sync``). :func:`discover` does the same
for a registry of ours, from a file or a URL, and also marks the registered
repositories the dashboard lists as gone: their record's
``dashboard_gone_dt`` (ours; committed in the registry, searchable) is set to
when that was first seen, and cleared when the dashboard lists the
repository as active again. A repository the file does not mention is left
alone: a partial or truncated list is no evidence that anything is gone.

Registering the new ones is :func:`registration.submit`'s work (clone,
facts, commit, metadata); the flags are one commit of their own. A
repository already registered is not checked again here (that is what
``registry-update`` does).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

from datalad_registry_ext import registration, remote
from datalad_registry_ext import registry as reg
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.index import local_index
from datalad_registry_ext.index_sync import own_records, reconcile_index
from datalad_registry_ext.records import canonical_url, now_iso, scrub
from datalad_registry_ext.url_lists import UrlListError, dashboard_entries

lgr = logging.getLogger("datalad.registry_ext.discovery")

ACTION = "registry_discover"
#: the record field of the flag
GONE_FIELD = "dashboard_gone_dt"


def read_dashboard(source: str) -> tuple[list[dict], str]:
    """The entries (:func:`url_lists.dashboard_entries`) of the dashboard
    file at ``source``, a path or an http(s) URL, and how to name it in
    messages. A URL is fetched with the limits of every request to a
    service (time-outs, retries, ``datalad.registry.response-max-bytes``)
    and no token: the dashboard is public and not a registry.
    RegistryExtError (UrlListError, RemoteError) if it cannot be read."""
    if remote.is_http_url(source):
        label = scrub(source)
        what = "the dashboard file"
        with remote.Service(source, label=label) as service:
            answer = service.exchange("GET", source, what)
            if answer.status != 200:
                raise service.refusal(answer, what)
        body = answer.body
    else:
        path = Path(source).expanduser().absolute()
        label = str(path)
        try:
            body = path.read_bytes()
        except OSError as e:
            raise UrlListError(f"cannot read {path}: {e.strerror or e}") \
                from e
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UrlListError(f"{label} is not a text file (not UTF-8 at byte "
                           f"{e.start})") from e
    return dashboard_entries(text, label), label


def discover(location: Path, source: str, *, jobs: int = 1,
             extract: bool = True,
             progress: Callable[[str, int, int], None] | None = None
             ) -> Iterator[dict]:
    """Submit the dashboard's active repositories that the registry at
    ``location`` does not have, and flag (or unflag) the registered ones it
    lists as gone (or active). Yields result-shaped outcomes: one per
    flag change (action ``registry_discover``), those of
    :func:`registration.submit` for the new repositories, and a summary
    (``registry_discover``, ``type`` file) with the counts."""
    location = Path(location)
    base = {"action": ACTION, "type": "dataset"}
    try:
        entries, label = read_dashboard(source)
    except RegistryExtError as e:
        yield dict(base, path=scrub(str(source)), type="file",
                   status=getattr(e, "status", "error"), message=str(e))
        return

    active: dict[str, str] = {}   # canonical URL -> clone URL
    gone: dict[str, str] = {}
    unsupported = 0
    for entry in entries:
        status, url = entry["status"], entry["clone_url"]
        if url is None:           # OSF: no git repository to register
            unsupported += 1
            continue
        try:
            key = canonical_url(url)
        except ValueError:        # a text urlsplit refuses ("http://[x")
            key = None
        if key is None or status not in ("active", "gone"):
            yield dict(base, path=label, type="file", status="impossible",
                       url=scrub(url),
                       message=f"{label}: {scrub(entry['url'])} "
                               + ("is not a URL" if key is None else
                                  f"has the unknown status {status!r}")
                               + "; skipped")
            continue
        (active if status == "active" else gone)[key] = url
    # listed as active anywhere (a repository can be in two lists): active
    gone = {k: u for k, u in gone.items() if k not in active}

    counts = dict(active=len(active), gone=len(gone),
                  unsupported=unsupported, submitted=0, flagged=0,
                  unflagged=0, still_gone=0, gone_unregistered=0)
    registered: set[str] = set()
    if reg.is_registry(location):
        for outcome in _flag(location, active, gone, counts):
            yield outcome
        registered = {canonical_url(r["url"])
                      for r in own_records(location)}
    else:
        counts["gone_unregistered"] = len(gone)

    new = [u for k, u in active.items() if k not in registered]
    for res in (registration.submit(location, new, jobs=jobs,
                                    extract=extract, progress=progress)
                if new else ()):
        if res.get("action") == registration.ACTION and \
                res.get("change") == "new":
            counts["submitted"] += 1
        yield res

    changed = counts["submitted"] + counts["flagged"] + counts["unflagged"]
    yield dict(base, path=label, type="file",
               status="ok" if changed else "notneeded",
               message=_summary(label, counts, len(new)), counts=counts,
               registry=str(location))


def _flag(registry: Path, active: dict, gone: dict, counts: dict
          ) -> list[dict]:
    """Set ``dashboard_gone_dt`` on the registered repositories in ``gone``
    that lack it and clear it on those in ``active`` that have it: one
    registry commit, then the index (as registration writes both)."""
    index = local_index(registry)
    outcomes, changed = [], []
    with reg.locked(registry):
        reconcile_index(registry, index)
        now = now_iso()
        for rec in own_records(registry, index):
            if not rec.get("registry_path") or not rec.get("head"):
                continue  # not an entry of the registry (cannot happen)
            key = canonical_url(rec["url"])
            out = {"action": ACTION, "type": "dataset",
                   "path": str(registry / rec["registry_path"]),
                   "url": rec["url"], "registry": str(registry),
                   "registry_path": rec["registry_path"]}
            if key in gone:
                if rec.get(GONE_FIELD):
                    counts["still_gone"] += 1
                    continue
                rec = dict(rec, **{GONE_FIELD: now})
                counts["flagged"] += 1
                outcomes.append(dict(
                    out, status="ok", change="gone", record=rec,
                    message=f"{rec['url']} is gone from DataLad's usage "
                            f"dashboard: flagged ({GONE_FIELD})"))
            elif key in active and rec.get(GONE_FIELD):
                rec = dict(rec, **{GONE_FIELD: None})
                counts["unflagged"] += 1
                outcomes.append(dict(
                    out, status="ok", change="active", record=rec,
                    message=f"{rec['url']} is listed as active again by "
                            "DataLad's usage dashboard: flag removed"))
            else:
                continue
            changed.append(rec)
        counts["gone_unregistered"] = (len(gone) - counts["flagged"]
                                       - counts["still_gone"])
        if changed:
            commit = reg.commit_entries(registry, changed,
                                        _commit_message(outcomes))
            with index.transaction() as txn:
                for rec in changed:
                    txn.put(rec)
                txn.set_meta(registry_head=commit,
                             metadata_state=reg.metadata_state(registry))
    return outcomes


def _commit_message(outcomes: list[dict]) -> str:
    gone = [o for o in outcomes if o["change"] == "gone"]
    back = [o for o in outcomes if o["change"] == "active"]
    head = []
    if gone:
        head.append(f"flag {len(gone)} gone")
    if back:
        head.append(f"unflag {len(back)} active again")
    lines = [f"[registry] Usage dashboard: {', '.join(head)}", ""]
    lines += [f"gone {o['registry_path']}: {o['url']}" for o in gone]
    lines += [f"active {o['registry_path']}: {o['url']}" for o in back]
    return "\n".join(lines) + "\n"


def _summary(label: str, c: dict, asked: int) -> str:
    if not c["active"]:
        parts = ["no active repositories listed"]
    else:
        parts = [f"{c['active']} active repositories listed, "
                 + (f"{asked} not registered here, {c['submitted']} of them "
                    "registered now" if asked else "all registered here")]
    if c["gone"]:
        parts.append(
            f"{c['gone']} gone: {c['flagged']} flagged now, "
            f"{c['still_gone']} flagged before, {c['gone_unregistered']} "
            "not registered")
    if c["unflagged"]:
        parts.append(f"{c['unflagged']} active again (flag removed)")
    if c["unsupported"]:
        parts.append(f"{c['unsupported']} OSF "
                     + ("entry" if c["unsupported"] == 1 else "entries")
                     + " skipped (not git repositories)")
    return f"{label}: " + "; ".join(parts)
