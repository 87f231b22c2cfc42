"""registry-extract: extract and aggregate metadata of registered datasets."""
from __future__ import annotations

import logging
import os
from collections import Counter

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.utils import generic_result_renderer
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext import metadata
from datalad_registry_ext.commands._common import (
    EnsureCount,
    dataset_param,
    progress_bars,
    registry_location,
    results,
)

lgr = logging.getLogger("datalad.registry_ext.extract")

ACTION = metadata.ACTION
REFS_ACTION = metadata.REFS_ACTION


@build_doc
class RegistryExtract(Interface):
    """Extract metadata of registered datasets and aggregate it in the registry

    Each configured extractor runs on the dataset's clone in the clone
    cache, if the file it needs is there (``dataset_description.json`` for
    ``bids_dataset``, ``datacite.yml`` for ``datacite_gin``, ...). What it
    produces is stored in the dataset's index record, where
    ``registry-search`` finds it (``metadata[bids_dataset]:...``), and in
    the registry superdataset as aggregated metalad metadata at the
    dataset's path, so ``datalad meta-dump -d REGISTRY -r`` shows it and a
    clone of the registry carries it.

    The default extractors (configuration item
    ``datalad.registry.extractors``) are DataLad-Registry's five --
    ``metalad_core``, ``metalad_studyminimeta``, ``datacite_gin``,
    ``bids_dataset``, ``dandi`` -- plus ``datalad_rfc822``
    (``.datalad/meta.rfc822``) and ``frictionless_datapackage``
    (``datapackage.json``). Metadata already extracted for a dataset's
    current HEAD is not extracted again unless ``--force`` is given. A
    failing extractor never stops the others; its failure is recorded on the
    index record (``extraction_failures``) and nothing extracted before is
    lost. The next success of that extractor clears the failure
    (``--force`` runs it again). An extractor name no installed package
    provides is refused up front, with the known names.
    """

    _params_ = dict(
        dataset=dataset_param,
        datasets=Parameter(
            args=("datasets",),
            metavar="DATASET",
            nargs="*",
            doc="""registered datasets to extract metadata from: a registered
            URL, a local path, or a DataLad dataset id (every registered URL
            with that id). Default: every registered dataset whose metadata
            is missing or older than its current HEAD (with ``--force``:
            every registered dataset)."""),
        extractor=Parameter(
            args=("-e", "--extractor"),
            metavar="NAME",
            action="append",
            doc="""run this extractor (repeat the option for several)
            instead of those configured in ``datalad.registry.extractors``.
            Short names are accepted: ``core`` (``metalad_core``), ``smm``
            or ``studyminimeta`` (``metalad_studyminimeta``), ``bids``
            (``bids_dataset``), ``gin`` or ``datacite`` (``datacite_gin``),
            ``rfc822`` (``datalad_rfc822``), ``frictionless``
            (``frictionless_datapackage``). A name no installed package
            provides is refused with one ``impossible`` result before any
            dataset is touched; nothing is extracted or recorded for it."""),
        force=Parameter(
            args=("--force",),
            action="store_true",
            doc="""extract again even if metadata for the current HEAD is
            there already; without DATASET arguments, every registered
            dataset. A success clears the extractor's recorded failure;
            failures recorded for extractors that are not installed (or
            under a short name) are dropped."""),
        jobs=Parameter(
            args=("-J", "--jobs"),
            metavar="N",
            doc="""how many datasets to work on at once.""",
            constraints=EnsureCount(1, allow_none=True)),
    )

    _examples_ = [
        dict(text="Extract metadata of every dataset that needs it",
             code_py="registry_extract()",
             code_cmd="datalad registry-extract"),
        dict(text="Run only the BIDS extractor on one dataset, again",
             code_py="registry_extract(['https://github.com/OpenNeuroDatasets/"
                     "ds000001'], extractor=['bids_dataset'], force=True)",
             code_cmd="datalad registry-extract -e bids_dataset --force "
                      "https://github.com/OpenNeuroDatasets/ds000001"),
        dict(text="Run the BIDS extractor (short name: bids) on every "
                  "registered dataset again; where it succeeds, its "
                  "recorded failure is cleared",
             code_py="registry_extract(extractor=['bids'], force=True)",
             code_cmd="datalad registry-extract -e bids --force"),
        dict(text="Show the aggregated metadata of the whole registry",
             code_cmd="datalad meta-dump -d REGISTRY -r"),
    ]

    @staticmethod
    @datasetmethod(name="registry_extract")
    @eval_results
    def __call__(datasets=None, *, dataset=None, extractor=None, force=False,
                 jobs=None):
        location = registry_location(dataset)
        if isinstance(datasets, (str, os.PathLike)):
            datasets = [datasets]
        with progress_bars(lgr, " datasets") as progress:
            yield from results(
                metadata.extract_registered(
                    location, [os.fspath(d) for d in datasets or []],
                    extractor, force=force, jobs=jobs or 1,
                    progress=lambda done, total: progress(
                        "Extracting", done, total)),
                common=dict(action=ACTION, logger=lgr, refds=str(location)),
                path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        render_extract_result(res)

    @staticmethod
    def custom_result_summary_renderer(results):
        summarize_extraction(results)


def render_extract_result(res):
    if res.get("action") == REFS_ACTION:
        return  # logged as a warning already; -f json shows the result
    if res.get("action") != ACTION:
        generic_result_renderer(res)
        return
    if res["status"] == "notneeded" and res.get("extractor"):
        return  # the summary counts them
    if res["status"] == "ok" and res.get("extractor"):
        label, what = _extraction_change(res)
        ui.message(f"{label:<10} {res['extractor']:<24} {res.get('url')}"
                   + (f": {what}" if what else ""))
    else:
        ui.message(f"{res['status']:<10} {res.get('message')}")


def _extraction_change(res) -> tuple[str, str]:
    """The label and what changed, from the result's ``change``,
    ``previous_version`` and ``metadata.dataset_version`` fields."""
    change = res.get("change")
    now = str((res.get("metadata") or {}).get("dataset_version") or "")[:8]
    before = str(res.get("previous_version") or "")[:8]
    if change == "updated":
        if before and now and before != now:
            return "updated", f"HEAD {before} -> {now}"
        return "updated", f"new content at {now}"
    if change == "unchanged":
        return "unchanged", f"extracted again at {now}, same content"
    return "extracted", ""


def summarize_extraction(results):
    mine = [r for r in results if r.get("action") == ACTION
            and r.get("extractor")]
    if not mine:
        return
    counts = Counter(r["status"] for r in mine)
    parts = [f"{counts[s]} {w}" for s, w in (
        ("ok", "extracted"), ("notneeded", "not needed"),
        ("impossible", "impossible"), ("error", "failed")) if counts[s]]
    ui.message("metadata: " + ", ".join(parts))
