"""DataLad-Registry's REST API v2 (and our ``/all``), its error envelopes and
the offline OpenAPI page.

Endpoints (``/api/v2``): ``GET dataset-urls`` (search, filters, order,
pages, statistics), ``GET dataset-urls/all`` (every matching record as JSON
Lines, streamed), ``GET dataset-urls/{id}``, ``GET url-metadata/{id}``,
``POST dataset-urls`` (405 unless the server allows submissions).

Errors on ``/api/`` paths are upstream's envelope ``{"code", "name",
"description"}`` -- a 500 says nothing more (the traceback goes to the
server's log only) -- except request validation, which is a 422 with a JSON
array of ``{"loc", "msg", "type"}`` as upstream's flask-openapi3 answers.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
from collections import OrderedDict
from http import HTTPStatus
from typing import Annotated, Optional

import swagger_ui_bundle
from fastapi import APIRouter, Body, FastAPI, Query, Request
from fastapi.exception_handlers import (
    http_exception_handler as default_http_handler,
)
from fastapi.exception_handlers import (
    request_validation_exception_handler as default_validation_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from datalad_registry_ext.records import ID_BITS
from datalad_registry_ext.server import listing, submissions
from datalad_registry_ext.server.models import (
    DatasetURLPage,
    DatasetURLRespModel,
    DatasetURLSubmitModel,
    HTTPExceptionResp,
    URLMetadataModel,
    ValidationErrorItem,
)

lgr = logging.getLogger("datalad.registry_ext.server")

#: werkzeug's descriptions, which upstream's envelope carries
DESCRIPTIONS = {
    400: "The browser (or proxy) sent a request that this server could not "
         "understand.",
    404: "The requested URL was not found on the server. If you entered the "
         "URL manually please check your spelling and try again.",
    405: "The method is not allowed for the requested URL.",
    500: "The server encountered an internal error and was unable to "
         "complete your request. Either the server is overloaded or there "
         "is an error in the application.",
}
READ_ONLY_DESCRIPTION = ("This method on the requested resource is not "
                         "available through a read-only server.")
READ_ONLY_ALLOW = "GET, HEAD, OPTIONS"

COMMON_RESPONSES = {404: {"model": HTTPExceptionResp},
                    500: {"model": HTTPExceptionResp},
                    422: {"model": list[ValidationErrorItem]}}
JSONL = "application/x-ndjson"


def envelope(code: int, description: str | None = None,
             headers: dict | None = None) -> JSONResponse:
    """Upstream's ``HTTPExceptionResp`` response."""
    return JSONResponse(
        {"code": code, "name": HTTPStatus(code).phrase,
         "description": description or DESCRIPTIONS.get(
             code, HTTPStatus(code).description)},
        status_code=code, headers=headers)


def _api_path(request: Request) -> bool:
    path = request.scope.get("path", "")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path.startswith("/api/")


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _pages_handler(request: Request):
    """The pages' own error page maker, if the pages module is loaded and
    has one (``error_response(request, status_code, message)``)."""
    pages = sys.modules.get("datalad_registry_ext.server.pages")
    return getattr(pages, "error_response", None)


async def _http_error(request: Request, exc: StarletteHTTPException):
    if _api_path(request):
        description = exc.detail if exc.status_code == 400 and isinstance(
            exc.detail, str) else None
        return envelope(exc.status_code, description, exc.headers)
    pages = _pages_handler(request)
    if pages is not None:
        return pages(request, exc.status_code, str(exc.detail))
    return await default_http_handler(request, exc)


def _validation_items(exc: RequestValidationError) -> list[dict]:
    items = []
    for err in exc.errors():
        loc = list(err.get("loc") or ())
        # upstream validates each part with its own model: locations
        # name the field only
        if loc and loc[0] in ("query", "path", "body", "header"):
            loc = loc[1:]
        # no "input": it would echo whatever was sent (huge, hostile)
        items.append({"loc": loc, "msg": str(err.get("msg", "")),
                      "type": str(err.get("type", ""))})
    return items


async def _validation_error(request: Request, exc: RequestValidationError):
    if _api_path(request):
        return JSONResponse(_validation_items(exc), status_code=422)
    pages = _pages_handler(request)
    if pages is not None:
        return pages(request, 422, "; ".join(
            f"{'.'.join(map(str, i['loc']))}: {i['msg']}"
            for i in _validation_items(exc)))
    return await default_validation_handler(request, exc)


async def _server_error(request: Request, exc: Exception):
    # the traceback goes to the log, never into a response
    lgr.error("%s %s failed", request.method, request.url.path,
              exc_info=(type(exc), exc, exc.__traceback__))
    if _api_path(request):
        return envelope(500)
    return PlainTextResponse("Internal Server Error", status_code=500)


def _unprocessable(field: str, message: str) -> JSONResponse:
    return JSONResponse([{"loc": [field], "msg": message,
                          "type": "value_error"}], status_code=422)


def _id(text: str) -> int | None:
    """A path id as upstream's ``<int:id>`` matches it (digits only), and
    within our ids' range; else None (a 404)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    n = int(text)
    return n if 0 < n <= 1 << ID_BITS else None


# -- the router ---------------------------------------------------------------------

router = APIRouter(prefix=listing.API_PREFIX, responses=COMMON_RESPONSES)


@router.get(
    "/dataset-urls", tags=["Dataset URLs"],
    responses={200: {"model": DatasetURLPage},
               400: {"model": HTTPExceptionResp}},
    summary="Get all dataset URLs that satisfy the constraints imposed by "
            "the query parameters.")
def dataset_urls(request: Request,
                 params: Annotated[listing.ListParams, Query()]):
    """Get all dataset URLs that satisfy the constraints imposed by the
    query parameters: one page, ordered, with the statistics of the whole
    filtered collection."""
    try:
        found = listing.run_listing(request.app.state.registry, params,
                                    root_path=_root(request))
    except listing.BadQuery as e:
        return envelope(400, e.message)
    except listing.PageNotFound:
        return envelope(404)
    return JSONResponse(listing.page_body(found, root_path=_root(request)))


class DumpParams(listing.FilterParams):
    return_metadata: bool = Field(
        False, description="Include the metadata records (content).")
    digests: bool = Field(
        False, description="Ours: instead of the records, one "
        "`{\"id\", \"url\", \"digest\"}` per record, the digest changing "
        "whenever anything of the record does (what an incremental "
        "registry-sync compares).")
    ids: Optional[str] = Field(
        None, description=f"Ours: only the records with these ids, "
        f"comma-separated (at most {listing.MAX_IDS}), in the order given "
        "and each once, as `GET /dataset-urls/{id}` answers them with "
        "`return_metadata=true`; unknown ids are left out. Not with "
        "`search`, the filters or `digests` (422).")


# -- the digests, kept -------------------------------------------------------------
#
# ``/all?digests=true`` is what every incremental registry-sync asks first
# (~0.2 s of 13,000 records: each record read and hashed). An answer is
# kept by its ETag, which names the fingerprints of the indexes it was read
# from: the same tag, the same answer, until an index changes.

#: digests answers kept (most recently used), and the largest one kept
DIGESTS_KEPT = 4
DIGESTS_MAX_BYTES = 64 << 20

_digests: OrderedDict = OrderedDict()
_digests_lock = threading.Lock()


def _kept_digests(tag: str) -> bytes | None:
    with _digests_lock:
        body = _digests.get(tag)
        if body is not None:
            _digests.move_to_end(tag)
        return body


def _keep_digests(tag: str, body: bytes) -> None:
    if len(body) > DIGESTS_MAX_BYTES or DIGESTS_KEPT <= 0:
        return
    with _digests_lock:
        _digests[tag] = body
        while len(_digests) > DIGESTS_KEPT:
            _digests.popitem(last=False)


_json_text = json.encoder.encode_basestring  # as json.dumps, not ASCII
_DIGEST_KEYS = ("id", "url", "digest")


def _line(rec: dict) -> str:
    """``json.dumps(rec)`` and a newline, as compact as the API's; a digest
    (id, url, digest) formatted directly (13,000: ~0.04 s less)."""
    if tuple(rec) == _DIGEST_KEYS:
        i, u, d = rec["id"], rec["url"], rec["digest"]
        if (i is None or type(i) is int) and type(u) is str \
                and type(d) is str:
            return '{"id":%s,"url":%s,"digest":%s}\n' % (
                "null" if i is None else i, _json_text(u), _json_text(d))
    return json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n"


def _etag_matches(header: str | None, tag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``tag`` (weak or not)."""
    if not header:
        return False
    given = [t.strip() for t in header.split(",")]
    return "*" in given or any(t.removeprefix("W/") == tag for t in given)


@router.get(
    "/dataset-urls/all", tags=["Dataset URLs"],
    responses={200: {"content": {JSONL: {}},
                     "description": "One record per line"},
               400: {"model": HTTPExceptionResp}},
    summary="Every matching dataset URL as JSON Lines (streamed).")
def dataset_urls_all(request: Request,
                     params: Annotated[DumpParams, Query()]):
    """Every record matching the search and filters, one JSON object per
    line (``application/x-ndjson``), streamed as it is read; with
    ``return_metadata=true`` each carries its metadata records (as
    DataLad-Registry's PR #412). ``registry-sync`` imports the file."""
    kind = dict(metadata=params.return_metadata, digests=params.digests)
    if params.ids is not None:
        # many records by id in one request (an incremental registry-sync
        # fetches what changed): with a filter too, an id that does not
        # match would be absent as if unknown, which a sync would take for
        # a deleted record -- refused rather than guessed at
        extra = [name for name in listing.FilterParams.model_fields
                 if getattr(params, name) is not None]
        if params.digests:
            extra.append("digests")
        if extra:
            return _unprocessable("ids", "ids cannot be combined with "
                                  + ", ".join(extra))
        try:
            ids = listing.parse_ids(params.ids)
        except ValueError as e:
            return _unprocessable("ids", str(e))
    headers = {"Content-Disposition":
               "attachment; filename=dataset-urls.jsonl"}
    try:
        # the collection's ETag: a client that has this answer already (an
        # incremental registry-sync) gets a 304 without a body, and the
        # query is not even run
        tag = None
        if request.headers.get("if-none-match") or (
                params.digests and params.ids is None):
            tag = listing.collection_tag(request.app.state.registry, params,
                                         **kind)
        if tag is not None and _etag_matches(
                request.headers.get("if-none-match"), tag):
            return Response(status_code=304, headers={"ETag": tag})
        if params.digests and params.ids is None:
            body = _kept_digests(tag)
            if body is not None:  # made with this tag: the same answer
                return Response(body, media_type=JSONL,
                                headers=dict(headers, ETag=tag))
        if params.ids is not None:
            tag, records = listing.dump_ids(
                request.app.state.registry, params, ids,
                metadata=params.return_metadata)
        else:
            tag, records = listing.dump(request.app.state.registry, params,
                                        **kind)
    except listing.BadQuery as e:
        return envelope(400, e.message)

    keep = [] if params.digests and params.ids is None else None

    def lines():
        # ~64 KB per chunk: one send (one HTTP chunk) per record costs the
        # server and the client more than the records themselves (13k
        # digest lines: 2.7 s one by one)
        batch, size = [], 0
        for rec in records:
            line = _line(rec)
            batch.append(line)
            size += len(line)
            if size >= 65536:
                chunk = "".join(batch).encode("utf-8")
                if keep is not None:
                    keep.append(chunk)
                yield chunk
                batch, size = [], 0
        chunk = "".join(batch).encode("utf-8")
        if keep is not None:
            # the whole answer, read from the indexes this tag names
            _keep_digests(tag, b"".join(keep + [chunk]))
        if chunk:
            yield chunk
    return StreamingResponse(lines(), media_type=JSONL,
                             headers=dict(headers, ETag=tag))


@router.get(
    "/dataset-urls/{id}", tags=["Dataset URLs"],
    responses={200: {"model": DatasetURLRespModel}},
    summary="Get a dataset URL by ID.")
def dataset_url(request: Request, id: str):
    """Get a dataset URL by ID (with its metadata records). A URL submitted
    and still waiting to be registered is ``processed: false`` without
    metadata."""
    n = _id(id)
    rec = None if n is None else listing.get_record(
        request.app.state.registry, n)
    if rec is not None:
        return JSONResponse(listing.api_record(rec, "content"))
    queue = request.app.state.submissions
    pending = queue.pending_record(n) if queue and n is not None else None
    if pending is not None:
        return JSONResponse(pending)
    return envelope(404)


@router.get(
    "/url-metadata/{url_metadata_id}",
    tags=["URL Metadata"], responses={200: {"model": URLMetadataModel}},
    summary="Get URL metadata by ID.")
def url_metadata(request: Request, url_metadata_id: str):
    """Get URL metadata by ID: one extractor's record of one dataset URL."""
    n = _id(url_metadata_id)
    found = None if n is None else listing.get_metadata(
        request.app.state.registry, n)
    if found is None:
        return envelope(404)
    return JSONResponse(listing.api_metadata(found[1]))


def _read_only(request: Request):
    """Handle the submission of a dataset URL: refused, this server is
    read-only (start it with ``--allow-submit`` to accept them)."""
    return envelope(405, READ_ONLY_DESCRIPTION,
                    headers={"Allow": READ_ONLY_ALLOW})


def _submit(request: Request,
            body: Annotated[DatasetURLSubmitModel, Body()]):
    """Handle the submission of a dataset URL, adding a new one or updating
    an existing one: 201 for a new URL, 202 for one already registered or
    waiting (registration runs in the background; an existing one is
    brought up to date)."""
    try:
        url = submissions.remote_url(body.url)
    except ValueError as e:
        return _unprocessable("url", str(e))
    registry = request.app.state.registry
    queue = request.app.state.submissions
    existing = listing._retrying(lambda: listing.search_mod.lookup(
        registry, submissions.candidate_ids(url)))
    newly = queue.add(url)
    if existing:
        rec = next(iter(existing.values()))
        return JSONResponse(listing.api_record(rec, "content"),
                            status_code=202)
    return JSONResponse(queue.pending_record_for(url),
                        status_code=201 if newly else 202)


# -- OPTIONS, as Flask answers them ---------------------------------------------------

def _options(allow: str):
    def options():
        return Response(status_code=200, headers={"Allow": allow})
    return options


def install(app: FastAPI) -> None:
    """Add the API, its error handlers and ``/docs`` to ``app``."""
    submit = _submit if app.state.allow_submit else _read_only
    router_ = APIRouter(prefix=listing.API_PREFIX,
                        responses=COMMON_RESPONSES)
    router_.add_api_route(
        "/dataset-urls", submit, methods=["POST"], tags=["Dataset URLs"],
        status_code=201 if app.state.allow_submit else 405,
        responses={201: {"model": DatasetURLRespModel},
                   202: {"model": DatasetURLRespModel},
                   405: {"model": HTTPExceptionResp}},
        summary="Handle the submission of a dataset URL, adding a new one "
                "or updating an existing one")
    list_allow = "GET, HEAD, OPTIONS" + (", POST" if app.state.allow_submit
                                         else "")
    for route in list(router.routes):
        # HEAD as Flask answers it (the GET's headers), kept out of the
        # OpenAPI description (one operation per path and method there)
        router_.add_api_route(route.path[len(listing.API_PREFIX):],
                              route.endpoint, methods=["HEAD"],
                              include_in_schema=False)
    for path, allow in (("/dataset-urls", list_allow),
                        ("/dataset-urls/all", "GET, HEAD, OPTIONS"),
                        ("/dataset-urls/{id}", "GET, HEAD, OPTIONS"),
                        ("/url-metadata/{url_metadata_id}",
                         "GET, HEAD, OPTIONS")):
        router_.add_api_route(path, _options(allow), methods=["OPTIONS"],
                              include_in_schema=False)
    app.include_router(router)
    app.include_router(router_)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)
    _install_docs(app)


def _install_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the installed ``swagger_ui_bundle``
    package (works offline; no CDN, no validator badge)."""
    app.mount("/docs/assets", StaticFiles(
        directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request):
        root = _root(request)
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None})


