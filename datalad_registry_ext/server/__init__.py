"""``registry-serve``'s web application: DataLad-Registry's API v2 (and the
web pages) over one registry.

:func:`create_app` builds the FastAPI application; ``commands/serve.py``
runs it on uvicorn (:func:`datalad_registry_ext.server.run.serve`). The
modules:

- :mod:`.api` -- the REST API v2 router (``/api/v2/...``), its error
  envelopes and the OpenAPI page (``/docs``, assets from the installed
  ``swagger_ui_bundle``, never a CDN);
- :mod:`.listing` -- request helpers the API and the pages share: the list
  parameters, running them as one search, page links, records in API shape;
- :mod:`.models` -- pydantic models mirroring DataLad-Registry's (OpenAPI);
- :mod:`.submissions` -- the pending-submission queue and its one worker;
- :mod:`.run` -- binding the port and running uvicorn until a signal;
- ``pages`` (another module, optional) -- the HTML pages.

Like every domain module, nothing here speaks DataLad's command interface.
FastAPI is imported here, so importing this package needs the ``serve``
extra (``pip install datalad-registry-ext[serve]``).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from datalad_registry_ext import __version__

STATIC_DIR = Path(__file__).parent / "static"


def create_app(registry: Path, *, allow_submit: bool = False,
               start_worker: bool = True,
               update_every: float | None = None) -> FastAPI:
    """The application serving ``registry`` (kept in ``app.state.registry``).

    Read-only unless ``allow_submit``: then ``POST /api/v2/dataset-urls``
    queues remote URLs, and one background worker (started with the
    application unless ``start_worker`` is false) registers them with
    ``registration.submit``. With ``update_every`` (seconds), a background
    thread runs ``registry-update`` that often while the server runs
    (``app.state.updater``).
    """
    # imported here, not at module level: pages imports this package
    from datalad_registry_ext.server import api, submissions

    registry = Path(registry).absolute()
    queue = submissions.SubmissionQueue(registry) if allow_submit else None
    updater = None
    if update_every:
        from datalad_registry_ext.updates import Scheduler
        updater = Scheduler(registry, update_every)
    app = FastAPI(
        title="Datalad Registry API", version="2.0",
        description=(
            "DataLad-Registry's API v2, served by datalad-registry-ext "
            f"{__version__} from a registry of your own."),
        # our own /docs (offline assets) instead of FastAPI's CDN page
        docs_url=None, redoc_url=None,
        lifespan=_with_updater(submissions.lifespan(queue, start_worker),
                               updater),
    )
    app.state.registry = registry
    app.state.allow_submit = allow_submit
    app.state.submissions = queue
    app.state.updater = updater
    api.install(app)
    if importlib.util.find_spec("datalad_registry_ext.server.pages"):
        from datalad_registry_ext.server import pages
        app.include_router(pages.router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _with_updater(lifespan, updater):
    """``lifespan``, and the update scheduler running while it does."""
    if updater is None:
        return lifespan
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def span(app):
        async with lifespan(app):
            updater.start()
            try:
                yield
            finally:
                updater.stop()
    return span
