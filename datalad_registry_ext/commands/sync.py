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
    progress_bars,
    registry_location,
    results,
)

lgr = logging.getLogger("datalad.registry_ext.sync")

ACTION = sources.ACTION


@build_doc
class RegistrySync(Interface):
    """Sync records into the registry's local cache (the index)

    With a SOURCE, the records it holds are imported into the index, where
    ``registry-search`` finds them next to the registry's own. A SOURCE is

    - a DataLad-Registry service: ``https://registry.datalad.org``, another
      deployment, or ``datalad registry-serve`` elsewhere, given by its URL
      (with or without ``/api/v2``). It is recognised by its answers: a URL
      that does not answer like DataLad-Registry's API is refused. Its
      records, with metadata, come as one stream where the service offers
      it (``/api/v2/dataset-urls/all``), else page by page. ``--query``
      mirrors only what a search on the service finds;
    - a JSON Lines file (plain or gzip-compressed) with one DataLad-Registry
      API v2 record per line, as DataLad-Registry's bulk export and
      ``registry-search --export`` write them;
    - a registry superdataset (another registry, published with its
      ``refs/datalad/*``): its URL (``https://``, ``http://`` including
      git's dumb HTTP, ``ssh://``, ``host:path``, ``file://``) or local
      path. It is recognised by what it is (git can fetch it, and it holds
      ``.datalad/registry/records.jsonl``), fetched into the user cache
      and read as the registry reads its own records: committed facts, plain
      git metadata and metalad's store. Syncing it again reads only what
      changed since the last sync, and nothing when nothing did
      ("unchanged");
    - the name of a remembered source.

    Syncing a source again replaces its records: records gone from it are
    removed; other sources are untouched. It is all or nothing: a download
    that fails (a network error, an error answer, a total that changes
    meanwhile, a damaged file) changes nothing, and the source's previous
    records stay searchable. Single records that are not valid are reported
    (with their line, or page and position) and skipped.

    A service is remembered under a name (``--name``, by default its host
    and port, e.g. ``registry.datalad.org``) in the registry's git config
    (``datalad.registry.source.<name>.url`` and ``.query``), so
    ``registry-sync NAME`` and ``registry-sync --all`` sync it again and
    ``--remove NAME`` drops it. A JSON Lines file is remembered when given
    a ``--name``; without one its source is its absolute path. Each
    record's ``source`` field is its source's name. A token for a private
    service is read from ``DATALAD_REGISTRY_TOKEN_<NAME>`` or
    ``DATALAD_REGISTRY_TOKEN`` and never stored.

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
            doc="""where to sync from: the URL of a DataLad-Registry service,
            a JSON Lines file (``.jsonl`` or ``.jsonl.gz``), the URL or path
            of a registry superdataset, or the name of a remembered
            source. Omit it to rebuild the registry's own
            records."""),
        name=Parameter(
            args=("--name",),
            metavar="NAME",
            doc="""the name to remember the source under (letters, digits
            and ``._:@+-``). Default for a service: its host[:port]; a
            JSON Lines file is remembered only when named."""),
        query=Parameter(
            args=("--query",),
            metavar="QUERY",
            doc="""mirror only the records of a service that this query
            (the query language) finds there; remembered with the source.
            ``--query ''`` mirrors everything again."""),
        all_sources=Parameter(
            args=("--all",),
            dest="all_sources",
            action="store_true",
            doc="""sync every remembered source again."""),
        remove=Parameter(
            args=("--remove",),
            metavar="NAME",
            doc="""drop the records of the source NAME from the index and
            forget it."""),
    )

    _examples_ = [
        dict(text="Mirror DataLad-Registry (remembered as "
                  "'registry.datalad.org')",
             code_py="registry_sync('https://registry.datalad.org')",
             code_cmd="datalad registry-sync https://registry.datalad.org"),
        dict(text="Mirror only the BIDS datasets of a lab's registry, "
                  "under a name of your choice",
             code_py="registry_sync('http://lab.example.org:8000', "
                     "name='lab', query='metadata[bids_dataset]:\"\"')",
             code_cmd="datalad registry-sync http://lab.example.org:8000 "
                      "--name lab --query 'metadata[bids_dataset]:\"\"'"),
        dict(text="Sync every remembered source again",
             code_py="registry_sync(all_sources=True)",
             code_cmd="datalad registry-sync --all"),
        dict(text="Drop a source and its records",
             code_py="registry_sync(remove='lab')",
             code_cmd="datalad registry-sync --remove lab"),
        dict(text="Follow another registry's published superdataset "
                  "(incremental on every later sync)",
             code_py="registry_sync('https://data.example.org/registry.git',"
                     " name='lab')",
             code_cmd="datalad registry-sync "
                      "https://data.example.org/registry.git --name lab"),
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
    def __call__(source=None, *, dataset=None, name=None, query=None,
                 all_sources=False, remove=None):
        location = registry_location(dataset)
        with progress_bars(lgr, unit=" records") as progress:
            yield from results(
                sources.sync(location,
                             None if source is None else os.fspath(source),
                             name=name, query=query, all_sources=all_sources,
                             remove=remove, progress=progress),
                common=dict(action=ACTION, logger=lgr, refds=str(location)),
                path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        if res.get("action") == "registry_source_moved":
            ui.message(f"{'moved':<10} {res.get('message')}")
            return
        if res.get("action") != ACTION:
            generic_result_renderer(res)
            return
        label = {"ok": "synced", "notneeded": "unchanged"}.get(
            res["status"], res["status"])
        ui.message(f"{label:<10} {res.get('message')}")
