"""registry-search: query the registry's index."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.results import get_status_dict
from datalad.support.constraints import (
    EnsureChoice,
    EnsureInt,
    EnsureNone,
    EnsureRange,
    EnsureStr,
)
from datalad.support.param import Parameter

from datalad_registry_ext.commands._common import (
    dataset_param,
    human_size,
    registry_location,
)

lgr = logging.getLogger("datalad.registry_ext.search")

ACTION = "registry_search"
STATS_ACTION = "registry_search_stats"
EXPORT_ACTION = "registry_export"

# the record fields a search result carries (metadata only when asked)
RESULT_FIELDS = (
    "url", "ds_id", "annex_uuid", "head", "head_describe", "head_dt",
    "branches", "tags", "annex_key_count", "annexed_files_in_wt_count",
    "annexed_files_in_wt_size", "git_objects_kb", "last_update_dt",
    "last_chk_dt", "processed", "subdatasets", "source", "registry_path",
    "extraction_failures",
)


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
    """

    _params_ = dict(
        dataset=dataset_param,
        query=Parameter(
            args=("query",),
            metavar="QUERY",
            nargs="?",
            doc="""the query. Quote it for the shell:
            ``'metadata[bids_dataset]:"" AND NOT url:openneuro'``.""",
            constraints=EnsureStr() | EnsureNone()),
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
            constraints=EnsureChoice(
                "url", "annex_key_count", "annexed_files_in_wt_count",
                "annexed_files_in_wt_size", "last_update_dt",
                "git_objects_kb")),
        order_dir=Parameter(
            args=("--order-dir",),
            doc="""ascending or descending order.""",
            constraints=EnsureChoice("asc", "desc")),
        limit=Parameter(
            args=("--limit",),
            metavar="N",
            doc="""report at most N records.""",
            constraints=EnsureInt() & EnsureRange(min=0) | EnsureNone()),
        offset=Parameter(
            args=("--offset",),
            metavar="N",
            doc="""skip the first N records (for paging).""",
            constraints=EnsureInt() & EnsureRange(min=0)),
        stats=Parameter(
            args=("--stats",),
            action="store_true",
            doc="""also report the collection statistics of the matching
            records (DataLad-Registry's structure: DataLad datasets, unique
            by dataset id, pure annex and plain git repositories)."""),
        export=Parameter(
            args=("--export",),
            metavar="FILE",
            doc="""write the matching records, with metadata content, to
            FILE as JSON Lines (gzip-compressed if FILE ends in ``.gz``)
            instead of reporting them; ``registry-sync FILE`` imports it
            again.""",
            constraints=EnsureStr() | EnsureNone()),
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
        dict(text="Export all records with metadata to a file",
             code_py="registry_search(export='all.jsonl.gz')",
             code_cmd="datalad registry-search --export all.jsonl.gz"),
    ]

    @staticmethod
    @datasetmethod(name="registry_search")
    @eval_results
    def __call__(query=None, *, dataset=None, metadata=None,
                 order_by="last_update_dt", order_dir="desc", limit=None,
                 offset=0, stats=False, export=None):
        from datalad_registry_ext.index import IndexCorrupt
        from datalad_registry_ext.query import QueryError
        from datalad_registry_ext.search import search

        location = registry_location(dataset)
        common = dict(action=ACTION, logger=lgr, refds=str(location))
        try:
            found = search(location, query, order_by=order_by,
                           order_dir=order_dir, offset=offset or 0,
                           limit=limit)
        except (QueryError, IndexCorrupt, ValueError) as e:
            yield get_status_dict(status="error", path=str(location),
                                  type="dataset", query=query,
                                  message=str(e), **common)
            return

        if export or metadata:
            from datalad_registry_ext.search import full_records
            try:
                page = full_records(location, found.page)
            except IndexCorrupt as e:
                yield get_status_dict(status="error", path=str(location),
                                      type="dataset", query=query,
                                      message=str(e), **common)
                return
        else:
            page = found.page

        if export:
            from datalad_registry_ext.sources import export_jsonl
            target = Path(os.fspath(export)).expanduser().absolute()
            try:
                n = export_jsonl(page, target)
            except OSError as e:
                yield get_status_dict(
                    status="error", path=str(target), type="file",
                    message=f"cannot write {target}: {e.strerror or e}",
                    **dict(common, action=EXPORT_ACTION))
                return
            yield get_status_dict(
                status="ok", path=str(target), type="file", records=n,
                query=query, message=f"exported {n} records to {target}",
                **dict(common, action=EXPORT_ACTION))
            return

        for rank, rec in enumerate(page, (offset or 0) + 1):
            fields = {k: rec.get(k) for k in RESULT_FIELDS}
            if metadata == "content":
                fields["metadata"] = rec.get("metadata") or []
            elif metadata == "reference":
                fields["metadata"] = [
                    {k: m.get(k) for k in ("extractor_name",
                                            "extractor_version",
                                            "dataset_version")}
                    for m in rec.get("metadata") or []]
            path = location / rec["registry_path"] if rec.get(
                "registry_path") and rec.get("source") == "local" else location
            yield get_status_dict(
                status="ok", path=str(path), type="dataset", rank=rank,
                total=found.total,
                extractors=rec.get("extractors") or sorted(
                    {m.get("extractor_name") for m in rec.get("metadata") or []}),
                **fields, **common)
        if stats:
            from datalad_registry_ext.stats import collection_stats
            yield get_status_dict(
                status="ok", path=str(location), type="collection",
                query=query, total=found.total,
                collection_stats=collection_stats(found.matching),
                **dict(common, action=STATS_ACTION))

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        # hits are printed as one table by the summary renderer
        if res.get("action") == ACTION and res["status"] == "ok":
            return
        from datalad.ui import ui
        if res.get("action") in (ACTION, EXPORT_ACTION, STATS_ACTION):
            if res.get("action") == STATS_ACTION:
                return
            ui.message(f"{res['status']}: {res.get('message')}")
            return
        from datalad.interface.utils import generic_result_renderer
        generic_result_renderer(res)

    @staticmethod
    def custom_result_summary_renderer(results):
        from datalad.ui import ui
        hits = [r for r in results
                if r.get("action") == ACTION and r["status"] == "ok"]
        stats = [r for r in results if r.get("action") == STATS_ACTION]
        failed = [r for r in results if r["status"] in ("error", "impossible")]
        if failed and not hits:
            return
        if hits:
            for line in format_table(hits):
                ui.message(line)
        total = hits[0]["total"] if hits else (stats[0]["total"] if stats else 0)
        if hits:
            first, last = hits[0]["rank"], hits[-1]["rank"]
            shown = (f" (showing {first}-{last})"
                     if (first, last) != (1, total) else "")
            ui.message(f"{total} matching record{'s' * (total != 1)}{shown}")
        elif not any(r.get("action") == EXPORT_ACTION for r in results):
            ui.message(f"{total} matching records")
        for s in stats:
            for line in format_stats(s["collection_stats"]):
                ui.message(line)


# -- human output -----------------------------------------------------------------------

_COLUMNS = (("URL", 40), ("DATASET", 8), ("DESCRIBE", 14), ("ANNEXED", 9),
            ("UPDATED", 10), ("EXTRACTORS", 14))


def _clip(text: str, width: int) -> str:
    text = text or "-"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(hits: list[dict]) -> list[str]:
    """A table of at most 100 columns."""
    def row(cells):
        return " ".join(_clip(c, w).ljust(w) for c, (_, w) in
                        zip(cells, _COLUMNS)).rstrip()

    lines = [row([name for name, _ in _COLUMNS])]
    for h in hits:
        lines.append(row([
            h.get("url") or "",
            (h.get("ds_id") or "")[:8],
            h.get("head_describe") or "",
            human_size(h.get("annexed_files_in_wt_size")),
            (h.get("last_update_dt") or "")[:10],
            ",".join(_short_extractor(e) for e in h.get("extractors") or []),
        ]))
    return lines


def _short_extractor(name: str) -> str:
    return {"metalad_core": "core", "metalad_studyminimeta": "smm",
            "bids_dataset": "bids", "datacite_gin": "gin",
            "datalad_rfc822": "rfc822",
            "frictionless_datapackage": "frictionless"}.get(name, name)


def format_stats(stats: dict) -> list[str]:
    dl = stats["datalad_ds_stats"]

    def annex(s):
        parts = [f"{s['ds_count']} datasets"]
        if s.get("annexed_file_count") is not None:
            parts.append(f"{s['annexed_file_count']} annexed files")
        if s.get("annexed_files_size") is not None:
            parts.append(human_size(s["annexed_files_size"]))
        return ", ".join(parts)

    return [
        "Collection statistics:",
        f"  DataLad datasets (unique by id): {annex(dl['unique_ds_stats'])}",
        f"  DataLad datasets (all copies):   {annex(dl['stats'])}",
        f"  pure annex repositories:         {annex(stats['pure_annex_ds_stats'])}",
        f"  non-annex repositories:          "
        f"{stats['non_annex_ds_stats']['ds_count']} repositories",
        f"  summary: {stats['summary']['unique_ds_count']} unique datasets, "
        f"{stats['summary']['ds_count']} records",
    ]
