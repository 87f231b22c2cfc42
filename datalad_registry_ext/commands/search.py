"""registry-search: query the registry's index."""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.results import get_status_dict
from datalad.interface.utils import generic_result_renderer
from datalad.support.constraints import EnsureChoice, EnsureNone
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext import search
from datalad_registry_ext.commands._common import (
    EnsureCount,
    dataset_param,
    error_result,
    human_size,
    plural,
    quiet_on_closed_pipe,
    registry_location,
    results,
)
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import ORDER_KEYS, TABLE_COLUMNS
from datalad_registry_ext.stats import (
    CHECK_STATS_KEY,
    UNKNOWN_SIZE_KEY,
    check_flags,
)

lgr = logging.getLogger("datalad.registry_ext.search")

ACTION = "registry_search"
STATS_ACTION = "registry_search_stats"
EXPORT_ACTION = "registry_export"



@build_doc
class RegistrySearch(Interface):
    """Search the registry with DataLad-Registry's query language

    The query searches the index: the registry's own records and those
    synced from other sources. A bare word matches, case-insensitively,
    anywhere in a record's URL, dataset id, HEAD, describe, tags, branches
    or metadata; ``field:value`` restricts to one field, and ``AND``, ``OR``,
    ``NOT`` and parentheses combine terms. Every query that works on
    registry.datalad.org finds the same datasets here; see the query
    language reference for exact matching (``:=``), regular expressions
    (``:~``), comparisons (``annexed_files_in_wt_size:>10GB``), paths into
    metadata (``metadata[bids_dataset].Authors:haxby``) and subdataset
    search (``subds_id:<uuid>``). An empty query lists everything.

    One result per matching record, with DataLad-Registry's API v2 record
    fields; ``-f json`` prints them whole.

    ``--source NAME`` searches one source's records only (``local``: the
    registry's own). ``--at URL|NAME`` runs the query on a DataLad-Registry
    service instead (registry.datalad.org, another ``registry-serve``):
    its own search, order and pages, results shaped like local ones, nothing
    synced or cached; a query it refuses gives an error with its message.
    """

    _params_ = dict(
        dataset=dataset_param,
        query=Parameter(
            args=("query",),
            metavar="QUERY",
            nargs="?",
            doc="""the query. Quote it for the shell:
            ``'metadata[bids_dataset]:"" AND NOT url:openneuro'``."""),
        metadata=Parameter(
            args=("--metadata",),
            doc="""include the records' metadata: ``reference`` lists the
            extractors (name, version, dataset version), ``content`` gives
            the full metadata records.""",
            constraints=EnsureChoice("reference", "content") | EnsureNone()),
        order_by=Parameter(
            args=("--order-by",),
            metavar="KEY",
            doc="""order by this field; records without a value come last,
            ties are ordered by URL.""",
            constraints=EnsureChoice(*ORDER_KEYS)),
        order_dir=Parameter(
            args=("--order-dir",),
            doc="""ascending or descending order.""",
            constraints=EnsureChoice("asc", "desc")),
        limit=Parameter(
            args=("--limit",),
            metavar="N",
            doc="""report at most N records.""",
            constraints=EnsureCount(0, allow_none=True)),
        offset=Parameter(
            args=("--offset",),
            metavar="N",
            doc="""skip the first N records (for paging).""",
            constraints=EnsureCount(0)),
        stats=Parameter(
            args=("--stats",),
            action="store_true",
            doc="""also report the collection statistics of the matching
            records (DataLad-Registry's structure: DataLad datasets, unique
            by dataset id, pure annex and plain git repositories; and, when
            some record's last registry-update check failed, the checked,
            failing and unreachable records)."""),
        export=Parameter(
            args=("--export",),
            metavar="FILE",
            doc="""write the matching records, with metadata content, to
            FILE as JSON Lines (gzip-compressed if FILE ends in ``.gz``)
            instead of reporting them; ``registry-sync FILE`` imports it
            again."""),
        source=Parameter(
            args=("--source",),
            metavar="NAME",
            doc="""search only the records of this source: ``local`` (the
            registry's own), the name of a synced source (see
            ``registry-sync``), or an unnamed JSON Lines source's path."""),
        at=Parameter(
            args=("--at",),
            metavar="URL_OR_NAME",
            doc="""run the query on this DataLad-Registry service instead
            (its URL, or the name of a remembered source): its own search,
            order and pages, nothing synced or cached. A token comes from
            ``DATALAD_REGISTRY_TOKEN_<NAME>`` or
            ``DATALAD_REGISTRY_TOKEN``."""),
    )

    _examples_ = [
        dict(text="Find datasets that mention haxby anywhere",
             code_py="registry_search('haxby')",
             code_cmd="datalad registry-search haxby"),
        dict(text="BIDS datasets not on OpenNeuro, largest first",
             code_py="registry_search('metadata[bids_dataset]:\"\" AND NOT "
                     "url:openneuro', order_by='annexed_files_in_wt_size')",
             code_cmd="datalad registry-search 'metadata[bids_dataset]:\"\" "
                      "AND NOT url:openneuro' --order-by annexed_files_in_wt_size"),
        dict(text="Which datasets use a given dataset as a subdataset?",
             code_py="registry_search('subds_id:2a0b7b7b-8d0e-4a4e-9a8e-1d2f3c4b5a69')",
             code_cmd="datalad registry-search "
                      "subds_id:2a0b7b7b-8d0e-4a4e-9a8e-1d2f3c4b5a69"),
        dict(text="Statistics of everything on GIN, as JSON",
             code_py="registry_search('url:gin.g-node.org', stats=True, limit=0)",
             code_cmd="datalad -f json registry-search url:gin.g-node.org "
                      "--stats --limit 0"),
        dict(text="Search registry.datalad.org itself, ten results",
             code_py="registry_search('haxby', at='https://registry.datalad.org', "
                     "limit=10)",
             code_cmd="datalad registry-search --at "
                      "https://registry.datalad.org haxby --limit 10"),
        dict(text="Search only the records synced from the source 'lab'",
             code_py="registry_search('bids', source='lab')",
             code_cmd="datalad registry-search --source lab bids"),
        dict(text="Export all records with metadata to a file",
             code_py="registry_search(export='all.jsonl.gz')",
             code_cmd="datalad registry-search --export all.jsonl.gz"),
    ]

    @staticmethod
    @datasetmethod(name="registry_search")
    @eval_results
    def __call__(query=None, *, dataset=None, metadata=None,
                 order_by="last_update_dt", order_dir="desc", limit=None,
                 offset=0, stats=False, export=None, source=None, at=None):
        quiet_on_closed_pipe()
        location = registry_location(dataset)
        common = dict(action=ACTION, logger=lgr, refds=str(location))
        if at and (export or source):
            yield get_status_dict(
                status="impossible", path=str(location), type="dataset",
                message="--at searches a remote service; it cannot be "
                        f"combined with {'--export' if export else '--source'}"
                        " (registry-sync --query mirrors what a query finds)",
                **common)
            return
        if export:
            target = Path(os.fspath(export)).expanduser().absolute()
            yield from results(
                _exported(location, query, target, order_by, order_dir,
                          source),
                common=dict(common, action=EXPORT_ACTION), path=target)
            return
        try:
            found = search.search_at(
                location, at, query, order_by=order_by, order_dir=order_dir,
                offset=offset or 0, limit=limit, metadata=metadata,
                stats=stats) if at else search.search(
                location, query, order_by=order_by, order_dir=order_dir,
                offset=offset or 0, limit=limit, metadata=metadata,
                stats=stats, source=source)
        except (RegistryExtError, ValueError, OSError) as e:
            yield error_result(e, path=location, common=common, query=query)
            return
        for rank, hit in enumerate(found.hits, found.offset + 1):
            yield get_status_dict(status="ok", type="dataset", rank=rank,
                                  total=found.total, **hit, **common)
        if stats or (found.total and not found.hits):
            # the count (and statistics) also when matches exist but none is
            # shown (--limit 0, an --offset past the end)
            yield get_status_dict(
                status="ok", path=str(location), type="collection",
                query=query, total=found.total,
                collection_stats=found.stats,
                **dict(common, action=STATS_ACTION))

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        # hits and statistics are printed by the summary renderer
        if res.get("action") in (ACTION, STATS_ACTION) and res["status"] == "ok":
            return
        if res.get("action") in (ACTION, EXPORT_ACTION, STATS_ACTION):
            ui.message(f"{res['status']}: {res.get('message')}")
            return
        generic_result_renderer(res)

    @staticmethod
    def custom_result_summary_renderer(results):
        hits = [r for r in results
                if r.get("action") == ACTION and r["status"] == "ok"]
        counts = [r for r in results if r.get("action") == STATS_ACTION]
        if not hits and not counts:
            if not any(r.get("action") == EXPORT_ACTION or r["status"] in (
                    "error", "impossible") for r in results):
                ui.message("0 matching records")
            return
        for line in format_table(hits, _table_width()):
            ui.message(line)
        total = hits[0]["total"] if hits else counts[0]["total"]
        shown = ""
        if hits:
            first, last = hits[0]["rank"], hits[-1]["rank"]
            if (first, last) != (1, total):
                shown = f" (showing {first}-{last})"
        elif total:
            shown = " (none shown)"
        ui.message(f"{plural(total, 'matching record')}{shown}")
        for s in counts:
            if s.get("collection_stats"):
                for line in format_stats(s["collection_stats"]):
                    ui.message(line)


def _exported(location, query, target, order_by, order_dir, source=None):
    n = search.export(location, query, target, order_by=order_by,
                      order_dir=order_dir, source=source)
    yield dict(status="ok", path=str(target), type="file", records=n,
               query=query, message=f"exported {plural(n, 'record')} to "
                                    f"{target}")


# -- human output -----------------------------------------------------------------------

# the fixed widths of the narrow columns; URL takes what is left
_WIDTHS = {"ds_id": 8, "head_describe": 14, "annexed_files_in_wt_size": 9,
           "last_update_dt": 10, "n_failed_chks": 6, "metadata": 24,
           "source": 12}
_MIN_URL = 40


def _table_width() -> int | None:
    """The terminal's width, or None when stdout is not a terminal (then
    nothing is cut: a URL must stay copyable)."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((100, 24)).columns


def _cell(field: str, hit: dict) -> str:
    if field == "ds_id":
        return (hit.get("ds_id") or "")[:8]
    if field == "annexed_files_in_wt_size":
        return human_size(hit.get(field))
    if field == "last_update_dt":
        return (hit.get(field) or "")[:10]
    if field == "metadata":
        return ",".join(hit.get("extractors") or [])
    if field == "n_failed_chks":
        return str(hit[field]) if _failing(hit) else ""
    return str(hit.get(field) or "")


def _failing(hit: dict) -> bool:
    """Whether registry-update's last check of ``hit`` failed (as the
    statistics' check_stats count it)."""
    n = check_flags(hit)[1]
    return n is not None and n > 0


def format_table(hits: list[dict], width: int | None = None) -> list[str]:
    """The results as a table; with a ``width``, cut to fit it (URLs last).
    SOURCE only when the hits come from several sources, FAILED (failed
    checks, registry-update) only when some hit's last check failed."""
    columns = [(f, h) for f, h in TABLE_COLUMNS
               if (f != "source" or len({h.get("source") for h in hits}) > 1)
               and (f != "n_failed_chks" or any(map(_failing, hits)))]
    rows = [[_cell(f, h) for f, _ in columns] for h in hits]
    widths = [max([len(head)] + [len(r[i]) for r in rows])
              for i, (_, head) in enumerate(columns)]
    if width is not None:
        for i, (f, _) in enumerate(columns):
            if f in _WIDTHS:
                widths[i] = min(widths[i], _WIDTHS[f])
        rest = width - sum(widths[1:]) - len(widths)
        widths[0] = min(widths[0], max(_MIN_URL, rest))

    def line(cells):
        return " ".join(_clip(c, w).ljust(w)
                        for c, w in zip(cells, widths)).rstrip()

    return [line([h for _, h in columns]), *(line(r) for r in rows)]


def _clip(text: str, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_stats(stats: dict) -> list[str]:
    dl = stats["datalad_ds_stats"]

    def annex(s):
        parts = [plural(s["ds_count"], "dataset")]
        if s.get("annexed_file_count") is not None:
            parts.append(plural(s["annexed_file_count"], "annexed file"))
        unknown = s.get(UNKNOWN_SIZE_KEY)
        if s.get("annexed_files_size") is not None:
            # files of unknown size (URL keys without one) are in no sum
            parts.append(f"at least {human_size(s['annexed_files_size'])} "
                         f"({plural(unknown, 'file')} of unknown size)"
                         if unknown else human_size(s["annexed_files_size"]))
        elif unknown:
            parts.append(f"{plural(unknown, 'file')} of unknown size")
        return ", ".join(parts)

    return [
        "Collection statistics:",
        f"  DataLad datasets (unique by id): {annex(dl['unique_ds_stats'])}",
        f"  DataLad datasets (all copies):   {annex(dl['stats'])}",
        f"  pure annex repositories:         {annex(stats['pure_annex_ds_stats'])}",
        f"  non-annex repositories:          "
        f"{plural(stats['non_annex_ds_stats']['ds_count'], 'repository', 'repositories')}",
        f"  summary: {plural(stats['summary']['unique_ds_count'], 'unique dataset')}, "
        f"{plural(stats['summary']['ds_count'], 'record')}",
    ] + _check_lines(stats.get(CHECK_STATS_KEY))


def _check_lines(checks) -> list[str]:
    """The line of the statistics' check_stats (ours; none without it)."""
    if not isinstance(checks, dict):
        return []
    return [
        f"  failed checks (registry-update): "
        f"{plural(checks.get('failing_count', 0), 'failing record')} "
        f"({checks.get('unreachable_count', 0)} unreachable), of "
        f"{plural(checks.get('checked_count', 0), 'checked record')}"]
