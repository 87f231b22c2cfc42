"""registry-update: check the registered repositories, refresh what changed."""
from __future__ import annotations

import logging
import os

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.utils import generic_result_renderer
from datalad.support.constraints import Constraint
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext import discovery, metadata, updates
from datalad_registry_ext.commands._common import (
    EnsureCount,
    dataset_param,
    progress_bars,
    registry_location,
    results,
)
from datalad_registry_ext.commands.extract import (
    render_extract_result,
    summarize_extraction,
)

lgr = logging.getLogger("datalad.registry_ext.update")

ACTION = updates.ACTION


class EnsureDuration(Constraint):
    """A duration: seconds, or a number with s, m, h, d or w (``30m``)."""

    def __call__(self, value):
        if value is None:
            return None
        updates.parse_duration(value)  # raises ValueError, naming the value
        return str(value)

    def short_description(self):
        return "a duration such as 90, 30m, 6h or 1d"

    def long_description(self):
        return ("value must be a duration: seconds, or a number with s, m, "
                "h, d or w (30m, 6h, 1d)")


@build_doc
class RegistryUpdate(Interface):
    """Check registered repositories and refresh those that changed

    Each registered repository (or each one given) is checked cheaply with
    one ``git ls-remote``: its default branch, HEAD, branches and tags are
    compared with its record. Only the repositories that changed are
    fetched into the clone cache (cloned afresh after a force push or a
    changed default branch), get their facts recomputed and the extractors
    that have no metadata at their new HEAD run again; all of them are
    committed to the registry in one commit. An unchanged repository only
    gets its ``last_chk_dt`` set in the index.

    A failed check (the repository vanished, stopped being a git
    repository, or did not answer within ``datalad.registry.update-timeout``
    seconds) is recorded on the record (``n_failed_chks``,
    ``last_chk_error``, ``last_failed_chk_dt``; ``registry-search
    'n_failed_chks:>3'`` finds them), and the next check of that repository
    waits, twice as long after each further failure
    (``datalad.registry.update-backoff-base``, ``-cap``). After
    ``datalad.registry.update-max-failures`` consecutive failures the
    repository is unreachable and skipped unless ``--force``; a successful
    check or a re-submission resets the count.

    One update of a registry runs at a time: a second one says so and ends
    (``notneeded``), or waits with ``--wait``. Searches and submissions go
    on meanwhile (the registry is only locked for the final commit). A run
    that is killed is resumed by the next one, which checks only what it
    had not checked. The last result is a summary: how many repositories
    were checked, unchanged, changed, failed and skipped.
    """

    # one dict, so that other options (--discover) are a small addition
    _params_ = dict(
        dataset=dataset_param,
        urls=Parameter(
            args=("urls",),
            metavar="URL_OR_PATH",
            nargs="*",
            doc="""registered repositories to check (URLs, paths or
            DataLad dataset ids); default: all of them."""),
        jobs=Parameter(
            args=("-J", "--jobs"),
            metavar="N",
            doc="""how many repositories to check (and fetch) at once.""",
            constraints=EnsureCount(1, allow_none=True)),
        force=Parameter(
            args=("--force",),
            action="store_true",
            doc="""check repositories that are backing off after failed
            checks, or unreachable, too."""),
        wait=Parameter(
            args=("--wait",),
            action="store_true",
            doc="""when another update of the registry is running, wait
            for it to end and then run, instead of ending at once."""),
        extract=Parameter(
            args=("--no-extract",),
            dest="extract",
            action="store_false",
            doc="""refresh the facts of changed repositories only; do not
            run the extractors on their new HEAD (``registry-extract`` can
            do it later)."""),
        discover=Parameter(
            args=("--discover",),
            metavar="FILE_OR_URL",
            doc="""first read DataLad's usage-dashboard
            ``datalad-repos.json`` (a file, or its URL:
            https://raw.githubusercontent.com/datalad/datalad-usage-dashboard/master/datalad-repos.json):
            register the active repositories the registry does not have,
            and flag the registered ones it lists as gone
            (``dashboard_gone_dt``; cleared when listed as active again);
            then check as usual."""),
        prune=Parameter(
            args=("--prune",),
            action="store_true",
            doc="""only clean the user's clone cache (shared by all their
            registries): drop the clones no registry uses any more (their
            registries are gone, or no longer list the repository), and
            what earlier versions left; check nothing. One result per
            clone dropped, then a summary."""),
    )

    _examples_ = [
        dict(text="Check every registered repository, eight at a time",
             code_py="registry_update(jobs=8)",
             code_cmd="datalad registry-update -J 8"),
        dict(text="Check one repository now, even if it is backing off",
             code_py="registry_update(['https://github.com/me/ds'], "
                     "force=True)",
             code_cmd="datalad registry-update --force "
                      "https://github.com/me/ds"),
        dict(text="From cron: wait for a running update instead of skipping",
             code_cmd="datalad registry-update -d /srv/registry -J 4 --wait"),
        dict(text="Also register what DataLad's usage dashboard lists and "
                  "flag what it marks as gone (daily, as DataLad-Registry)",
             code_cmd="datalad registry-update -J 4 --discover "
                      "https://raw.githubusercontent.com/datalad/"
                      "datalad-usage-dashboard/master/datalad-repos.json"),
        dict(text="Drop the clones that no registry of yours uses",
             code_py="registry_update(prune=True)",
             code_cmd="datalad registry-update --prune"),
        dict(text="List the repositories whose recent checks failed",
             code_cmd="datalad registry-search 'n_failed_chks:>0'"),
    ]

    @staticmethod
    @datasetmethod(name="registry_update")
    @eval_results
    def __call__(urls=None, *, dataset=None, jobs=None, force=False,
                 wait=False, extract=True, discover=None, prune=False):
        location = registry_location(dataset)
        if isinstance(urls, (str, os.PathLike)):
            urls = [urls]
        if prune:
            # the cache is the user's, not the registry's: pruning checks
            # nothing, so what would be checked cannot be named with it
            refusal = [dict(path=str(location), type="dataset",
                            status="impossible",
                            message="--prune only cleans the clone cache: "
                                    "run it without URLs and --discover")]
            yield from results(
                refusal if urls or discover else updates.prune(),
                common=dict(action=updates.PRUNE_ACTION, logger=lgr),
                path=location)
            return
        if discover:
            with progress_bars(lgr) as progress:
                yield from results(
                    discovery.discover(location, os.fspath(discover),
                                       jobs=jobs or 1, extract=extract,
                                       progress=progress),
                    common=dict(action=discovery.ACTION, logger=lgr,
                                refds=str(location)),
                    path=location)
        with progress_bars(lgr) as progress:
            yield from results(
                updates.update(location, [os.fspath(u) for u in urls or []],
                               jobs=jobs or 1, force=force, wait=wait,
                               extract=extract, progress=progress),
                common=dict(action=ACTION, logger=lgr, refds=str(location)),
                path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        if res.get("action") == updates.PRUNE_ACTION and res.get("message"):
            ui.message(res["message"])   # "dropped the clone of URL ..."
            return
        if res.get("action") in (metadata.ACTION, metadata.REFS_ACTION):
            render_extract_result(res)
            return
        if res.get("action") != ACTION:
            generic_result_renderer(res)
            return
        if res.get("summary"):
            ui.message(res.get("message"))
            return
        # an unchanged repository is the rule: the summary counts them
        if res.get("check") == "unchanged" and res["status"] == "notneeded":
            return
        if res.get("check") == "changed":
            ui.message(res.get("message"))   # "updated URL: what changed"
            return
        label = {"failed": "failed",
                 "unreachable": "skipped", "backing-off": "skipped"}.get(
                     res.get("check"), res["status"])
        ui.message(f"{label:<10} {res.get('message')}")

    @staticmethod
    def custom_result_summary_renderer(results):
        summarize_extraction(results)
