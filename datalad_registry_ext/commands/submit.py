"""registry-submit: register repositories in the registry."""
from __future__ import annotations

import logging
import os
from collections import Counter

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.utils import generic_result_renderer
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext import metadata, registration, sources
from datalad_registry_ext.commands._common import (
    EnsureCount,
    dataset_param,
    human_size,
    progress_bars,
    registry_location,
    results,
)
from datalad_registry_ext.commands.extract import (
    render_extract_result,
    summarize_extraction,
)

lgr = logging.getLogger("datalad.registry_ext.submit")

ACTION = registration.ACTION


@build_doc
class RegistrySubmit(Interface):
    """Register repositories in a dataset registry

    Each repository (a DataLad dataset or any git repository) is cloned into
    the clone cache, its facts are computed with git and git-annex (HEAD,
    branches, tags, annexed file counts and sizes, subdatasets, ...), it is
    added to the registry superdataset as an uninstalled subdataset entry
    at a path derived from its URL (e.g. ``github.com/OpenNeuroDatasets/ds000001``),
    and its record is written to the registry's index, where
    ``registry-search`` finds it.

    All repositories of one call are registered in a single commit of the
    registry. Submitting a repository again refreshes its facts (``X``,
    ``X/`` and ``X.git`` are one repository); nothing is changed when
    nothing changed. Credentials in URLs are used for cloning only and never
    stored.

    With ``--to URL|NAME`` the URLs are submitted to a DataLad-Registry
    service instead (``POST /api/v2/dataset-urls``), which registers them
    itself; nothing is registered here.
    """

    _params_ = dict(
        dataset=dataset_param,
        urls=Parameter(
            args=("urls",),
            metavar="URL_OR_PATH",
            nargs="*",
            doc="""repositories to register: local paths, or ``file://``,
            ``http(s)://``, ``ssh://`` and ``git@host:path`` URLs."""),
        from_file=Parameter(
            args=("--from",),
            dest="from_file",
            metavar="FILE",
            doc="""read repositories from FILE: one URL or path per line, or
            DataLad's usage-dashboard ``datalad-repos.json`` (active
            repositories on GitHub, GIN, hub.datalad.org and ATRIS; OSF
            entries are reported as not supported)."""),
        jobs=Parameter(
            args=("-J", "--jobs"),
            metavar="N",
            doc="""how many repositories to clone and examine at once.""",
            constraints=EnsureCount(1, allow_none=True)),
        extract=Parameter(
            args=("--no-extract",),
            dest="extract",
            action="store_false",
            doc="""register only; do not extract metadata right after
            registering (``registry-extract`` can do it later)."""),
        to=Parameter(
            args=("--to",),
            metavar="URL_OR_NAME",
            doc="""submit the URLs to this DataLad-Registry service (its
            URL, or the name of a remembered source) instead of registering
            them here: it clones and registers them itself. Local paths and
            ``file://`` URLs are refused (the service cannot reach them).
            Results: ``ok`` submitted (new there), ``notneeded`` already
            registered there, ``impossible`` for a read-only instance. A
            token comes from ``DATALAD_REGISTRY_TOKEN_<NAME>`` or
            ``DATALAD_REGISTRY_TOKEN``."""),
    )

    _examples_ = [
        dict(text="Register a local dataset and a GitHub repository",
             code_py="registry_submit(['~/data/myds', "
                     "'https://github.com/OpenNeuroDatasets/ds000001'])",
             code_cmd="datalad registry-submit ~/data/myds "
                      "https://github.com/OpenNeuroDatasets/ds000001"),
        dict(text="Register everything DataLad's usage dashboard lists, "
                  "four at a time",
             code_py="registry_submit(from_file='datalad-repos.json', jobs=4)",
             code_cmd="datalad registry-submit --from datalad-repos.json -J 4"),
        dict(text="Submit a URL to registry.datalad.org instead of "
                  "registering it here",
             code_py="registry_submit(['https://github.com/me/ds'], "
                     "to='https://registry.datalad.org')",
             code_cmd="datalad registry-submit --to "
                      "https://registry.datalad.org https://github.com/me/ds"),
        dict(text="Use a registry other than the default one",
             code_py="registry_submit(['../ds'], dataset='/srv/lab-registry')",
             code_cmd="datalad registry-submit -d /srv/lab-registry ../ds"),
    ]

    @staticmethod
    @datasetmethod(name="registry_submit")
    @eval_results
    def __call__(urls=None, *, dataset=None, from_file=None, jobs=None,
                 extract=True, to=None):
        location = registry_location(dataset)
        if isinstance(urls, (str, os.PathLike)):
            urls = [urls]
        if to:
            yield from results(
                sources.submit_to(location, to,
                                  [os.fspath(u) for u in urls or []],
                                  from_file=from_file),
                common=dict(action=ACTION, logger=lgr, refds=str(location)),
                path=location)
            return
        with progress_bars(lgr) as progress:
            yield from results(
                registration.submit(
                    location, [os.fspath(u) for u in urls or []],
                    from_file=from_file, jobs=jobs or 1, extract=extract,
                    progress=progress),
                common=dict(action=ACTION, logger=lgr, refds=str(location)),
                path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        if res.get("action") in (metadata.ACTION, metadata.REFS_ACTION):
            render_extract_result(res)
            return
        if res.get("action") != ACTION:
            generic_result_renderer(res)
            return
        status = res["status"]
        url = res.get("url") or res.get("path")
        rec = res.get("record") or {}
        if status in ("ok", "notneeded") and rec:
            label = {"new": "registered"}.get(res.get("change"),
                                              res.get("change"))
            kind = (f"dataset {rec['ds_id'][:8]}" if rec.get("ds_id")
                    else "git repository")
            files = rec.get("annexed_files_in_wt_count")
            annex = (f", {files} annexed files, "
                     f"{human_size(rec.get('annexed_files_in_wt_size'))}"
                     if files is not None else "")
            what = registration.describe_changes(
                res.get("before") or {}, rec, res.get("changed") or []) \
                if res.get("change") == "updated" else ""
            ui.message(f"{label:<10} {url} -> {rec.get('registry_path')} "
                       f"({kind}, {rec.get('head_describe')}{annex})"
                       + (f": {what}" if what else ""))
        else:
            ui.message(f"{status:<10} {url}: {res.get('message')}")

    @staticmethod
    def custom_result_summary_renderer(results):
        _summarize_submit(results)
        summarize_extraction(results)


def _summarize_submit(results):
    mine = [r for r in results if r.get("action") == ACTION]
    if len(mine) < 2:
        return
    counts = Counter(r["status"] for r in mine)
    parts = [f"{counts[s]} {word}" for s, word in (
        ("ok", "registered or updated"), ("notneeded", "unchanged"),
        ("impossible", "impossible"), ("error", "failed")) if counts[s]]
    ui.message("registry-submit: " + ", ".join(parts))
