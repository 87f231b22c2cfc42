"""Collection statistics, in DataLad-Registry's ``collection_stats`` shape.

:func:`collection_stats` summarises a collection of records (e.g. a search
result) the way DataLad-Registry's API does (its
``blueprints/api/dataset_urls/tools.py::get_collection_stats``)::

    {"datalad_ds_stats": {"unique_ds_stats": ANNEX, "stats": ANNEX},
     "pure_annex_ds_stats": ANNEX,
     "non_annex_ds_stats": {"ds_count": n},
     "summary": {"unique_ds_count": n, "ds_count": n}}

where ``ANNEX`` is ``{"ds_count", "annexed_files_size", "annexed_file_count"}``
with the size/count keys left out when no record of that category has a
value (SQL ``sum`` over nothing but NULLs is NULL, which the API omits).

Categories (as upstream; they overlap and do not partition the collection):

- DataLad datasets (``datalad_ds_stats.stats``): records with a ``ds_id``.
- unique DataLad datasets (``datalad_ds_stats.unique_ds_stats``): one copy
  per ``ds_id``, the one with the largest ``annexed_files_in_wt_size``, and
  among those the largest ``annexed_files_in_wt_count`` (when no copy has a
  size, the largest count). Unlike upstream, only the given records are
  considered (upstream's join pulls in copies outside the filtered set).
- pure annex repositories: ``git-annex`` among the branches and no ``ds_id``.
- non-annex repositories: branches known and no ``git-annex`` branch. A
  record whose ``branches`` is null (not processed yet) is neither annex nor
  non-annex: like upstream, it counts only in ``summary.ds_count`` (and in
  the DataLad stats if it has a ``ds_id``).
- summary: ``unique_ds_count`` is the number of distinct ``ds_id`` values,
  ``ds_count`` the number of records.

Pure Python; imports nothing of DataLad.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["collection_stats"]

ANNEX_BRANCH = "git-annex"


class _Sum:
    """An SQL-like sum: None until a non-null value is added."""
    __slots__ = ("count", "size", "files")

    def __init__(self):
        self.count = 0
        self.size = None
        self.files = None

    def add(self, size, files):
        self.count += 1
        if size is not None:
            self.size = size if self.size is None else self.size + size
        if files is not None:
            self.files = files if self.files is None else self.files + files

    def as_dict(self) -> dict:
        out = {"ds_count": self.count}
        if self.size is not None:
            out["annexed_files_size"] = self.size
        if self.files is not None:
            out["annexed_file_count"] = self.files
        return out


def _int(value):
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _has_annex_branch(branches) -> bool:
    # branches is {name: {...}} (upstream's current shape); older records
    # may carry a list of names; jsonb's ``?`` tests both the same way
    if isinstance(branches, (dict, list, tuple, set)):
        return ANNEX_BRANCH in branches
    return False


def _better(a, b) -> bool:
    """Whether candidate ``a`` = (size, files) beats ``b`` for unique stats:
    larger size first (NULL sizes lose to any size), then larger count."""
    (sa, fa), (sb, fb) = a, b
    if sa != sb:
        if sb is None:
            return True
        if sa is None:
            return False
        return sa > sb
    if fa == fb or fa is None:
        return False
    return fb is None or fa > fb


def collection_stats(records: Iterable[dict]) -> dict:
    """Statistics over ``records`` (see the module doc)."""
    datalad = _Sum()
    pure_annex = _Sum()
    non_annex = 0
    total = 0
    best = {}  # ds_id -> (size, files) of the chosen copy
    for rec in records:
        total += 1
        size = _int(rec.get("annexed_files_in_wt_size"))
        files = _int(rec.get("annexed_files_in_wt_count"))
        ds_id = rec.get("ds_id")
        branches = rec.get("branches")
        if ds_id is not None:
            datalad.add(size, files)
            cand = (size, files)
            prev = best.get(ds_id)
            if prev is None or _better(cand, prev):
                best[ds_id] = cand
        if branches is not None:
            if _has_annex_branch(branches):
                if ds_id is None:
                    pure_annex.add(size, files)
            else:
                non_annex += 1
    unique = _Sum()
    for size, files in best.values():
        unique.add(size, files)
    return {
        "datalad_ds_stats": {
            "unique_ds_stats": unique.as_dict(),
            "stats": datalad.as_dict(),
        },
        "pure_annex_ds_stats": pure_annex.as_dict(),
        "non_annex_ds_stats": {"ds_count": non_annex},
        "summary": {"unique_ds_count": unique.count, "ds_count": total},
    }
