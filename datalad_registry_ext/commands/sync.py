"""registry-sync: bring records from a source into the local cache."""
from __future__ import annotations

import logging
import os

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.utils import generic_result_renderer
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext import sources
from datalad_registry_ext.commands._common import (
    dataset_param,
    registry_location,
    results,
)

lgr = logging.getLogger("datalad.registry_ext.sync")

ACTION = sources.ACTION


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
            ``.jsonl.gz``). Omit it to rebuild the registry's own records."""),
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
        yield from results(
            sources.sync(location,
                         None if source is None else os.fspath(source)),
            common=dict(action=ACTION, logger=lgr, refds=str(location)),
            path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        if res.get("action") != ACTION:
            generic_result_renderer(res)
            return
        label = {"ok": "synced", "notneeded": "unchanged"}.get(
            res["status"], res["status"])
        ui.message(f"{label:<10} {res.get('message')}")
