"""Request helpers shared by the API and the web pages (``pages.py``).

One list request is one search (:func:`run_listing`): the API's parameters
(:class:`ListParams`, DataLad-Registry's ``QueryParams`` plus ours) become
one query tree -- the user's ``search`` text AND one term per filter -- and
:func:`datalad_registry_ext.search.search` answers the count, the page and
the statistics from the same open engines. Records leave in API shape
(:func:`api_record`): our record fields (a superset of upstream's) with the
stable ``id`` of :func:`datalad_registry_ext.records.record_id`, nulls left
out as upstream's ``exclude_none`` does.

For the pages::

    from datalad_registry_ext.server import listing
    params = listing.ListParams(search="haxby", page=2, per_page=20)
    try:
        found = listing.run_listing(request.app.state.registry, params)
    except listing.BadQuery as e:       # e.message: the caret message
        ...
    except listing.PageNotFound:         # a page past the last one
        ...
    found.total, found.hits, found.records, found.stats, found.pages

``found.hits`` are the search's own hits (with ``extractors``),
``found.records`` the same records in API shape. :func:`get_record` answers
one record by id. Nothing here touches the file system except through the
search engines: no parameter is ever used as a path.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlencode
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datalad_registry_ext import search as search_mod
from datalad_registry_ext.engine import EngineDamaged, EngineError
from datalad_registry_ext.query import And, QueryError, Term, parse
from datalad_registry_ext.records import (
    FIELDS,
    ID_BITS,
    INT_MAX,
    INT_MIN,
    LOCAL_SOURCE,
    ORDER_KEYS,
    metadata_id,
    record_id,
)
from datalad_registry_ext.stats import collection_stats

API_PREFIX = "/api/v2"
DATASET_URLS_PATH = f"{API_PREFIX}/dataset-urls"
URL_METADATA_PATH = f"{API_PREFIX}/url-metadata"
DEFAULT_PER_PAGE = 20
#: per_page above this is silently capped (as upstream's max_per_page)
MAX_PER_PAGE = 100
#: pages beyond this are refused (422): upstream has no bound, but an
#: offset must fit SQLite's 64-bit LIMIT
MAX_PAGE = 10 ** 9
#: ids per ``/all?ids=`` request: 200 ids of up to 15 digits keep the
#: request line near 3 KB, within what proxies pass (nginx: 8 KB)
MAX_IDS = 200

#: the numeric filters: parameter suffix -> record field
NUMBER_FILTERS = ("annex_key_count", "annexed_files_in_wt_count",
                  "annexed_files_in_wt_size", "git_objects_kb")

OrderKey = Enum("OrderKey", {k: k for k in ORDER_KEYS}, type=str)


class OrderDir(str, Enum):
    asc = "asc"
    desc = "desc"


class MetadataReturnOption(str, Enum):
    reference = "reference"
    content = "content"


def _int_field(description: str):
    # 64-bit, as upstream's columns: larger numbers are a 422, not a
    # comparison the engine cannot store
    return Field(None, ge=INT_MIN, le=INT_MAX, description=description)


class FilterParams(BaseModel):
    """The search and filters of a list request (DataLad-Registry's
    ``QueryParams`` without paging and ordering); all are ANDed."""

    # unknown parameters are ignored, as upstream's pydantic v1 model does
    model_config = ConfigDict(extra="ignore")

    search: Optional[str] = Field(
        None, description="A query in the query language (a superset of "
        "DataLad-Registry's search language, e.g. `haxby`, "
        "`metadata[bids_dataset]:\"\"`, `annexed_files_in_wt_size:>1GB`). "
        "Empty or whitespace-only is refused (422); an invalid query is a "
        "400 whose description shows where it fails.")
    url: Optional[str] = Field(
        None, description="Exact URL (compared case-insensitively). A URL "
        "with a scheme, or an absolute path.")
    ds_id: Optional[UUID] = Field(None, description="DataLad dataset id.")
    min_annex_key_count: Optional[int] = _int_field("annex_key_count >=")
    max_annex_key_count: Optional[int] = _int_field("annex_key_count <=")
    min_annexed_files_in_wt_count: Optional[int] = _int_field(
        "annexed_files_in_wt_count >=")
    max_annexed_files_in_wt_count: Optional[int] = _int_field(
        "annexed_files_in_wt_count <=")
    min_annexed_files_in_wt_size: Optional[int] = _int_field(
        "annexed_files_in_wt_size >= (bytes)")
    max_annexed_files_in_wt_size: Optional[int] = _int_field(
        "annexed_files_in_wt_size <= (bytes)")
    earliest_last_update: Optional[datetime] = Field(
        None, description="last_update_dt >= (ISO 8601 or a unix time; "
        "naive times are UTC)")
    latest_last_update: Optional[datetime] = Field(
        None, description="last_update_dt <=")
    min_git_objects_kb: Optional[int] = _int_field("git_objects_kb >= (KiB)")
    max_git_objects_kb: Optional[int] = _int_field("git_objects_kb <= (KiB)")
    processed: Optional[bool] = Field(
        None, description="Only records (not) processed. Answered by a scan "
        "of the matching records: slower than the other filters.")
    cache_path: Optional[str] = Field(
        None, description="Accepted for compatibility and matches nothing: "
        "records here have no clone cache path.")

    @field_validator("search")
    @classmethod
    def _not_blank(cls, v):
        if v is not None and not v.strip():
            raise ValueError("the search string must contain a non-space "
                             "character")
        return v

    @field_validator("url")
    @classmethod
    def _url_or_absolute_path(cls, v):
        if v is None:
            return v
        if "\x00" in v:
            raise ValueError("a URL cannot contain a NUL character")
        scheme, sep, rest = v.partition("://")
        if sep and scheme and rest and scheme[0].isalpha() and all(
                c.isalnum() or c in "+.-" for c in scheme):
            return v
        if v.startswith("/"):
            return v
        raise ValueError("must be a URL (scheme://...) or an absolute path")

    @field_validator("earliest_last_update", "latest_last_update")
    @classmethod
    def _utc(cls, v):
        if v is None:
            return v
        if v.tzinfo is None:
            v = v.replace(tzinfo=timezone.utc)
        try:
            return v.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValueError("the date is out of range") from None


class ListParams(FilterParams):
    """A list request's parameters: DataLad-Registry's ``QueryParams``,
    field for field, plus ``collection_stats`` (ours)."""

    return_metadata: Optional[MetadataReturnOption] = Field(
        None, description="Include metadata: `reference` (extractor names "
        "and links) or `content` (the metadata records).")
    page: int = Field(1, ge=1, le=MAX_PAGE, description="Page number, from 1.")
    per_page: int = Field(DEFAULT_PER_PAGE, ge=1, description=(
        f"Records per page; more than {MAX_PER_PAGE} is capped to "
        f"{MAX_PER_PAGE}."))
    order_by: OrderKey = Field(
        OrderKey.last_update_dt, description="Order key; records without a "
        "value come last in either direction, ties by URL.")
    order_dir: OrderDir = Field(OrderDir.desc)
    collection_stats: bool = Field(
        True, description="Include `collection_stats` (ours: `false` "
        "leaves them out, which is faster).")


class BadQuery(Exception):
    """The search text is not a valid query: 400, with the caret message."""

    def __init__(self, error: QueryError):
        super().__init__(str(error))
        self.message = str(error)
        self.error = error


class PageNotFound(Exception):
    """A page past the last one (page 1 always exists): 404, as upstream's
    ``paginate(error_out=True)``."""


# -- the query ----------------------------------------------------------------------

def _filter_terms(params: FilterParams) -> list:
    terms = []
    if params.url is not None:
        # built, not parsed: a URL needs no quoting this way
        terms.append(Term(value=params.url, field="url", op="eq"))
    if params.ds_id is not None:
        terms.append(parse(f"ds_id:={params.ds_id}"))
    for name in NUMBER_FILTERS:
        for prefix, op in (("min_", ">="), ("max_", "<=")):
            value = getattr(params, prefix + name)
            if value is not None:
                terms.append(parse(f"{name}:{op}{value}"))
    for pname, op in (("earliest_last_update", ">="),
                      ("latest_last_update", "<=")):
        value = getattr(params, pname)
        if value is not None:
            # microseconds: the interval the parser makes is that instant
            stamp = value.isoformat(timespec="microseconds")
            terms.append(parse(f"last_update_dt:{op}{stamp}"))
    return terms


def query_tree(params: FilterParams):
    """The query tree of ``params``: the search AND the filters. Raises
    :class:`BadQuery` for an invalid search text."""
    try:
        user = parse(params.search or "")
    except QueryError as e:
        raise BadQuery(e) from None
    terms = _filter_terms(params)
    if not terms:
        return user
    return And(tuple(([] if params.search is None else [user]) + terms))


def matches_nothing(params: FilterParams) -> bool:
    """Whether the request can match nothing whatever the records
    (``cache_path``: records here have none)."""
    return params.cache_path is not None


# -- records in API shape -------------------------------------------------------------

def _metadata_link(root_path: str, source, url: str, extractor: str) -> str:
    return (f"{root_path}{URL_METADATA_PATH}/"
            f"{metadata_id(source or LOCAL_SOURCE, url, extractor)}")


def _without_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def api_record(rec: dict, metadata: str | None = None, *,
               root_path: str = "") -> dict:
    """``rec`` (a search hit or a full record) in API shape: ``url``,
    ``id``, the other record fields that are not null, and ``metadata``
    when asked (``"reference"``: name and link per extractor, plus the
    versions; ``"content"``: the metadata records)."""
    url, source = rec["url"], rec.get("source") or LOCAL_SOURCE
    out = {"url": url, "id": record_id(source, url)}
    for name in FIELDS:
        if name not in ("url", "metadata") and rec.get(name) is not None:
            out[name] = rec[name]
    if metadata == "content":
        out["metadata"] = [_without_none(m) for m in rec.get("metadata") or []
                           if isinstance(m, dict)]
    elif metadata == "reference":
        refs = rec.get("metadata")
        if refs is None:  # a light record: its extractor names
            refs = [{"extractor_name": n} for n in rec.get("extractors") or []]
        out["metadata"] = [
            dict(_without_none(m), link=_metadata_link(
                root_path, source, url, m["extractor_name"]))
            for m in refs if isinstance(m, dict)
            and isinstance(m.get("extractor_name"), str)]
    return out


def api_metadata(meta: dict) -> dict:
    """A metadata record as ``/api/v2/url-metadata/<id>`` returns it."""
    return dict(meta)


# -- running a list request -------------------------------------------------------------

@dataclass
class Listing:
    total: int
    hits: list[dict]        # the search's hits (see search.search)
    records: list[dict]     # the same, in API shape
    stats: dict | None
    page: int
    per_page: int           # as applied (capped)
    pages: int              # how many pages there are (1 when empty)
    params: ListParams = field(repr=False, default=None)


def _retrying(fn):
    """``fn()``, again when the engine it used was replaced meanwhile.

    A search opens each index's engine once per process; when another
    process changes the index, the next search replaces (and closes) the
    engine, and a search still running on the old one in another thread
    fails. Its answer would have been the old state; the new engine gives
    the current one.
    """
    for attempt in range(3):
        try:
            return fn()
        except EngineDamaged:
            raise
        except (EngineError, sqlite3.ProgrammingError):
            if attempt == 2:
                raise


def run_listing(registry: Path, params: ListParams, *,
                root_path: str = "") -> Listing:
    """Answer one list request with one search. Raises :class:`BadQuery`,
    :class:`PageNotFound`, and the search's storage errors."""
    tree = query_tree(params)
    per_page = min(params.per_page, MAX_PER_PAGE)
    offset = (params.page - 1) * per_page
    metadata = params.return_metadata.value if params.return_metadata else None
    order_by, order_dir = params.order_by.value, params.order_dir.value
    want_stats = params.collection_stats

    if matches_nothing(params):
        total, hits = 0, []
        stats = collection_stats([]) if want_stats else None
    elif params.processed is None:
        try:
            found = _retrying(lambda: search_mod.search(
                registry, params.search, tree=tree, order_by=order_by,
                order_dir=order_dir, offset=offset, limit=per_page,
                metadata=metadata, stats=want_stats))
        except QueryError as e:  # a regular expression ran out of time
            raise BadQuery(e) from None
        total, hits, stats = found.total, found.hits, found.stats
    else:
        total, hits, stats = _processed_listing(
            registry, params, tree, offset, per_page, metadata)

    pages = max(1, math.ceil(total / per_page))
    if not hits and params.page != 1:
        raise PageNotFound(f"page {params.page} is past the last page "
                           f"({pages})")
    return Listing(
        total=total, hits=hits, stats=stats, page=params.page,
        per_page=per_page, pages=pages, params=params,
        records=[api_record(h, metadata, root_path=root_path) for h in hits])


def _processed_listing(registry, params, tree, offset, per_page, metadata):
    """The ``processed`` filter, which the query language has no term for:
    every matching light record is fetched and filtered here."""
    try:
        found = _retrying(lambda: search_mod.search(
            registry, params.search, tree=tree,
            order_by=params.order_by.value, order_dir=params.order_dir.value))
    except QueryError as e:
        raise BadQuery(e) from None
    kept = [h for h in found.hits
            if bool(h.get("processed")) == params.processed]
    page = kept[offset:offset + per_page]
    if metadata:
        full = search_mod.lookup(registry, [api_record(h)["id"] for h in page])
        for h in page:
            rec = full.get(api_record(h)["id"]) or {}
            h["metadata"] = rec.get("metadata") or []
    stats = collection_stats(kept, search_mod.max_failures()) \
        if params.collection_stats else None
    return len(kept), page, stats


def page_links(params: ListParams, total_pages: int, *, root_path: str = "",
               path: str = DATASET_URLS_PATH) -> dict:
    """``prev_pg``, ``next_pg``, ``first_pg``, ``last_pg`` as upstream
    builds them (``url_for(".dataset_urls", **base_qry, page=N)``):
    relative URLs carrying every parameter that is not None except
    ``page``, in the model's field order, values as ``str()`` gives them,
    then ``page``; prev/next only where that page exists."""
    base = []
    for name in ListParams.model_fields:
        if name == "page":
            continue
        value = getattr(params, name)
        if value is None or (name == "collection_stats" and value):
            continue  # ours, and only when it differs from the default
        if isinstance(value, Enum):
            value = value.value
        base.append((name, str(value)))

    def link(n: int) -> str:
        # werkzeug's url encoding (its safe characters)
        return f"{root_path}{path}?" + urlencode(base + [("page", str(n))],
                                                 safe="!$'()*,/:;?@")

    links = {"first_pg": link(1), "last_pg": link(total_pages)}
    if params.page > 1:
        links["prev_pg"] = link(params.page - 1)
    if params.page < total_pages:
        links["next_pg"] = link(params.page + 1)
    return links


def page_body(found: Listing, *, root_path: str = "") -> dict:
    """The ``DatasetURLPage`` body of a listing (key order as upstream's
    model; nulls left out)."""
    links = page_links(found.params, found.pages, root_path=root_path)
    body = {"cur_pg_num": found.page}
    for key in ("prev_pg", "next_pg", "first_pg", "last_pg"):
        if key in links:
            body[key] = links[key]
    body["dataset_urls"] = found.records
    if found.stats is not None:
        body["collection_stats"] = found.stats
    return body


# -- one record, every record ------------------------------------------------------------

def get_record(registry: Path, record_id_: int) -> dict | None:
    """The full record with this API id, or None."""
    return _retrying(
        lambda: search_mod.lookup(registry, [record_id_])).get(record_id_)


def get_metadata(registry: Path, metadata_id_: int) -> tuple | None:
    """``(light record, metadata record)`` of this metadata id, or None."""
    return _retrying(lambda: search_mod.metadata_lookup(
        registry, [metadata_id_])).get(metadata_id_)


def iter_records(registry: Path, params: FilterParams, *,
                 metadata: bool = False) -> Iterator[dict]:
    """Every record matching ``params`` in API shape (metadata content when
    asked), as a stream: each index's records in URL order, own records
    first, fetched a batch at a time. Raises :class:`BadQuery` before
    yielding anything."""
    return dump(registry, params, metadata=metadata)[1]


def _collection_tag(found, params: FilterParams, kind: str) -> str:
    """An ETag of ``/all``'s answer: the fingerprints of the indexes it is
    read from (each changes whenever its index file is rewritten), the
    request's parameters and the kind of answer. Equal tags, equal
    answers; a rewrite that changed nothing gives a new tag, and the
    client's digests then find no change."""
    state = [kind, params.model_dump(mode="json", exclude_none=True),
             [(Path(e.path).name, e.fingerprint) for e in found]]
    return '"' + hashlib.sha1(json.dumps(state, sort_keys=True).encode(
        "utf-8", "surrogatepass")).hexdigest() + '"'


def collection_tag(registry: Path, params: FilterParams, *,
                   metadata: bool = False, digests: bool = False) -> str:
    """The ETag :func:`dump` would answer, without running the query."""
    query_tree(params)
    kind = "digests" if digests else ("content" if metadata else "plain")
    if matches_nothing(params):
        return _collection_tag([], params, kind)
    search_mod.require_registry(Path(registry))
    return _collection_tag(search_mod.engines(Path(registry)), params, kind)


def parse_ids(text: str) -> list[int]:
    """The ids of ``/all?ids=1,2,3``: each once, in the order given.
    ValueError when there are none, more than :data:`MAX_IDS`, or one is
    not a positive decimal number of at most 20 digits; an id outside our
    ids' range is accepted (it is unknown: left out of the answer, as
    ``GET /dataset-urls/{id}`` answers it 404)."""
    parts = [p.strip() for p in text.split(",")]
    if parts == [""]:
        raise ValueError("give at least one id")
    ids = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 20:
            raise ValueError(f"{part[:30]!r} is not an id (a positive "
                             "decimal number)")
        ids.append(int(part))
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids per request "
                         f"({len(ids)} given)")
    return ids


def dump_ids(registry: Path, params: FilterParams, ids: list[int], *,
             metadata: bool = False) -> tuple[str, Iterator[dict]]:
    """``(ETag, records)`` of ``/all?ids=``: the records with these ids in
    API shape, in the order of ``ids``, unknown ones left out."""
    kind = "content" if metadata else "plain"
    search_mod.require_registry(Path(registry))
    tag = _collection_tag(search_mod.engines(Path(registry)), params, kind)
    # an id beyond our range is unknown, and 20 digits overflow SQLite
    wanted = [i for i in ids if 0 < i <= 1 << ID_BITS]
    found = _retrying(lambda: search_mod.lookup(registry, wanted))
    return tag, (api_record(found[i], "content" if metadata else None)
                 for i in ids if i in found)


def dump(registry: Path, params: FilterParams, *, metadata: bool = False,
         digests: bool = False) -> tuple[str, Iterator[dict]]:
    """``(ETag, records)`` of ``/all``: as :func:`iter_records`, or with
    ``digests`` one ``{"id", "url", "digest"}`` per record instead, the
    digest a hash of the record as stored (it changes whenever anything of
    the record does, metadata included) -- what an incremental sync
    compares, without reading or parsing the records."""
    tree = query_tree(params)
    kind = "digests" if digests else ("content" if metadata else "plain")
    if matches_nothing(params):
        return _collection_tag([], params, kind), iter(())
    search_mod.require_registry(Path(registry))
    found = search_mod.engines(Path(registry))
    tag = _collection_tag(found, params, kind)
    # each engine finds its matches (the generator's first step) before the
    # response starts: a query error or time-out is still an error status,
    # not a cut stream
    streams = []
    for eng in found:
        stream = eng.iter_docs(tree, "url", "asc")
        try:
            first = next(stream, None)
        except QueryError as e:
            raise BadQuery(e) from None
        if first is not None:
            streams.append((first, stream))

    def generate():
        for first, stream in streams:
            for id_, url, full in itertools.chain([first], stream):
                if digests and params.processed is None:
                    # no parsing: the stored text is the record
                    if url is None:
                        url = json.loads(full)["url"]
                    yield {"id": id_, "url": url, "digest": hashlib.sha1(
                        full.encode("utf-8", "surrogatepass")).hexdigest()}
                    continue
                rec = json.loads(full)
                if params.processed is not None and \
                        bool(rec.get("processed")) != params.processed:
                    continue
                if digests:
                    yield {"id": id_, "url": rec["url"],
                           "digest": hashlib.sha1(full.encode(
                               "utf-8", "surrogatepass")).hexdigest()}
                else:
                    yield api_record(rec, "content" if metadata else None)
    return tag, generate()
