"""registry-on-push: register a dataset's sibling after each push to it."""
from __future__ import annotations

import logging
from pathlib import Path

import datalad
from datalad.distribution.dataset import (
    EnsureDataset,
    datasetmethod,
    require_dataset,
)
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.support.constraints import EnsureNone, EnsureStr
from datalad.support.param import Parameter

from datalad_registry_ext import hooks
from datalad_registry_ext.commands._common import registry_location, results

lgr = logging.getLogger("datalad.registry_ext.on_push")


@build_doc
class RegistryOnPush(Interface):
    """Register a dataset's sibling in a registry after each push to it

    Installs a DataLad result hook in the dataset's configuration: after
    each ``datalad push`` of the dataset that updated a sibling, the
    sibling's URL (its ``remote.<name>.url``, where others clone from) is
    registered in your registry, as ``registry-submit`` would, or, with
    ``--to``, submitted to a DataLad-Registry service. ``--off`` removes
    the hook.

    DataLad runs the hooks of a dataset's own configuration when the
    command is given the dataset (``datalad push -d .``, ``ds.push()`` in
    Python); ``--global`` installs the hook in your user configuration
    instead, where a plain ``datalad push`` of this dataset finds it too.

    The hook never fails the push: what goes wrong (an unreachable
    service, a sibling without a URL, a local path given to a service) is
    logged as a warning. A sibling URL with credentials is never submitted
    to a service, and registered locally without them.
    """

    _params_ = dict(
        dataset=Parameter(
            args=("-d", "--dataset"),
            metavar="DATASET",
            doc="""the dataset whose pushes register its siblings (not the
            registry: see ``--registry``). Default: the dataset of the
            current directory.""",
            constraints=EnsureDataset() | EnsureNone()),
        registry=Parameter(
            args=("--registry",),
            metavar="REGISTRY",
            doc="""the registry to register pushed siblings in (its path).
            Default: the value of ``datalad.registry.dataset``, else the
            registry in the user data directory. With ``--to``: where
            remembered source names are looked up.""",
            constraints=EnsureStr() | EnsureNone()),
        to=Parameter(
            args=("--to",),
            metavar="URL_OR_NAME",
            doc="""submit pushed siblings to this DataLad-Registry service
            (its URL, or the name of a remembered source) instead of
            registering them in the registry; it must be able to reach the
            sibling's URL (a local path is not submitted).""",
            constraints=EnsureStr() | EnsureNone()),
        off=Parameter(
            args=("--off",),
            action="store_true",
            doc="""remove the hook: pushes of the dataset submit nothing
            any more."""),
        global_=Parameter(
            args=("--global",),
            dest="global_",
            action="store_true",
            doc="""install (or remove) the hook in your user configuration
            (``git config --global``), matching this dataset's pushes
            only, so that a plain ``datalad push`` runs it; without it,
            the hook is in the dataset's ``.git/config`` and runs when the
            push is given the dataset (``datalad push -d .``)."""),
        sibling=Parameter(
            args=("--sibling",),
            metavar="NAME",
            doc="""do now what the hook does after a push to the sibling
            NAME: submit its URL (what the installed hook calls).""",
            constraints=EnsureStr() | EnsureNone()),
    )

    _examples_ = [
        dict(text="Register this dataset's sibling in your registry after "
                  "each push",
             code_py="registry_on_push(dataset='.')",
             code_cmd="datalad registry-on-push && datalad push -d . "
                      "--to origin"),
        dict(text="Submit pushed siblings to registry.datalad.org, for "
                  "every plain 'datalad push' of this dataset",
             code_py="registry_on_push(dataset='.', "
                     "to='https://registry.datalad.org', global_=True)",
             code_cmd="datalad registry-on-push --global --to "
                      "https://registry.datalad.org"),
        dict(text="Register in a lab registry",
             code_cmd="datalad registry-on-push --registry /srv/lab-registry"),
        dict(text="Stop registering on push",
             code_py="registry_on_push(dataset='.', off=True)",
             code_cmd="datalad registry-on-push --off"),
    ]

    @staticmethod
    @datasetmethod(name="registry_on_push")
    @eval_results
    def __call__(*, dataset=None, registry=None, to=None, off=False,
                 global_=False, sibling=None):
        ds = require_dataset(dataset, check_installed=True,
                             purpose="register its pushes")
        location = registry_location(registry)
        path = Path(ds.path)
        scope = "global" if global_ else "local"
        common = dict(action=hooks.ACTION, logger=lgr)
        if sibling:
            yield from results(
                hooks.after_push(path, sibling, registry=location, to=to),
                common=common, path=path)
            return
        outcome = (hooks.remove(path, scope=scope) if off else
                   hooks.install(path, registry=location, to=to, scope=scope))
        # DataLad keeps configurations in memory, and the push that should
        # run the hook may come in this process
        ds.config.reload(force=True)
        datalad.cfg.reload(force=True)
        yield from results([outcome], common=common, path=path)
