"""datalad-registry-ext: a DataLad dataset registry of your own.

Only the command suite and the configuration items live here; everything
heavy is imported by the commands when they run.
"""
import logging

__version__ = "0.1.0"

lgr = logging.getLogger("datalad.registry_ext")

command_suite = (
    "A dataset registry of your own: submit, extract, search, sync and serve",
    [
        ("datalad_registry_ext.commands.submit", "RegistrySubmit",
         "registry-submit", "registry_submit"),
        ("datalad_registry_ext.commands.extract", "RegistryExtract",
         "registry-extract", "registry_extract"),
        ("datalad_registry_ext.commands.update", "RegistryUpdate",
         "registry-update", "registry_update"),
        ("datalad_registry_ext.commands.sync", "RegistrySync",
         "registry-sync", "registry_sync"),
        ("datalad_registry_ext.commands.search", "RegistrySearch",
         "registry-search", "registry_search"),
        ("datalad_registry_ext.commands.serve", "RegistryServe",
         "registry-serve", "registry_serve"),
        ("datalad_registry_ext.commands.on_push", "RegistryOnPush",
         "registry-on-push", "registry_on_push"),
    ],
)

from datalad_registry_ext import config as _config  # noqa: E402

_config.register()
