"""registry-sync: bring records from a source into the local cache."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.results import get_status_dict
from datalad.support.constraints import EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_registry_ext.commands._common import dataset_param, registry_location

lgr = logging.getLogger("datalad.registry_ext.sync")

ACTION = "registry_sync"


@build_doc
class RegistrySync(Interface):
    """Sync records into the registry's local cache (the index)

    With a SOURCE, the records it holds are imported into the index, where
    ``registry-search`` finds them next to the registry's own. A SOURCE is,
    for now, a JSON Lines file (plain or gzip-compressed) with one
    DataLad-Registry API v2 record per line, as DataLad-Registry's bulk
    export and ``registry-search --export`` write them. Importing the same
    source again replaces its records: records gone from it are removed;
    other sources are untouched. Lines that are not valid records are
    reported with their line number and skipped.

    Without a SOURCE, the index's records of the registry itself are rebuilt
    from the registry superdataset (its subdataset entries and committed
    facts). Use this when the index was lost or damaged, or after pulling
    changes to a registry from elsewhere.
    """

    _params_ = dict(
        dataset=dataset_param,
        source=Parameter(
            args=("source",),
            metavar="SOURCE",
            nargs="?",
            doc="""where to sync from: a JSON Lines file (``.jsonl`` or
            ``.jsonl.gz``). Omit it to rebuild the registry's own records.""",
            constraints=EnsureStr() | EnsureNone()),
    )

    _examples_ = [
        dict(text="Import a bulk export of DataLad-Registry",
             code_py="registry_sync('registry-export.jsonl.gz')",
             code_cmd="datalad registry-sync registry-export.jsonl.gz"),
        dict(text="Rebuild the index of a registry from the registry itself",
             code_py="registry_sync(dataset='/srv/lab-registry')",
             code_cmd="datalad registry-sync -d /srv/lab-registry"),
    ]

    @staticmethod
    @datasetmethod(name="registry_sync")
    @eval_results
    def __call__(source=None, *, dataset=None):
        location = registry_location(dataset)
        common = dict(action=ACTION, logger=lgr, refds=str(location))
        if source is None:
            yield from _rebuild(location, common)
            return
        source = os.fspath(source)
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) and not \
                source.startswith("file://"):
            yield get_status_dict(
                status="impossible", path=str(location), type="dataset",
                source=source,
                message=f"cannot sync from {source}: only JSON Lines files are "
                        "supported as sources so far", **common)
            return
        if source.startswith("file://"):
            source = source[len("file://"):]
        yield from _import(location, Path(source).expanduser(), common)


def _rebuild(location: Path, common: dict):
    from datalad_registry_ext import registration
    from datalad_registry_ext.registry import is_registry
    if not is_registry(location):
        yield get_status_dict(
            status="impossible", path=str(location), type="dataset",
            message=f"there is no registry at {location} to rebuild the index "
                    "from (registry-submit creates one)", **common)
        return
    n = registration.rebuild_index(location)
    yield get_status_dict(
        status="ok", path=str(location), type="dataset", source="local",
        records=n, message=f"rebuilt the index of {location}: {n} records",
        **common)


def _import(location: Path, path: Path, common: dict):
    from datalad_registry_ext.sources import SourceError, import_jsonl
    path = path.absolute()
    try:
        summary = import_jsonl(location, path)
    except SourceError as e:
        yield get_status_dict(status="error", path=str(path), type="file",
                              source=str(path), message=str(e), **common)
        return
    for line, problem in summary.problems:
        yield get_status_dict(
            status="error", path=str(path), type="file", source=str(path),
            line=line, message=f"{path} line {line}: {problem} (skipped)",
            **common)
    yield get_status_dict(
        status="ok", path=str(path), type="file", source=str(path),
        imported=summary.imported, added=summary.added,
        updated=summary.updated, removed=summary.removed,
        unchanged=summary.unchanged, skipped=len(summary.problems),
        message=(f"imported {summary.imported} records from {path} "
                 f"({summary.added} new, {summary.updated} updated, "
                 f"{summary.removed} removed, {len(summary.problems)} lines "
                 "skipped)"),
        **common)


def _render(res, **kwargs):
    from datalad.ui import ui
    if res.get("action") != ACTION:
        from datalad.interface.utils import generic_result_renderer
        generic_result_renderer(res)
        return
    label = {"ok": "synced", "notneeded": "unchanged"}.get(res["status"],
                                                           res["status"])
    ui.message(f"{label:<10} {res.get('message')}")


RegistrySync.custom_result_renderer = staticmethod(_render)
