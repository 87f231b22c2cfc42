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

One key of ours is added to an ``ANNEX`` (DataLad-Registry has no such
key; its clients ignore it): ``annexed_files_unknown_size_count``, the sum of
the records' ``annexed_files_in_wt_unknown_size_count``, present only when it
is above 0. Then ``annexed_files_size`` is a lower bound: those files are in
``annexed_file_count`` but their sizes in no sum.

Categories (as upstream; they overlap and do not partition the collection):

- DataLad datasets (``datalad_ds_stats.stats``): records with a ``ds_id``.
- unique DataLad datasets (``datalad_ds_stats.unique_ds_stats``): one copy
  per ``ds_id``, the one with the largest ``annexed_files_in_wt_size``, and
  among those the largest ``annexed_files_in_wt_count`` (when no copy has a
  size, the largest count; then, ours, the most files of unknown size). Unlike upstream, only the given records are
  considered (upstream's join pulls in copies outside the filtered set).
- pure annex repositories: ``git-annex`` among the branches and no ``ds_id``.
- non-annex repositories: branches known and no ``git-annex`` branch. A
  record whose ``branches`` is null (not processed yet) is neither annex nor
  non-annex: like upstream, it counts only in ``summary.ds_count`` (and in
  the DataLad stats if it has a ``ds_id``).
- summary: ``unique_ds_count`` is the number of distinct ``ds_id`` values,
  ``ds_count`` the number of records.

A second key of ours, at the top level: ``check_stats``, registry-update's
checks of the records (``records.CHECK_FAILURE_FIELDS``)::

    "check_stats": {"checked_count": n, "failing_count": n,
                    "unreachable_count": n}

- failing: ``n_failed_chks`` above 0 (the last check failed);
- unreachable: failing, and ``n_failed_chks`` at least ``max_failures``
  (the configuration ``datalad.registry.update-max-failures``, default 10,
  which the caller passes: registry-update skips these repositories);
- checked: a ``last_chk_dt`` or a ``last_failed_chk_dt`` (not null), i.e.
  checked at least once (registry-submit's first look counts; records from
  DataLad-Registry carry its ``last_chk_dt``).

``n_failed_chks`` is read as the sizes are (:func:`_int`: a number, or a
text of an integer; anything else counts as no failure). ``check_stats`` is
present only when some record is failing (then with all three counts, zeros
included): a collection without failed checks has upstream's exact shape,
as the unknown-size key is left out when there is nothing to report.

Pure Python; imports nothing of DataLad.
"""
from __future__ import annotations

from typing import Iterable

__all__ = ["collection_stats", "CHECK_STATS_KEY", "DEFAULT_MAX_FAILURES"]

ANNEX_BRANCH = "git-annex"
#: our key in an ANNEX dict (see the module doc)
UNKNOWN_SIZE_KEY = "annexed_files_unknown_size_count"
#: the record field it sums
UNKNOWN_SIZE_FIELD = "annexed_files_in_wt_unknown_size_count"
#: our top-level key of registry-update's checks (see the module doc)
CHECK_STATS_KEY = "check_stats"
#: datalad.registry.update-max-failures' default
DEFAULT_MAX_FAILURES = 10


class _Sum:
    """An SQL-like sum: None until a non-null value is added."""
    __slots__ = ("count", "size", "files", "unknown")

    def __init__(self):
        self.count = 0
        self.size = None
        self.files = None
        self.unknown = None

    def add(self, size, files, unknown=None):
        self.count += 1
        if size is not None:
            self.size = size if self.size is None else self.size + size
        if files is not None:
            self.files = files if self.files is None else self.files + files
        if unknown is not None:
            self.unknown = unknown if self.unknown is None \
                else self.unknown + unknown

    def as_dict(self) -> dict:
        out = {"ds_count": self.count}
        if self.size is not None:
            out["annexed_files_size"] = self.size
        if self.files is not None:
            out["annexed_file_count"] = self.files
        if self.unknown:  # only when some size is unknown: upstream's shape
            out[UNKNOWN_SIZE_KEY] = self.unknown
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
    """Whether candidate ``a`` = (size, files[, unknown]) beats ``b`` for
    unique stats: larger size first, then larger count, then (ours) more
    files of unknown size; NULL loses to any value."""
    for x, y in zip(a, b):
        if x != y:
            if y is None:
                return True
            if x is None:
                return False
            return x > y
    return False


def check_flags(rec: dict):
    """(checked, n_failed_chks as :func:`_int` reads it) of a record."""
    checked = rec.get("last_chk_dt") is not None \
        or rec.get("last_failed_chk_dt") is not None
    return checked, _int(rec.get("n_failed_chks"))


def add_check(counts: list, checked, failed, max_failures: int) -> None:
    """Count one record's (checked, n_failed_chks) of :func:`check_flags`
    into ``counts``: [checked, failing, unreachable]."""
    if checked:
        counts[0] += 1
    if failed is not None and failed > 0:
        counts[1] += 1
        if failed >= max_failures:
            counts[2] += 1


def check_stats(checked: int, failing: int, unreachable: int):
    """The ``check_stats`` value of these counts, None when nothing fails
    (the key is left out then)."""
    if not failing:
        return None
    return {"checked_count": checked, "failing_count": failing,
            "unreachable_count": unreachable}


def collection_stats(records: Iterable[dict],
                     max_failures: int = DEFAULT_MAX_FAILURES) -> dict:
    """Statistics over ``records`` (see the module doc); ``max_failures``:
    the configured ``datalad.registry.update-max-failures``."""
    datalad = _Sum()
    pure_annex = _Sum()
    non_annex = 0
    total = 0
    best = {}  # ds_id -> (size, files) of the chosen copy
    checks = [0, 0, 0]
    for rec in records:
        total += 1
        add_check(checks, *check_flags(rec), max_failures)
        size = _int(rec.get("annexed_files_in_wt_size"))
        files = _int(rec.get("annexed_files_in_wt_count"))
        unknown = _int(rec.get(UNKNOWN_SIZE_FIELD))
        ds_id = rec.get("ds_id")
        branches = rec.get("branches")
        if ds_id is not None:
            datalad.add(size, files, unknown)
            cand = (size, files, unknown)
            prev = best.get(ds_id)
            if prev is None or _better(cand, prev):
                best[ds_id] = cand
        if branches is not None:
            if _has_annex_branch(branches):
                if ds_id is None:
                    pure_annex.add(size, files, unknown)
            else:
                non_annex += 1
    unique = _Sum()
    for size, files, unknown in best.values():
        unique.add(size, files, unknown)
    out = {
        "datalad_ds_stats": {
            "unique_ds_stats": unique.as_dict(),
            "stats": datalad.as_dict(),
        },
        "pure_annex_ds_stats": pure_annex.as_dict(),
        "non_annex_ds_stats": {"ds_count": non_annex},
        "summary": {"unique_ds_count": unique.count, "ds_count": total},
    }
    checked = check_stats(*checks)
    if checked is not None:
        out[CHECK_STATS_KEY] = checked
    return out
