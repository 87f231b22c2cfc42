"""Searching a registry: every source's records, one query, one ordered page.

``registry-search`` (and later the server) calls :func:`search` or
:func:`export`. A query is parsed once (:mod:`query`), then answered by the
search database of each index (:mod:`engine`: SQLite, derived from the TinyDB
file, rebuilt when missing, stale or damaged): counts add up, each database
gives its first ``offset + limit`` records in order and the pages are merged
with :func:`order_records`, statistics are merged from per-database parts.

Engines stay open for the life of the process (a Python API user, a server):
a search only re-checks the index file's fingerprint and, for the registry's
own records, whether the registry moved (:mod:`index_sync`).
"""
from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from datalad import cfg

from datalad_registry_ext import config
from datalad_registry_ext import engine as engine_mod
from datalad_registry_ext.engine import Engine, EngineError
from datalad_registry_ext.index import Index, IndexCorrupt, all_indexes, local_index
from datalad_registry_ext.index_sync import rebuild_index, reconcile_index
from datalad_registry_ext.query import QueryError, parse
from datalad_registry_ext.query.fields import to_timestamp
from datalad_registry_ext.records import (
    DATE_FIELDS,
    LOCAL_SOURCE,
    ORDER_KEYS,
    RESULT_FIELDS,
)
from datalad_registry_ext.registry import RegistryError, is_registry
from datalad_registry_ext.sources import export_jsonl, index_of
from datalad_registry_ext.stats import DEFAULT_MAX_FAILURES

lgr = logging.getLogger("datalad.registry_ext.search")

METADATA_REFERENCE_KEYS = ("extractor_name", "extractor_version",
                           "dataset_version")
# full records are fetched from an engine this many at a time (export)
_BATCH = 500


@dataclass
class SearchResult:
    total: int                 # how many records match
    hits: list[dict]           # the page: result-shaped records (see below)
    stats: dict | None = None  # collection statistics, when asked
    query: str | None = None
    offset: int = 0
    sources: list[str] = field(default_factory=list)


# -- engines, one per index, kept open ------------------------------------------

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _recovery_hint(registry: Path, index: Index) -> str:
    if index.path == local_index(registry).path:
        return f"rebuild it with: datalad registry-sync -d {registry}"
    return ("delete it and import the source again with: "
            f"datalad registry-sync -d {registry} SOURCE")


def open_engine(registry: Path, index: Index) -> Engine | None:
    """The open search database of ``index`` (None when it has no file),
    rebuilt from the TinyDB file when missing, stale or damaged."""
    fingerprint = index.fingerprint()
    if fingerprint is None:
        return None
    key = str(index.path)
    with _engines_lock:
        cached = _engines.get(key)
        if cached is not None and cached.fingerprint == fingerprint:
            return cached
        try:
            opened = Engine.open(index.engine_path, fingerprint)
        except EngineError:
            opened = _rebuild_engine(registry, index)
        if cached is not None:
            cached.close()
        _engines[key] = opened
        return opened


def _rebuild_engine(registry: Path, index: Index, heal: bool = True) -> Engine:
    # under the index's lock: the records we read are the ones the
    # fingerprint names, and two processes do not build at once
    with index.locked():
        fingerprint = index.fingerprint()
        try:
            return Engine.open(index.engine_path, fingerprint)
        except EngineError:
            pass  # nobody rebuilt it meanwhile
        try:
            records = index.records()
        except IndexCorrupt as e:
            own = index.path == local_index(registry).path
            if not (heal and own and is_registry(registry)):
                raise IndexCorrupt(
                    f"{e}; {_recovery_hint(registry, index)}") from e
            damage = e
        else:
            engine_mod.build(index.engine_path, records, fingerprint)
            return Engine.open(index.engine_path, fingerprint)
    # the registry's own records are derived data: heal them (which takes
    # the lock itself: fcntl locks do not nest within a process)
    lgr.warning("%s; rebuilding it from the registry", damage)
    rebuild_index(registry, index)
    return _rebuild_engine(registry, index, heal=False)


def engines(registry: Path, source: str | None = None) -> list[Engine]:
    """Open engines of every index of ``registry``, its own records first
    (brought up to date with the registry superdataset); with ``source``,
    only that source's (a name, :func:`sources.index_of`)."""
    registry = Path(registry)
    if is_registry(registry):
        reconcile_index(registry)
    found = []
    for index in (all_indexes(registry) if source is None
                  else [index_of(registry, source)]):
        eng = open_engine(registry, index)
        if eng is not None:
            found.append(eng)
    return found


# -- ordering -----------------------------------------------------------------------

def order_records(records: list[dict], key: str = "last_update_dt",
                  direction: str = "desc") -> list[dict]:
    """Order by ``key``; nulls last in either direction; ties by URL, source."""
    if key not in ORDER_KEYS:
        raise ValueError(f"cannot order by {key!r}; use one of: "
                         f"{', '.join(ORDER_KEYS)}")
    if key in DATE_FIELDS:
        def value(r):
            v = r.get(key)
            return to_timestamp(v) if v else None
    else:
        def value(r):
            return r.get(key)
    # tie-break first (stable sorts keep it), then the key itself
    ordered = sorted(records, key=lambda r: (r.get("url") or "",
                                             r.get("source") or ""))
    present = [r for r in ordered if value(r) is not None]
    missing = [r for r in ordered if value(r) is None]
    # reverse=True keeps equal elements in their order: the tie-break holds
    present.sort(key=value, reverse=(direction == "desc"))
    return present + missing


# -- searching ------------------------------------------------------------------------

def _hit(registry: Path, rec: dict, metadata: str | None) -> dict:
    """A record as a search reports it: the result fields, the extractor
    names, metadata when asked, and the path of a local record's entry."""
    hit = {k: rec.get(k) for k in RESULT_FIELDS}
    hit["extractors"] = rec.get("extractors") or sorted(
        {m.get("extractor_name") for m in rec.get("metadata") or []
         if isinstance(m, dict)} - {None})
    if metadata == "content":
        hit["metadata"] = rec.get("metadata") or []
    elif metadata == "reference":
        hit["metadata"] = [{k: m.get(k) for k in METADATA_REFERENCE_KEYS}
                           for m in rec.get("metadata") or []]
    local = rec.get("source") == LOCAL_SOURCE and rec.get("registry_path")
    hit["path"] = str(registry / rec["registry_path"] if local else registry)
    return hit


def _ordered_page(found: list[Engine], tree, order_by, order_dir, need):
    """``[(light record, engine)]``: the first ``need`` of all engines."""
    tagged = []
    for eng in found:
        tagged += [(r, eng) for r in eng.page(tree, order_by, order_dir, need)]
    if len(found) > 1:
        owner = {id(r): eng for r, eng in tagged}
        ordered = order_records([r for r, _ in tagged], order_by, order_dir)
        tagged = [(r, owner[id(r)]) for r in ordered]
    return tagged if need is None else tagged[:need]


def _full(tagged) -> list[dict]:
    """Full records (with metadata) of tagged light records, same order."""
    by_engine: dict[int, tuple[Engine, list[str]]] = {}
    for r, eng in tagged:
        by_engine.setdefault(id(eng), (eng, []))[1].append(r["url"])
    full = {}
    for eng, urls in by_engine.values():
        for url, rec in eng.records(urls).items():
            full[(id(eng), url)] = rec
    return [full.get((id(eng), r["url"]), r) for r, eng in tagged]


# -- answers kept per process ------------------------------------------------------
#
# A server answers the same queries again and again (its pages 1, 2, 3, the
# examples on its overview). A search database never changes in place: a
# change is a new file with a new fingerprint, so an answer keyed by the
# files and fingerprints of the engines it came from stays right for as long
# as those engines are the current ones.

#: how many answers (counts, statistics, pages) are kept; 0 keeps none;
#: None: ``datalad.registry.result-cache`` (read once)
RESULT_CACHE_SIZE: int | None = None
#: pages longer than this are not kept (light records are ~1 KB each)
CACHE_MAX_PAGE = 200

_results: OrderedDict = OrderedDict()
_results_lock = threading.Lock()


def _state(found: list[Engine]) -> tuple:
    return tuple((eng.path, eng.fingerprint) for eng in found)


def _cache_size() -> int:
    global RESULT_CACHE_SIZE
    if RESULT_CACHE_SIZE is None:
        try:
            RESULT_CACHE_SIZE = max(0, int(cfg.obtain(config.RESULT_CACHE)))
        except (TypeError, ValueError):
            RESULT_CACHE_SIZE = 256
    return RESULT_CACHE_SIZE


def _cached(key, compute):
    size = _cache_size()
    if size <= 0:
        return compute()
    with _results_lock:
        if key in _results:
            _results.move_to_end(key)
            return _results[key]
    value = compute()
    with _results_lock:
        _results[key] = value
        while len(_results) > size:
            _results.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every kept answer."""
    with _results_lock:
        _results.clear()


def _count(found, tree) -> int:
    return _cached((_state(found), "count", tree),
                   lambda: sum(eng.count(tree) for eng in found))


def max_failures() -> int:
    """The configured ``datalad.registry.update-max-failures`` (as
    registry-update reads it; its default when not a number): the failed
    checks that make a record unreachable in the statistics' check_stats."""
    try:
        return int(cfg.obtain(config.UPDATE_MAX_FAILURES,
                              default=DEFAULT_MAX_FAILURES))
    except (TypeError, ValueError):
        return DEFAULT_MAX_FAILURES


def _stats(found, tree) -> dict:
    # one engine sums its unique statistics itself; several give a row per
    # dataset id, merged across them
    # (an empty index, e.g. a registry's own before its first submit, adds
    # nothing)
    held = [eng for eng in found if len(eng)]
    most = max_failures()
    merged = _cached((_state(found), "stats", tree, most), lambda: engine_mod
                     .merge_stats([eng.stats(tree, len(held) > 1, most)
                                   for eng in held]))
    return copy.deepcopy(merged)  # callers may change theirs


def _page(found, tree, order_by, order_dir, need):
    if need is None or need > CACHE_MAX_PAGE:
        return _ordered_page(found, tree, order_by, order_dir, need)
    position = {id(eng): i for i, eng in enumerate(found)}

    def compute():
        # engines by position: the cached answer must not hold engines
        # that may be closed and reopened meanwhile
        return [(r, position[id(eng)]) for r, eng in
                _ordered_page(found, tree, order_by, order_dir, need)]
    kept = _cached((_state(found), "page", tree, order_by, order_dir, need),
                   compute)
    return [(dict(r), found[i]) for r, i in kept]


def search(registry: Path, query: str | None = None, *,
           order_by: str = "last_update_dt", order_dir: str = "desc",
           offset: int = 0, limit: int | None = None,
           metadata: str | None = None, stats: bool = False,
           tree=None, source: str | None = None) -> SearchResult:
    """Run ``query`` (the query language) over every index of ``registry``.

    ``metadata``: None, ``"reference"`` or ``"content"``. ``tree``: an
    already parsed query (query/) to run instead of parsing ``query``, which
    then only names it in messages (the server adds its filters to the
    user's query this way). Raises QueryError for a bad query (before
    anything is opened), ValueError for a bad order key, and the index's
    errors (damage it cannot heal names the file and the command that
    repairs it). ``source``: search only the records of that source (a
    name: ``local``, a remembered source, an unnamed file's path).
    """
    tree = parse(query or "") if tree is None else tree
    if order_by not in ORDER_KEYS:
        raise ValueError(f"cannot order by {order_by!r}; use one of: "
                         f"{', '.join(ORDER_KEYS)}")
    registry = Path(registry)
    require_registry(registry)
    found = engines(registry, source)
    try:
        total = _count(found, tree)
        need = None if limit is None else offset + limit
        tagged = _page(found, tree, order_by, order_dir, need)[offset:]
        records = _full(tagged) if metadata else [r for r, _ in tagged]
        merged = _stats(found, tree) if stats else None
    except QueryError as e:
        if e.query:
            raise
        # an engine reports a time-out with the tree only: show the text
        raise QueryError(e.reason, query or "", e.position, e.expected) \
            from None
    return SearchResult(
        total=total, query=query, offset=offset,
        hits=[_hit(registry, r, metadata) for r in records], stats=merged)


def export(registry: Path, query: str | None, target: Path, *,
           order_by: str = "last_update_dt", order_dir: str = "desc",
           source: str | None = None) -> int:
    """Write every record matching ``query`` (of one ``source``, if given),
    with metadata content, to ``target`` as JSON Lines (gzip for ``.gz``).
    Returns the count."""
    tree = parse(query or "")
    require_registry(Path(registry))
    found = engines(Path(registry), source)
    tagged = _ordered_page(found, tree, order_by, order_dir, None)

    def full_records() -> Iterator[dict]:
        for i in range(0, len(tagged), _BATCH):
            yield from _full(tagged[i:i + _BATCH])

    return export_jsonl(full_records(), target)


def _lookup(registry: Path, ids, method: str) -> dict:
    # every engine, own records first; an id found in one is not asked of
    # the next (ids include the source, so they rarely meet twice)
    wanted = list(dict.fromkeys(ids))
    found = {}
    for eng in engines(Path(registry)):
        if len(found) == len(wanted):
            break
        found.update(getattr(eng, method)(
            [i for i in wanted if i not in found]))
    return found


def lookup(registry: Path, ids) -> dict[int, dict]:
    """``{id: full record}`` of the records of ``registry`` with these API
    ids (records.record_id); unknown ids are left out."""
    return _lookup(registry, ids, "by_ids")


def metadata_lookup(registry: Path, ids) -> dict[int, tuple[dict, dict]]:
    """``{id: (light record, metadata record)}`` of the metadata records of
    ``registry`` with these API ids (records.metadata_id); unknown ids are
    left out."""
    return _lookup(registry, ids, "metadata_by_ids")


def require_registry(location: Path) -> None:
    """Raise unless there is a registry, or at least an index, at
    ``location`` (a typo in -d must not read as "nothing found")."""
    if is_registry(location) or any(i.exists() for i in all_indexes(location)):
        return
    err = RegistryError(
        f"there is no registry at {location} (registry-submit creates one, "
        "registry-sync imports records into one)")
    err.status = "impossible"
    raise err


# -- a search on a remote service ---------------------------------------------------

def search_at(registry: Path, at: str, query: str | None = None, *,
              order_by: str = "last_update_dt", order_dir: str = "desc",
              offset: int = 0, limit: int | None = None,
              metadata: str | None = None, stats: bool = False
              ) -> SearchResult:
    """Run ``query`` on the DataLad-Registry service ``at`` (a URL, or the
    name of a remembered source) with its own search, order and pages; the
    hits have the shape of local ones, their ``source`` the service's
    name. Nothing local is read or written but the registry's source names.
    Raises remote.RemoteError (a refused query: remote.Refused, with the
    server's message)."""
    from datalad_registry_ext import remote
    from datalad_registry_ext.records import normalize_record
    from datalad_registry_ext.sources import service_of

    registry = Path(registry)
    name, base = service_of(registry, at)
    with remote.Service(base, token=remote.token_for(name),
                        name=name) as service:
        total, records, collection = service.search(
            query, order_by=order_by, order_dir=order_dir, offset=offset,
            limit=limit, metadata=metadata)
    hits = []
    for rec in records:
        try:
            rec = normalize_record(rec, name)
        except ValueError as e:
            lgr.warning("%s sent a record that is not valid (%s); "
                        "left out", base, e)
            continue
        hits.append(_hit(registry, rec, metadata))
    return SearchResult(total=total, hits=hits, query=query, offset=offset,
                        stats=collection if stats else None, sources=[name])
