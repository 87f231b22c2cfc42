"""Incremental syncs of a DataLad-Registry service: only what changed.

After a full sync of a service (:mod:`sources`), a *sync state* is written
next to the source's index file (``<index file>.sync-state``, JSON): the
service, name and query, the index file's fingerprint, and for each record
``[id, stamp]``. The next sync of the same service with the same query
compares stamps instead of downloading everything:

``digests`` (``registry-serve``)
   ``GET /all?digests=true`` answers one ``{"id", "url", "digest"}`` per
   record, the digest a hash of the record as the service stores it, so it
   changes with any change of the record, metadata included. It is asked
   with ``If-None-Match`` and the collection's ETag of the last sync: a
   ``304`` means nothing changed, and the sync stops there (one request).
``stamps`` (DataLad-Registry, which has neither digests nor ETags)
   The pages with metadata *references* (``return_metadata=reference``,
   a fraction of the bytes of the records with their metadata) give every
   record's current facts; the stamp is ``last_update_dt`` and the names
   of the extractors with metadata -- what DataLad-Registry changes when it
   re-extracts. A record whose stamp is unchanged keeps its metadata
   content and takes the page's facts (``last_chk_dt`` and the like, which
   change without the dataset changing).

Records with a new stamp, and new records, are fetched by id: from
registry-serve (``digests``) :data:`remote.BATCH_IDS` per request (``GET
/dataset-urls/all?ids=...``), else one by one (``GET /dataset-urls/{id}``,
as both services answer it); records gone from
the service are removed. Stamps are always taken *before* the records they
describe are fetched, so a record that changes meanwhile is fetched again
next time rather than missed.

All or nothing: everything is fetched before anything is written; then,
under the index's lock, the changes are applied to a copy of the source's
search database (:class:`engine_patch.Patcher`; with digests the copy is
begun in a thread as soon as they begin to arrive), the index file is
rewritten (the store of record, streamed) and the database copy moved into
place; the sync state comes last. A sync state that does not match the
index file's fingerprint (a failure between those steps, an import from
elsewhere) is ignored: the next sync is a full one. So is one of another
query or name.

When many records changed (more than :data:`FETCH_SHARE` of them, or
:data:`FETCH_MAX`), a full download costs less than fetching them: the
caller then syncs in full. When many records are to be written
(more than :data:`PATCH_SHARE`), the search database is rebuilt from a
merged spool file rather than patched.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from datalad import cfg

from datalad_registry_ext import config, remote
from datalad_registry_ext.engine import Engine, EngineError
from datalad_registry_ext.engine_patch import Patcher
from datalad_registry_ext.files import TMP_SUFFIX, atomic_write
from datalad_registry_ext.index import Index
from datalad_registry_ext.records import (
    dumps_storable,
    loads_strict,
    normalize_record,
    now_iso,
)

ACTION = "registry_sync"
STATE_SUFFIX = ".sync-state"
STATE_VERSION = 1
#: more changed records than this share of all, or than FETCH_MAX, are
#: downloaded in full rather than fetched by id
FETCH_SHARE = 0.25
FETCH_MAX = 2000
#: more records to write than this share of all: rebuild, not patch
PATCH_SHARE = 0.3

Progress = Callable[[int, int], None]


# -- the sync state -------------------------------------------------------------------

def state_path(index: Index) -> Path:
    # not *.json: sources/*.json are index files
    return index.path.with_name(index.path.name + STATE_SUFFIX)


def load_state(index: Index) -> dict | None:
    """The sync state of ``index``, or None when there is none usable."""
    try:
        state = json.loads(state_path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
            or state.get("mode") not in ("digests", "stamps") \
            or not isinstance(state.get("entries"), dict):
        return None
    return state


def _save_state(index: Index, *, base: str, name: str, query: str | None,
                mode: str, etag: str | None, entries: dict) -> None:
    atomic_write(state_path(index), json.dumps(dict(
        version=STATE_VERSION, fingerprint=index.fingerprint(), base=base,
        name=name, query=query, mode=mode, etag=etag, entries=entries),
        ensure_ascii=False, separators=(",", ":")))


def forget(index: Index) -> None:
    try:
        state_path(index).unlink()
    except FileNotFoundError:
        pass


def stamp(record: dict) -> str:
    """What DataLad-Registry's pages tell of a record's metadata, computed
    the same from a record with metadata content or references."""
    names = sorted(m["extractor_name"] for m in record.get("metadata") or []
                   if isinstance(m, dict)
                   and isinstance(m.get("extractor_name"), str))
    text = json.dumps([record.get("last_update_dt"), names],
                      ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


# -- full syncs ------------------------------------------------------------------------

def before_full(service: remote.Service, query: str | None
                ) -> remote.Digests | None:
    """The digests of a service that has them, asked *before* its records
    are downloaded (a record changing meanwhile is then fetched again next
    time); None for a service without (its stamps come from the
    download)."""
    return service.digests(query)


def after_full(index: Index, base: str, name: str, query: str | None,
               digests: remote.Digests | None, spool: Path) -> None:
    """Write the sync state of a full sync that has just imported ``spool``
    (call with the index's lock held)."""
    if digests is not None:
        entries = {u: [i, d] for u, (i, d) in digests.entries.items()}
        mode, etag = "digests", digests.etag
    else:
        entries = {}
        with open(spool, "rb") as f:
            for line in f:
                try:
                    obj = loads_strict(line)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    continue
                if isinstance(obj, dict) and isinstance(obj.get("url"), str):
                    entries[obj["url"]] = [_id(obj), stamp(obj)]
        mode, etag = "stamps", None
    _save_state(index, base=base, name=name, query=query, mode=mode,
                etag=etag, entries=entries)


def _id(obj: dict):
    i = obj.get("id")
    return i if isinstance(i, int) and not isinstance(i, bool) else None


# -- incremental syncs ---------------------------------------------------------------

class _Full(Exception):
    """Sync in full instead (the reason is only for the debug log)."""


def sync_changes(service: remote.Service, index: Index, name: str,
                 query: str | None, *, importer, max_bytes: int,
                 progress: Progress | None = None) -> list[dict] | None:
    """Sync only what changed since the last sync of ``service``: result
    records, or None when a full sync is needed (no usable sync state,
    another query, many changes, a service without digests any more).
    ``importer(path)`` imports a JSON Lines file in full (with the lock
    held): the way out when much changed. Raises RemoteError (nothing
    written) as a full sync does."""
    if not cfg.obtain(config.INCREMENTAL_SYNC):
        return None
    state = load_state(index)
    if state is None or state.get("base") != service.base \
            or state.get("name") != name or state.get("query") != query:
        return None
    with index.locked():
        if state.get("fingerprint") != index.fingerprint():
            return None
        try:
            if state["mode"] == "digests":
                return _by_digests(service, index, name, query, state,
                                   importer, progress)
            return _by_stamps(service, index, name, query, state, importer,
                              max_bytes, progress)
        except _Full:
            return None


def _too_many(changed: int, total: int) -> bool:
    return changed > FETCH_MAX or changed > max(50, FETCH_SHARE * total)


def _base_result(service, name, query) -> dict:
    out = {"action": ACTION, "path": None, "type": "dataset",
           "source": name, "url": service.base}
    if query:
        out["query"] = query
    return out


def _transfer(service) -> dict:
    return {"requests": service.requests, "retries": service.retries,
            "received": service.received}


def _unchanged(service, index, name, query) -> list[dict]:
    try:  # how many records there are: the search database says
        with Engine.open(index.engine_path) as eng:
            n = len(eng)
    except EngineError:
        n = None
    return [dict(_base_result(service, name, query), status="notneeded",
                 how="incremental", compared="etag", fetched=0, imported=n,
                 added=0, updated=0, removed=0, unchanged=n, skipped=0,
                 **_transfer(service),
                 message=f"{name} ({service.base}) is unchanged since the "
                         f"last sync ({_count(service.requests, 'request')}, "
                         f"{_size(service.received)} received)")]


def _by_digests(service, index, name, query, state, importer, progress):
    early = []

    def start_copy():
        # the collection changed: the search database is copied (in a
        # thread) while the digests and the records are read -- the copy
        # is the largest single cost of a small patch
        try:
            early.append(Patcher(index.engine_path, index.fingerprint(),
                                 background=True))
        except EngineError:  # _apply tries again, and says so
            pass

    try:
        got = service.digests(query, etag=state.get("etag"),
                              on_answer=start_copy)
        return _digests_changed(service, index, name, query, state, importer,
                                progress, got, early[0] if early else None)
    finally:
        for patcher in early:
            patcher.abort()  # nothing once finished


def _digests_changed(service, index, name, query, state, importer, progress,
                     got, patcher):
    if got is None:
        raise _Full("the service has no digests any more")
    if got.unchanged:
        return _unchanged(service, index, name, query)
    old, current = state["entries"], got.entries
    changed = [u for u, (_, d) in current.items()
               if (old.get(u) or (None, None))[1] != d]
    gone = [u for u in old if u not in current]
    if _too_many(len(changed), len(current)) \
            or any(current[u][0] is None for u in changed):
        raise _Full(f"{len(changed)} records changed")
    # a service with digests is registry-serve: many records per request
    fetched = service.fetch([current[u][0] for u in changed],
                            _bar(progress, f"Fetching from {name}"),
                            batch=True)
    records, problems = {}, []
    for u in changed:
        obj = fetched[current[u][0]]
        if obj is None:   # deleted since the digests were read
            gone.append(u)
            current.pop(u)
            continue
        records[u] = _normalized(obj, u, name, problems)
    outcome = _apply(index, service, name, query, records, gone,
                     len(current), importer, "digests", patcher=patcher)
    # (id, digest) tuples are JSON arrays as they are: no copy of 13,000
    _save_state(index, base=service.base, name=name, query=query,
                mode="digests", etag=got.etag, entries=current)
    return _results(service, name, query, outcome, problems, len(changed),
                    "digests")


def _normalized(obj: dict, url: str, name: str, problems: list):
    if obj.get("url") != url:
        problems.append((url, f"the service answered the record of "
                              f"{obj.get('url')!r} for it"))
        return None
    try:
        return normalize_record(obj, name)
    except ValueError as e:
        problems.append((url, str(e)))
        return None


def _by_stamps(service, index, name, query, state, importer, max_bytes,
               progress):
    fd, spool = tempfile.mkstemp(prefix=index.path.name + ".",
                                 suffix=".download" + TMP_SUFFIX,
                                 dir=index.path.parent)
    try:
        with os.fdopen(fd, "w+b") as out:
            service.light_pages(out, query, max_bytes=max_bytes,
                                progress=_bar(progress, f"Listing {name}"))
            out.seek(0)
            current, light_at = {}, {}
            for n, line in enumerate(out, 1):
                try:
                    obj = loads_strict(line)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    obj = None
                if not (isinstance(obj, dict)
                        and isinstance(obj.get("url"), str)):
                    raise _Full(f"record {n} of the pages is not a record")
                current[obj["url"]] = [_id(obj), stamp(obj)]
                light_at[obj["url"]] = n
            old = state["entries"]
            changed = [u for u, (_, s) in current.items()
                       if (old.get(u) or (None, None))[1] != s]
            if _too_many(len(changed), len(current)) \
                    or any(current[u][0] is None for u in changed):
                raise _Full(f"{len(changed)} records changed")
            fetched = service.fetch([current[u][0] for u in changed],
                                    _bar(progress, f"Fetching from {name}"))
            out.seek(0)
            lights, fetching = {}, set(changed)
            for n, line in enumerate(out, 1):
                url = loads_strict(line)["url"]
                # a URL on several lines: its last line, as an import
                if url not in fetching and light_at.get(url) == n:
                    lights[url] = line
    finally:
        try:
            os.unlink(spool)
        except OSError:
            pass
    problems, records, gone = [], {}, [u for u in old if u not in current]
    for u in changed:
        obj = fetched[current[u][0]]
        if obj is None:
            gone.append(u)
            current.pop(u)
            continue
        records[u] = _normalized(obj, u, name, problems)
    # the others: the page's facts, the metadata content we have
    outcome = _apply(index, service, name, query, records, gone,
                     len(current), importer, "stamps", lights=lights,
                     problems=problems)
    _save_state(index, base=service.base, name=name, query=query,
                mode="stamps", etag=None, entries=current)
    return _results(service, name, query, outcome, problems, len(changed),
                    "stamps")


def _apply(index, service, name, query, records: dict, gone: list,
           total: int, importer, how: str, *, lights: dict | None = None,
           problems: list | None = None, patcher: Patcher | None = None
           ) -> dict:
    """Apply the changes: ``records`` ``{url: record or None (invalid:
    removed)}``, ``gone`` URLs; with ``lights`` (stamps), ``{url: the
    page's line}`` of the records whose metadata content is kept; with
    ``patcher``, one made already (under the same lock). Returns the
    counts."""
    if patcher is None:
        try:
            patcher = Patcher(index.engine_path, index.fingerprint())
        except EngineError as e:  # stale or damaged: a full sync rebuilds
            raise _Full(str(e)) from e
    with patcher:
        if lights is None:
            stored = patcher.stored(list(records) + gone)
        else:
            stored = patcher.stored()
            for url, line in lights.items():
                text = stored.get(url)
                if text is None:  # not imported last time (invalid then)
                    continue
                obj = loads_strict(line)
                obj["metadata"] = loads_strict(text).get("metadata") or []
                records[url] = _normalized(obj, url, name, problems)
        upserts, drops = [], [u for u in gone if u in stored]
        added = updated = 0
        for url, rec in records.items():
            if rec is None:
                if url in stored:
                    drops.append(url)
                continue
            text = dumps_storable(rec)
            if stored.get(url) == text:
                continue
            if url in stored:
                updated += 1
                drops.append(url)
            else:
                added += 1
            upserts.append((rec, text))
        counts = dict(added=added, updated=updated,
                      removed=len(drops) - updated)
        if not upserts and not drops:
            counts.update(unchanged=total, imported=total, written=False)
            return counts
        meta = dict(location=service.base, kind="datalad-registry",
                    query=query, how=how, source=name)
        if len(upserts) + len(drops) > PATCH_SHARE * max(total, 1):
            return dict(counts, **_rebuild(index, patcher, upserts, drops,
                                           importer))
        patcher.remove(drops)
        for rec, text in upserts:
            patcher.add(rec, text)
        n = index.write_records(patcher.texts(),
                                dict(meta, synced=now_iso()))
        patcher.finish(index.fingerprint())
    return dict(counts, imported=n, unchanged=n - added - updated,
                written=True)


def _rebuild(index, patcher, upserts, drops, importer) -> dict:
    """Many changes: the merged records into a spool file, imported in
    full (the search database built afresh)."""
    skip = set(drops)
    fd, spool = tempfile.mkstemp(prefix=index.path.name + ".",
                                 suffix=".merged" + TMP_SUFFIX,
                                 dir=index.path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8",
                       errors="surrogatepass") as out:
            for url, text in patcher.docs():
                if url not in skip:
                    out.write(text + "\n")
            for _, text in upserts:
                out.write(text + "\n")
        patcher.abort()
        summary = importer(Path(spool))
    finally:
        try:
            os.unlink(spool)
        except OSError:
            pass
    return dict(imported=summary.imported, unchanged=summary.unchanged,
                written=True)


def _results(service, name, query, outcome, problems, fetched, how):
    base = _base_result(service, name, query)
    out = [dict(base, status="error", url=service.base, record=url,
                message=f"{service.base} record {url}: {problem} (skipped)")
           for url, problem in problems]
    changed = outcome["added"] + outcome["updated"] + outcome["removed"]
    status = "ok" if changed else "notneeded"
    counts = {k: outcome[k] for k in ("imported", "added", "updated",
                                      "removed", "unchanged")}
    out.append(dict(
        base, status=status, how="incremental", compared=how,
        fetched=fetched, skipped=len(problems), **counts,
        **_transfer(service),
        message=(f"{name} ({service.base}, incremental: "
                 f"{_count(fetched, 'record')} fetched, "
                 f"{_count(service.requests, 'request')}, "
                 f"{_size(service.received)} received): "
                 f"{outcome['added']} new, {outcome['updated']} updated, "
                 f"{outcome['removed']} removed, "
                 f"{outcome['unchanged']} unchanged")))
    return out


def _bar(progress, stage):
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _size(n: int) -> str:
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n} bytes"
