"""The web pages of ``registry-serve``: server-rendered HTML over the search.

Routes (an :class:`fastapi.APIRouter`, included by :func:`create_app`):

- ``/`` -- redirects to ``/overview/``;
- ``/overview/?query=&sort=&page=&per_page=`` -- the search box (with the
  query language's help and examples), the results table with sortable
  columns, pagination and the collection statistics, as DataLad-Registry's
  overview page has them. ``sort`` takes upstream's names (``update-desc``,
  ``keys-asc``, ``url-asc``, ``<order key>-asc|desc``); an invalid query is
  shown with its caret message (status 400);
- ``/records/{id}`` -- one record: its facts, metadata per extractor, its
  subdatasets (linked when registered), the records using it as a
  subdataset and the other copies of the same dataset;
- ``/datasets/{ds_id}`` -- the landing page of a dataset id: every
  registered copy; a list of records in API shape for
  ``Accept: application/json``.

The pages work without JavaScript (a small script only adds a keyboard
shortcut) and load nothing from other hosts. Every value is escaped by
Jinja2's autoescaping; no page raises: a bad request or a broken registry is
shown as a page with its message (4xx, or 503 for the registry).

Each page costs a fixed number of searches: the overview one (the page and
its statistics), a record page one lookup and a few exact-match searches.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from datalad_registry_ext import __version__
from datalad_registry_ext import search as search_mod
from datalad_registry_ext.engine import EngineDamaged, EngineError
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.query import QueryError
from datalad_registry_ext.query.fields import KNOWN_FIELDS
from datalad_registry_ext.query.parser import MAX_QUERY_LENGTH
from datalad_registry_ext.records import (
    CATALOGUE,
    ID_BITS,
    LOCAL_SOURCE,
    ORDER_KEYS,
    canonical_url,
    record_id,
)
from datalad_registry_ext.server import listing

lgr = logging.getLogger("datalad.registry_ext.server.pages")

TEMPLATES_DIR = Path(__file__).parent / "templates"

router = APIRouter(include_in_schema=False)

# -- sorting and paging ---------------------------------------------------------

#: upstream's sort names (DataLad-Registry's ``_SORT_ATTRS``) -> order key;
#: the order keys themselves are accepted too (``annex_key_count-asc``)
SORT_NAMES = {"url": "url", "keys": "annex_key_count",
              "annexed_files_in_wt_count": "annexed_files_in_wt_count",
              "annexed_files_in_wt_size": "annexed_files_in_wt_size",
              "update": "last_update_dt", "git_objects_kb": "git_objects_kb"}
SORT_NAME_OF = {key: name for name, key in SORT_NAMES.items()}
DEFAULT_SORT = "update-desc"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
PER_PAGE_CHOICES = (20, 50, 100)
#: how many of the records using a dataset as a subdataset a record page lists
USED_BY_SHOWN = 100

#: the overview's columns: (field, header, sort name or None, description)
COLUMNS = (
    ("url", "URL", "url", "the repository URL; opens the record"),
    ("ds_id", "Dataset", None, "DataLad dataset id; opens the dataset's "
     "page with all its copies"),
    ("head_describe", "Commit", None, "git describe --tags --always of HEAD"),
    ("annex_key_count", "Annex keys", "keys",
     "keys git-annex knows to be on the remote"),
    ("annexed_files_in_wt_count", "Annexed files",
     "annexed_files_in_wt_count", "number of annexed files in the working tree"),
    ("annexed_files_in_wt_size", "Annexed size", "annexed_files_in_wt_size",
     "size of the annexed files in the working tree"),
    ("last_update_dt", "Last update", "update", "when the facts last changed"),
    ("git_objects_kb", ".git/objects", "git_objects_kb",
     "size of .git/objects"),
    ("extractors", "Metadata", None, "extractors with metadata"),
    ("source", "Source", None, "local, or the file or URL it was synced from"),
)

#: the choices of the sort form (shown on narrow screens, where the table
#: has no header row): (sort, label)
SORT_CHOICES = tuple(
    (f"{name}-{direction}", f"{header}, {label}")
    for _, header, name, _ in COLUMNS if name
    for direction, label in (("desc", "descending"), ("asc", "ascending")))

#: examples of the help box: (query, what it finds); from the query
#: language's documentation
EXAMPLES = (
    ("haxby", "a word anywhere in the default fields"),
    ('"James Haxby"', "a quoted string (may hold spaces)"),
    ("url:github", "in one field (substring)"),
    ('metadata[bids_dataset]:""', "has any bids_dataset metadata"),
    ("metadata[bids_dataset].Authors:haxby", "inside one metadata key"),
    ('head_describe:~"^v?1\\."', "regular expression"),
    ("annexed_files_in_wt_size:>10GB", "comparison, with units"),
    ("last_update_dt:>=2024-05", "date comparison"),
    ("subds_url:OpenNeuroDatasets", "among the subdatasets"),
    ("haxby (url:github OR url:gin) NOT bids", "boolean combination"),
    ("n_failed_chks:>0", "registry-update's last check failed"),
)

#: the fields of the help box: the catalogue's in its order, then the
#: query language's own (subdatasets)
QUERY_FIELDS = tuple(f.name for f in CATALOGUE if f.search)
QUERY_FIELDS += tuple(sorted(set(KNOWN_FIELDS) - set(QUERY_FIELDS)))

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: the longest query one lookup search sends (the parser takes
#: MAX_QUERY_LENGTH characters)
_MAX_QUERY = MAX_QUERY_LENGTH - 96


def parse_sort(sort: str | None) -> tuple[str, str, str, bool]:
    """``(sort name, order key, direction, known)``; an unknown sort is the
    default (as upstream), ``known`` says whether it was."""
    name, _, direction = (sort or "").rpartition("-")
    key = SORT_NAMES.get(name) or (name if name in ORDER_KEYS else None)
    if key is None or direction not in ("asc", "desc"):
        return (*parse_sort(DEFAULT_SORT)[:3], not sort)
    return f"{SORT_NAME_OF[key]}-{direction}", key, direction, True


def _positive(value: str | None, default: int, what: str,
              most: int = listing.MAX_PAGE) -> int:
    """A positive whole number parameter, at most ``most``."""
    if value is None or value == "":
        return default
    text = value.strip()
    number = int(text) if text.isascii() and text.isdigit() \
        and len(text) <= 20 else 0
    if len(text) > 20 or number > most:
        raise _BadRequest(f"{what} must be at most {most:,}")
    if number < 1:
        raise _BadRequest(f"{what} must be a positive whole number, "
                          f"not {value!r}")
    return number


class _BadRequest(Exception):
    pass


# -- formatting -------------------------------------------------------------------

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB")


def _number(n):
    """``n`` when it is a number (not a bool), else None."""
    return n if isinstance(n, (int, float)) and not isinstance(n, bool) \
        else None


def human_size(n) -> str:
    """Bytes in decimal units (as upstream's ``filesizeformat``); "" for
    anything but a number."""
    n = _number(n)
    if n is None:
        return ""
    n = int(n)
    if abs(n) < 1000:
        return f"{n} B"
    exp = min(int(math.log(abs(n), 1000)), len(_UNITS) - 1)
    value = n / 1000 ** exp
    if round(value, 1) >= 1000 and exp < len(_UNITS) - 1:
        exp += 1
        value = n / 1000 ** exp
    return f"{value:.1f} {_UNITS[exp]}"


def intcomma(n) -> str:
    n = _number(n)
    return "" if n is None else f"{n:,}"


def parse_date(text) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def human_date(text, seconds: bool = False) -> str:
    """``2024-05-30 13:09 UTC``; the text as it is when it is no date."""
    dt = parse_date(text)
    if dt is None:
        return text if isinstance(text, str) else ""
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds
                       else "%Y-%m-%d %H:%M UTC")


def human_day(text) -> str:
    """The UTC day of a date (``2024-05-30``)."""
    dt = parse_date(text)
    if dt is None:
        return text if isinstance(text, str) else ""
    return dt.strftime("%Y-%m-%d")


def pretty_json(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False,
                      default=str)


def source_name(source) -> str:
    """A short name of a source: the last part of its path or URL."""
    if not source or source == LOCAL_SOURCE:
        return source or ""
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def is_uuid(value) -> bool:
    return isinstance(value, str) and bool(_UUID.fullmatch(value))


def rid_of(rec: dict) -> int:
    return record_id(rec.get("source") or LOCAL_SOURCE, rec["url"])


def _plain_doc(doc: str) -> str:
    return doc.replace("``", "")


def facts(rec: dict, rid: int) -> list[dict]:
    """The facts of a record for its page: ``{name, label, value, raw,
    doc}`` for every field of the catalogue but the ones the page shows in
    sections of their own, in catalogue order, the id first."""
    out = [dict(name="id", label="Id", value=str(rid), raw=None,
                doc="the API v2 id (from the source and URL)")]
    for f in CATALOGUE:
        if f.name in _OWN_SECTIONS:
            continue
        v = rec.get(f.name)
        raw = None
        if v is None:
            value = "unknown"
        elif f.size_unit and isinstance(v, int) and not isinstance(v, bool):
            value = human_size(v * f.size_unit)
            raw = f"{intcomma(v)} {'bytes' if f.size_unit == 1 else 'KiB'}"
        elif f.kind == "int" and isinstance(v, int):
            value = intcomma(v)
        elif f.kind == "date":
            value = human_date(v, seconds=True)
            raw = v if parse_date(v) else None
        elif f.kind == "bool":
            value = "yes" if v else "no"
        elif isinstance(v, (dict, list)):
            value = json.dumps(v, ensure_ascii=False)
        else:
            value = str(v)
        out.append(dict(name=f.name, label=f.name, value=value, raw=raw,
                        doc=_plain_doc(f.doc), kind=f.kind))
    return out


#: fields the record page shows in sections of their own
_OWN_SECTIONS = ("url", "metadata", "subdatasets", "extraction_failures",
                 "branches", "tags")


def branches_of(rec: dict) -> list[tuple]:
    """``[(name, hexsha, last commit date)]`` of a record's branches."""
    branches = rec.get("branches")
    if not isinstance(branches, dict):
        return []
    out = []
    for name, info in branches.items():
        info = info if isinstance(info, dict) else {}
        out.append((str(name), info.get("hexsha"), info.get("last_commit_dt")))
    return out


def tags_of(rec: dict) -> list[tuple]:
    tags = rec.get("tags")
    if not isinstance(tags, list):
        return []
    return [(t.get("name"), t.get("hexsha")) if isinstance(t, dict)
            else (str(t), None) for t in tags]


# -- templates ----------------------------------------------------------------------

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES_DIR)),
    autoescape=select_autoescape(("html",), default_for_string=True),
    trim_blocks=True, lstrip_blocks=True, auto_reload=False)
_env.filters.update(human_size=human_size, intcomma=intcomma,
                    human_date=human_date, human_day=human_day, pretty_json=pretty_json,
                    source_name=source_name)
_env.globals.update(is_uuid=is_uuid, rid_of=rid_of, version=__version__)


def root_path(request: Request) -> str:
    """Where the application is mounted (a reverse proxy's prefix), for
    the pages' links; "" at the top."""
    return (request.scope.get("root_path") or "").rstrip("/")


def render(request: Request, template: str, status: int = 200,
           **context) -> HTMLResponse:
    """A page from ``template`` (Jinja2, autoescaped)."""
    context.setdefault("title", "DataLad Registry")
    context.setdefault("root", root_path(request))
    html = _env.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status)


def error_page(request: Request, status: int, title: str,
               message: str) -> HTMLResponse:
    """A normal page telling what went wrong (the app may use it for its
    own HTML errors too)."""
    return render(request, "error.html", status=status,
                  title=f"{title} - DataLad Registry", heading=title,
                  message=message)


def error_response(request: Request, status: int,
                   message: str | None = None) -> HTMLResponse:
    """The HTML page of an HTTP error outside the API (the application's
    exception handler calls it): never a traceback. A client that prefers
    JSON gets the API's envelope."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status == 404:
        text = f"There is no page at {request.url.path}."
    elif status == 405:
        text = f"{request.method} is not allowed at {request.url.path}."
    elif status >= 500:
        text = "Something went wrong on the server; the log has the details."
    else:
        text = message if message and message != phrase else phrase
    if wants_json(request):
        return _json_error(status, phrase, text)
    return error_page(request, status, phrase, text)


def _registry(request: Request) -> Path:
    return Path(request.app.state.registry)


def _unavailable(request: Request, e: Exception) -> HTMLResponse:
    lgr.warning("page %s failed: %s", request.url.path, e)
    return error_page(request, 503, "Registry unavailable",
                      f"The registry cannot be read: {e}")


_REGISTRY_ERRORS = (RegistryExtError, OSError)


# -- searches the pages run -----------------------------------------------------------

def _quote(value: str) -> str:
    """``value`` as a quoted string of the query language."""
    return '"' + value.replace('"', '\\"') + '"'


def _any_of(field: str, values, limit: int = _MAX_QUERY):
    """Queries ``field:=v1 OR field:=v2 ...``, each short enough for the
    parser. Values the language cannot write exactly (a backslash before a
    quote, a line break) are left out."""
    chunk: list[str] = []
    size = 0
    for value in dict.fromkeys(values):
        if not value or "\\" in value or any(c in value for c in "\r\n\0"):
            continue
        term = f"{field}:={_quote(value)}"
        if chunk and size + len(term) + 4 > limit:
            yield " OR ".join(chunk)
            chunk, size = [], 0
        chunk.append(term)
        size += len(term) + 4
    if chunk:
        yield " OR ".join(chunk)


def _find_all(registry: Path, field: str, values, order_by="url",
              order_dir="asc") -> list[dict]:
    """Light records whose ``field`` equals one of ``values`` exactly
    (case-insensitively), one search per chunk of values."""
    hits = []
    for query in _any_of(field, values):
        try:
            hits += _retrying(lambda: search_mod.search(
                registry, query, order_by=order_by, order_dir=order_dir)).hits
        except QueryError as e:  # a value the language cannot take
            lgr.debug("skipped a lookup query: %s", e)
    return hits


def _canonical(url) -> str | None:
    try:
        return canonical_url(url) if isinstance(url, str) else None
    except ValueError:
        return None


def _url_variants(url: str) -> list[str]:
    """Other forms under which a repository may have been registered
    (canonical, with and without ``.git``)."""
    canon = _canonical(url)
    if not canon:
        return []
    forms = [canon]
    if "://" in canon or ":" in canon:
        forms.append(canon + ".git")
    return [f for f in forms if f != url]


def _subdataset_links(registry: Path, subdatasets: list) -> list[dict]:
    """Each subdataset with ``record`` (the registered record of its URL,
    or None) and ``registered`` (whether a record has its dataset id).

    Few searches: the URLs as written, then other forms of the URLs not
    found, then the dataset ids that no URL match has already shown to be
    registered."""
    subs = []
    for s in subdatasets:
        if isinstance(s, dict):
            url, ds_id = s.get("url"), s.get("ds_id")
            subs.append({"path": s.get("path"),
                         "url": url if isinstance(url, str) else None,
                         "ds_id": ds_id if isinstance(ds_id, str) else None,
                         "record": None, "registered": False})
    by_url: dict[str, dict] = {}

    def match(urls):
        for hit in _find_all(registry, "url", urls):
            by_url.setdefault(_canonical(hit["url"]) or hit["url"], hit)
        for sd in subs:
            if sd["url"] and sd["record"] is None:
                sd["record"] = by_url.get(_canonical(sd["url"]) or sd["url"])

    match([sd["url"] for sd in subs if sd["url"]])
    match([v for sd in subs if sd["url"] and sd["record"] is None
           for v in _url_variants(sd["url"])])
    for sd in subs:
        rec = sd["record"]
        sd["registered"] = bool(rec and is_uuid(sd["ds_id"]) and (
            rec.get("ds_id") or "").lower() == sd["ds_id"].lower())
    wanted = [sd["ds_id"] for sd in subs
              if is_uuid(sd["ds_id"]) and not sd["registered"]]
    found = {(h.get("ds_id") or "").lower()
             for h in _find_all(registry, "ds_id", wanted)}
    for sd in subs:
        if is_uuid(sd["ds_id"]) and sd["ds_id"].lower() in found:
            sd["registered"] = True
    return subs


# -- content negotiation -----------------------------------------------------------

def wants_json(request: Request) -> bool:
    """True when the Accept header prefers JSON to HTML."""
    accept = request.headers.get("accept", "")
    best = {"json": -1.0, "html": -1.0}
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for p in params:
            if p.replace(" ", "").startswith("q="):
                try:
                    q = float(p.split("=", 1)[1])
                except ValueError:
                    q = 0.0
        if not q > 0:  # q=0: not acceptable
            continue
        media = media.lower()
        kind = ("json" if media in ("application/json", "application/*")
                or media.endswith("+json")
                else "html" if media in ("text/html", "application/xhtml+xml",
                                         "text/*", "*/*") else None)
        if kind:
            # an exact type counts before a wildcard of equal q
            weight = q + (0.0001 if "*" not in media else 0)
            best[kind] = max(best[kind], weight)
    return best["json"] > best["html"]


def _json_error(status: int, name: str, description: str) -> JSONResponse:
    return JSONResponse({"code": status, "name": name,
                         "description": description}, status_code=status)


def _retrying(fn):
    """``fn()``, again when an engine it used was replaced meanwhile by
    another thread's search (the index changed): as the API does."""
    for attempt in range(3):
        try:
            return fn()
        except EngineDamaged:
            raise
        except (EngineError, sqlite3.ProgrammingError):
            if attempt == 2:
                raise


# -- routes -------------------------------------------------------------------------------

@router.api_route("/", methods=["GET", "HEAD"],
                  response_class=RedirectResponse)
def root(request: Request) -> RedirectResponse:
    return RedirectResponse(f"{root_path(request)}/overview/", status_code=302)


@router.api_route("/overview", methods=["GET", "HEAD"],
                  response_class=RedirectResponse)
def overview_no_slash(request: Request) -> RedirectResponse:
    target = f"{root_path(request)}/overview/"
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(target, status_code=308)


@router.api_route("/overview/", methods=["GET", "HEAD"],
                  response_class=HTMLResponse)
def overview(request: Request) -> Response:
    params = request.query_params
    query = params.get("query") or ""
    sort, key, direction, known_sort = parse_sort(params.get("sort"))
    notices = []
    if not known_sort:
        notices.append(f"Unknown sort {params.get('sort')!r}: sorted by "
                       "last update, newest first.")
    status, error = 200, None
    try:
        page = _positive(params.get("page"), 1, "page")
        # per_page: capped at 100, as upstream
        per_page = min(_positive(params.get("per_page"), DEFAULT_PER_PAGE,
                                 "per_page", most=10 ** 20), MAX_PER_PAGE)
    except _BadRequest as e:
        page, per_page, status, error = 1, DEFAULT_PER_PAGE, 400, str(e)
    link = _overview_link(root_path(request), query, sort, per_page)
    context = dict(
        query=query, sort=sort, order_key=key, direction=direction,
        page=page, per_page=per_page, link=link, examples=EXAMPLES,
        query_fields=QUERY_FIELDS,
        headers=_headers(key, direction, link),
        per_page_choices=PER_PAGE_CHOICES, sort_choices=SORT_CHOICES,
        notices=notices,
        title=(f"{query} - DataLad Registry" if query.strip()
               else "DataLad Registry"))
    if error:
        return render(request, "overview.html", status=status, error=error,
                      **context)
    try:
        result = _retrying(lambda: search_mod.search(
            _registry(request), query, order_by=key, order_dir=direction,
            offset=(page - 1) * per_page, limit=per_page, stats=True))
    except QueryError as e:
        return render(request, "overview.html", status=400,
                      query_error=str(e), **context)
    except _REGISTRY_ERRORS as e:
        lgr.warning("overview failed: %s", e)
        return render(request, "overview.html", status=503,
                      error=f"The registry cannot be read: {e}", **context)
    pages = max(1, -(-result.total // per_page))
    if page > pages:
        status = 404
        error = (f"There is no page {page}: the results fill {pages} "
                 f"page{'s' if pages > 1 else ''}.")
    first = (page - 1) * per_page + 1 if result.hits else 0
    return render(request, "overview.html", status=status, error=error,
                  result=result, pages=pages, first=first,
                  last=(page - 1) * per_page + len(result.hits),
                  max_failures=search_mod.max_failures(), **context)


def _headers(key: str, direction: str, link) -> list[dict]:
    """The overview's column headers: a sortable one links to its sort
    (descending first; ascending when it is the current descending sort)."""
    out = []
    for field, header, name, description in COLUMNS:
        col = dict(field=field, header=header, description=description,
                   href=None, aria_sort=None, arrow="")
        if name:
            current = SORT_NAMES[name] == key
            flip = "asc" if current and direction == "desc" else "desc"
            col["href"] = link(sort=f"{name}-{flip}")
            if current:
                col["aria_sort"] = ("descending" if direction == "desc"
                                    else "ascending")
                col["arrow"] = "\u25bc" if direction == "desc" else "\u25b2"
        out.append(col)
    return out


def _overview_link(root: str, query: str, sort: str, per_page: int):
    """``link(**changes)``: an overview URL with the current parameters
    (defaults left out) and ``changes`` applied; the page is 1 unless
    given."""
    def link(**changes) -> str:
        params = {"query": query, "sort": sort, "per_page": per_page,
                  "page": 1}
        params.update(changes)
        kept = {k: v for k, v in params.items()
                if v not in ("", None) and not (k == "page" and v == 1)
                and not (k == "sort" and v == DEFAULT_SORT)
                and not (k == "per_page" and v == DEFAULT_PER_PAGE)}
        return f"{root}/overview/" + ("?" + urlencode(kept) if kept else "")
    return link


def _record_id(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        return None
    number = int(text)
    return number if 0 < number <= 2 ** ID_BITS else None


@router.api_route("/records/{rid:path}", methods=["GET", "HEAD"],
                  response_class=HTMLResponse)
def record_page(request: Request, rid: str) -> Response:
    number = _record_id(rid)
    registry = _registry(request)
    try:
        rec = listing.get_record(registry, number) \
            if number is not None else None
        if rec is None:
            return error_page(request, 404, "No such record",
                              f"No record has the id {rid}.")
        ds_id = rec.get("ds_id")
        copies = used_by = []
        used_by_total = 0
        if is_uuid(ds_id):
            copies = [h for h in _find_all(registry, "ds_id", [ds_id])
                      if rid_of(h) != number]
            used = _retrying(lambda: search_mod.search(
                registry, f"subds_id:={ds_id}", order_by="url",
                order_dir="asc", limit=USED_BY_SHOWN))
            used_by, used_by_total = used.hits, used.total
        subdatasets = _subdataset_links(registry, rec.get("subdatasets") or [])
    except _REGISTRY_ERRORS as e:
        return _unavailable(request, e)
    metadata = [m for m in rec.get("metadata") or [] if isinstance(m, dict)]
    failures = rec.get("extraction_failures")
    return render(request, "record.html", rec=rec, rid=number,
                  title=f"{rec['url']} - DataLad Registry",
                  facts=facts(rec, number), branches=branches_of(rec),
                  tags=tags_of(rec),
                  metadata=metadata,
                  failures=failures if isinstance(failures, dict) else {},
                  subdatasets=subdatasets, copies=copies, used_by=used_by,
                  used_by_total=used_by_total,
                  used_by_query=f"subds_id:={ds_id}" if is_uuid(ds_id) else "")


@router.api_route("/datasets/{ds_id:path}", methods=["GET", "HEAD"],
                  response_class=HTMLResponse)
def dataset_page(request: Request, ds_id: str) -> Response:
    as_json = wants_json(request)
    registry = _registry(request)
    copies = []
    try:
        if is_uuid(ds_id):
            copies = _find_all(registry, "ds_id", [ds_id])
    except _REGISTRY_ERRORS as e:
        if as_json:
            return _json_error(503, "Service Unavailable",
                               f"The registry cannot be read: {e}")
        return _unavailable(request, e)
    if not copies:
        message = (f"No registered dataset has the id {ds_id}."
                   if is_uuid(ds_id) else
                   f"{ds_id!r} is not a dataset id (a UUID).")
        if as_json:
            return _json_error(404, "Not Found", message)
        return error_page(request, 404, "No such dataset", message)
    if as_json:
        return JSONResponse([listing.api_record(h, "reference")
                             for h in copies])
    return render(request, "dataset.html", ds_id=ds_id, copies=copies,
                  title=f"Dataset {ds_id} - DataLad Registry")
