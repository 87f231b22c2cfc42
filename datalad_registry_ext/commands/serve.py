"""registry-serve: serve the registry over HTTP (DataLad-Registry's API v2)."""
from __future__ import annotations

import logging

from datalad.distribution.dataset import datasetmethod
from datalad.interface.base import Interface, build_doc, eval_results
from datalad.interface.results import get_status_dict
from datalad.interface.utils import generic_result_renderer
from datalad.support.constraints import EnsureInt, EnsureRange, EnsureStr
from datalad.support.param import Parameter
from datalad.ui import ui

from datalad_registry_ext.commands._common import (
    dataset_param,
    registry_location,
    results,
)
from datalad_registry_ext.commands.update import EnsureDuration
from datalad_registry_ext.updates import parse_duration

lgr = logging.getLogger("datalad.registry_ext.serve")

ACTION = "registry_serve"
#: the packages of the ``serve`` extra (an ImportError naming another
#: module is a bug, not a missing extra)
SERVE_PACKAGES = {"fastapi", "uvicorn", "starlette", "swagger_ui_bundle",
                  "jinja2", "pydantic", "anyio", "h11"}


@build_doc
class RegistryServe(Interface):
    """Serve the registry over HTTP: DataLad-Registry's API v2 and web pages

    Runs a web server (uvicorn) on the registry until Ctrl-C or SIGTERM.
    It answers DataLad-Registry's REST API v2 under ``/api/v2`` --
    ``GET /api/v2/dataset-urls`` with DataLad-Registry's filters, ordering,
    pages and collection statistics, and ``search`` in our query language
    (a superset of DataLad-Registry's); ``GET /api/v2/dataset-urls/{id}``,
    ``GET /api/v2/url-metadata/{id}``, ``POST /api/v2/dataset-urls`` -- and
    ``GET /api/v2/dataset-urls/all``, every matching record as JSON Lines
    (what ``registry-sync`` imports). ``/docs`` documents the API
    interactively (offline), ``/openapi.json`` is its description; the web
    pages start at ``/``. Record ids are stable: derived from a record's
    source and URL.

    The server is safe by default: it listens on the loopback address only
    (127.0.0.1) and is read-only -- submissions are refused with 405 as by
    DataLad-Registry's read-only instances. With ``--allow-submit`` it
    accepts remote URLs (http, https, ssh, git; never local paths or
    ``file://``) and registers them in the background, one at a time, with
    what ``registry-submit`` does; accepted URLs are queued in a file and
    survive a restart.

    Changes made by other processes (``registry-submit``,
    ``registry-sync``, ``registry-extract``) show in the next response
    without a restart. The server needs the ``serve`` extra: ``pip install
    datalad-registry-ext[serve]``.
    """

    _params_ = dict(
        dataset=dataset_param,
        host=Parameter(
            args=("--host",),
            metavar="ADDRESS",
            doc="""the address to listen on. The default, 127.0.0.1,
            accepts connections from this machine only; put a reverse proxy
            in front (see the documentation) rather than listening on
            0.0.0.0.""",
            constraints=EnsureStr()),
        port=Parameter(
            args=("--port",),
            metavar="PORT",
            doc="""the TCP port (0: any free port; the URL reported says
            which).""",
            constraints=EnsureInt() & EnsureRange(0, 65535)),
        allow_submit=Parameter(
            args=("--allow-submit",),
            action="store_true",
            doc="""accept submissions (``POST /api/v2/dataset-urls``) of
            remote URLs and register them in the background. Without it the
            server is read-only."""),
        update_every=Parameter(
            args=("--update-every",),
            metavar="DURATION",
            doc="""run ``registry-update`` in the background this often
            (``30m``, ``6h``, ``1d``; plain numbers are seconds), the first
            time one interval after the start. A run is skipped while
            another update of the registry runs; searches go on during
            it.""",
            constraints=EnsureDuration()),
    )

    _examples_ = [
        dict(text="Serve the default registry on http://127.0.0.1:5000/",
             code_py="registry_serve()",
             code_cmd="datalad registry-serve"),
        dict(text="Serve a registry on another port, accepting submissions",
             code_py="registry_serve(dataset='/srv/lab-registry', port=8080, "
                     "allow_submit=True)",
             code_cmd="datalad registry-serve -d /srv/lab-registry "
                      "--port 8080 --allow-submit"),
        dict(text="Serve a registry and check its repositories every "
                  "six hours",
             code_py="registry_serve(dataset='/srv/lab-registry', "
                     "update_every='6h')",
             code_cmd="datalad registry-serve -d /srv/lab-registry "
                      "--update-every 6h"),
        dict(text="Query a running server",
             code_cmd="curl 'http://127.0.0.1:5000/api/v2/dataset-urls"
                      "?search=haxby&per_page=5'"),
    ]

    @staticmethod
    @datasetmethod(name="registry_serve")
    @eval_results
    def __call__(*, dataset=None, host="127.0.0.1", port=5000,
                 allow_submit=False, update_every=None):
        location = registry_location(dataset)
        common = dict(action=ACTION, logger=lgr, refds=str(location))
        try:
            # the serve extra: fastapi, uvicorn, swagger-ui-bundle
            from datalad_registry_ext.server.run import serve
        except ImportError as e:
            if (e.name or "").split(".")[0] not in SERVE_PACKAGES:
                raise
            yield get_status_dict(
                status="impossible", path=str(location), type="dataset",
                message=(f"registry-serve needs the web server packages "
                         f"({e.name} is not installed): pip install "
                         "datalad-registry-ext[serve]"), **common)
            return
        yield from results(
            serve(location, host=host, port=port, allow_submit=allow_submit,
                  update_every=parse_duration(update_every)
                  if update_every else None),
            common=common, path=location)

    @staticmethod
    def custom_result_renderer(res, **kwargs):
        if res.get("action") != ACTION:
            generic_result_renderer(res)
            return
        if res["status"] == "ok":
            ui.message(res.get("message"))
        else:
            ui.message(f"{res['status']}: {res.get('message')}")
