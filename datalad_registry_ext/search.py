"""Searching the index: load every source's records, query, order, page.

``registry-search`` is a thin layer over :func:`search`. The query language
itself is in :mod:`datalad_registry_ext.query`, the statistics in
:mod:`datalad_registry_ext.stats`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datalad_registry_ext.index import IndexCorrupt, all_indexes, local_index

# DataLad-Registry's order keys
ORDER_KEYS = ("url", "annex_key_count", "annexed_files_in_wt_count",
              "annexed_files_in_wt_size", "last_update_dt", "git_objects_kb")
DATE_KEYS = ("last_update_dt",)


@dataclass
class SearchResult:
    total: int            # how many records match
    page: list[dict]      # the ordered (light) records within offset/limit
    matching: list[dict]  # every matching (light) record, for statistics


def searchable_indexes(registry: Path):
    """``[(index, SearchView, light records)]`` for every index of ``registry``.

    The registry's own records are first brought up to date with the
    registry superdataset (and rebuilt from it if their file is damaged). A
    damaged file of a synced source raises IndexCorrupt saying how to
    recover.
    """
    from datalad_registry_ext.registry import is_registry
    if is_registry(registry):
        from datalad_registry_ext.registration import reconcile_index
        reconcile_index(registry)
    out = []
    for index in all_indexes(registry):
        try:
            view, light = index.searchable()
        except IndexCorrupt as e:
            raise IndexCorrupt(f"{e}; {_recovery_hint(registry, index)}") from e
        out.append((index, view, light))
    return out


def _recovery_hint(registry: Path, index) -> str:
    if index.path == local_index(registry).path:
        return f"rebuild it with: datalad registry-sync -d {registry}"
    return ("delete it and import the source again with: "
            f"datalad registry-sync -d {registry} SOURCE")


def full_records(registry: Path, light: list[dict]) -> list[dict]:
    """The complete records (with metadata) of light records, same order."""
    wanted = {(r.get("source"), r["url"]) for r in light}
    found = {}
    for index in all_indexes(registry):
        try:
            for rec in index.records():
                key = (rec.get("source"), rec["url"])
                if key in wanted:
                    found[key] = rec
        except IndexCorrupt as e:
            raise IndexCorrupt(f"{e}; {_recovery_hint(registry, index)}") from e
    return [found.get((r.get("source"), r["url"]), r) for r in light]


def order_records(records: list[dict], key: str = "last_update_dt",
                  direction: str = "desc") -> list[dict]:
    """Order by ``key``; nulls last in either direction; ties by URL, source."""
    if key not in ORDER_KEYS:
        raise ValueError(f"cannot order by {key!r}; use one of: "
                         f"{', '.join(ORDER_KEYS)}")
    if key in DATE_KEYS:
        from datalad_registry_ext.query.fields import to_timestamp

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


def search(registry: Path, query: str | None, *, order_by: str = "last_update_dt",
           order_dir: str = "desc", offset: int = 0,
           limit: int | None = None) -> SearchResult:
    """Run ``query`` (the query language) over the registry's index.

    Returns light records (see :func:`index.light_record`); use
    :func:`full_records` for their metadata.
    """
    from datalad_registry_ext.query import parse
    parse(query or "")  # a bad query fails before anything is loaded
    matching = []
    for _, view, light in searchable_indexes(registry):
        matching += [light[i] for i in view.search(query or "")]
    ordered = order_records(matching, order_by, order_dir)
    end = None if limit is None else offset + limit
    return SearchResult(total=len(matching), page=ordered[offset:end],
                        matching=matching)
