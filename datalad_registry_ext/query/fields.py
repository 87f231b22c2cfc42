"""The searchable fields of a record, and their precomputation.

A *record* is a plain dict in DataLad-Registry's API v2 shape (see
``datalad_registry_ext.records``). For searching, each record is reduced once
to lowercased texts, numbers and timestamps, stored column-wise:

``state`` (what :meth:`SearchView.to_state` returns) is a dict of builtins::

    {"format": STATE_FORMAT, "version": STATE_VERSION, "n": <record count>,
     "all":  [idx, texts],           # bare-term text, see below
     "text": {field: [idx, texts]},  # lowercased text of each text field
     "meta": {extractor: [idx, texts]},   # lowercased JSON of its metadata
     "num":  {field: [idx, numbers]},
     "date": {field: [idx, POSIX timestamps]}}

Every column is *sparse*: ``idx`` lists the (ascending) indices of the
records where the field is present and non-null and ``texts``/``numbers``
the matching values, so null fields never match and ``NOT`` includes them.

Text renderings follow DataLad-Registry (PostgreSQL) so that substring
queries match the same records:

- ``tags`` is the JSON text of the list (insertion order, as upstream keeps it
  in a text column); a string is taken as already rendered JSON;
- ``branches`` and each metadata record's ``extracted_metadata`` are rendered
  like PostgreSQL ``jsonb::text``: object keys sorted by their UTF-8 length,
  then bytewise; ``", "`` and ``": "`` separators; non-ASCII kept as is;
- numbers are decimal text, dates their stored ISO 8601 text.

The bare-term text joins the default fields (url, ds_id, head,
head_describe, tags, branches, and each metadata record's extractor name and
JSON text) with ``SEP`` ("\\x00"), which a query may not contain, so one
``in`` test per record cannot match across two fields.

The fields come from the catalogue in :mod:`datalad_registry_ext.records`;
nothing of DataLad is imported.
"""
from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone

from datalad_registry_ext.records import CATALOGUE, canonical_url, subdataset_urls
from datalad_registry_ext.records import SIZE_FIELDS as RECORD_SIZE_FIELDS

STATE_FORMAT = "datalad-registry-ext/search-state"
STATE_VERSION = 2

#: Separator of the parts of the bare-term text; never part of a query.
SEP = "\x00"

_SEARCHED = tuple(f for f in CATALOGUE if f.search)

#: Fields a bare word or "quoted string" searches (DataLad-Registry's).
DEFAULT_FIELDS = tuple(f.name for f in _SEARCHED if f.search == "default")
#: Plain text fields.
TEXT_FIELDS = tuple(f.name for f in _SEARCHED if f.kind == "text")
#: Fields holding JSON, searched as text and walkable with a path.
JSON_FIELDS = tuple(f.name for f in _SEARCHED
                    if f.kind == "json" and f.search == "default")
#: Numeric fields; searchable as text, comparable with :> :>= :< :<=.
NUMBER_FIELDS = tuple(f.name for f in _SEARCHED if f.kind == "int")
#: Sizes: the unit a plain number is in, in bytes.
SIZE_FIELDS = {n: u for n, u in RECORD_SIZE_FIELDS.items() if n in NUMBER_FIELDS}
#: Date fields (ISO 8601 text); comparable.
DATE_FIELDS = tuple(f.name for f in _SEARCHED if f.kind == "date")
#: Fields over the record's ``subdatasets`` list.
SUBDATASET_FIELDS = {"subds_id": "ds_id", "subds_url": "url"}


def subdataset_values(sub: dict, key: str, super_url=None) -> list[str]:
    """The values of one subdataset (a dict) searched by the field over
    ``key``: its ``ds_id``; for ``url`` the URL as written (any JSON value,
    as text) and its other spellings (records.subdataset_urls: canonical,
    resolved against the superdataset's URL ``super_url``, datalad-url), so
    that ``subds_url:=`` finds a path by its ``file://`` URL and back."""
    value = sub.get(key)
    vals = [] if value is None else [str(value)]
    if key == "url":
        vals += [u for u in subdataset_urls(sub, super_url) if u not in vals]
    return vals


def subdataset_url_needles(value: str) -> list[str]:
    """The lowercased texts ``subds_url:=value`` compares with: the value and
    its canonical form (the stored values hold both spellings of each URL)."""
    out = [value.lower()]
    try:
        canon = canonical_url(value).lower() if value.strip() else None
    except ValueError:  # a text urlsplit refuses
        canon = None
    if canon and canon not in out:
        out.append(canon)
    return out

#: Failed extractions ({extractor: {message, time, count}}), searched as JSON
#: text; absent when there are none, so ``extraction_failures:""`` finds
#: every record with a failing extractor.
FAILURE_FIELD = "extraction_failures"
assert FAILURE_FIELD in {f.name for f in _SEARCHED if f.kind == "json"}
assert DEFAULT_FIELDS[-1] == "metadata"  # record_texts relies on it

KNOWN_FIELDS = (DEFAULT_FIELDS + ("annex_uuid", "source")
                + tuple(SUBDATASET_FIELDS) + NUMBER_FIELDS + DATE_FIELDS
                + (FAILURE_FIELD,))
COMPARABLE_FIELDS = NUMBER_FIELDS + DATE_FIELDS

# Columns of state["text"]: every field but metadata (which is per extractor).
_TEXT_COLUMNS = (TEXT_FIELDS + ("tags", "branches") + tuple(SUBDATASET_FIELDS)
                 + NUMBER_FIELDS + DATE_FIELDS + (FAILURE_FIELD,))


# -- JSON rendering ------------------------------------------------------------

def _jsonb_key(item):
    key = item[0]
    if not isinstance(key, str):
        key = str(key)
    # comparing str is comparing their UTF-8 bytes (code point order is
    # byte order in UTF-8); only the length must be counted in bytes
    if key.isascii():
        return (len(key), key)
    return (len(key.encode("utf-8", "surrogatepass")), key)


def jsonb_ordered(obj):
    """A copy of ``obj`` with object keys in PostgreSQL jsonb order.

    jsonb stores object keys sorted by length (of their UTF-8 bytes) first
    and bytewise second, and renders them in that order. No recursion on
    the document's depth: any document an index holds can be rendered.
    """
    if not isinstance(obj, (dict, list)):
        return obj
    root = [None]
    stack = [(obj, root, 0)]
    while stack:
        src, parent, key = stack.pop()
        if isinstance(src, dict):
            items = (sorted(src.items(), key=_jsonb_key) if len(src) > 1
                     else src.items())
            dst = {}
            for k, v in items:
                dst[k] = v  # a container is replaced below, keeping the order
                if isinstance(v, (dict, list)):
                    stack.append((v, dst, k))
        else:
            dst = list(src)
            for i, v in enumerate(src):
                if isinstance(v, (dict, list)):
                    stack.append((v, dst, i))
        parent[key] = dst
    return root[0]


def jsonb_text(obj) -> str:
    """``obj`` rendered as PostgreSQL renders a jsonb value as text."""
    return json.dumps(jsonb_ordered(obj), ensure_ascii=False, default=str)


def json_text(obj) -> str:
    """``obj`` rendered as ``json.dumps`` does (insertion order)."""
    return json.dumps(obj, ensure_ascii=False, default=str)


def leaf_text(value) -> str:
    """Text of a JSON scalar: strings as they are, others as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


# -- values --------------------------------------------------------------------

def to_timestamp(value):
    """POSIX timestamp of an ISO 8601 text (naive = UTC), or None."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def to_number(value):
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def fold(text: str) -> str:
    """``text`` as substring terms compare it, on both sides: Unicode
    NFKD, combining marks dropped, casefolded ("Buzsáki" -> "buzsaki",
    "Straße" -> "strasse", "ﬁ" -> "fi"). Character by character (only
    marks, which NFKD may reorder, are dropped), so a substring of a text
    folds to a substring of the folded text. ``:=`` and ``:~`` do not fold."""
    if text.isascii():
        return text.lower()
    combining = unicodedata.combining
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not combining(c)).casefold()


def _clean(text: str) -> str:
    # lowercased, and never containing the separator
    text = text.lower()
    if SEP in text:
        text = text.replace(SEP, "\ufffd")
    return text


def _scalar(value):
    if value is None:
        return None
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _clean(str(value))


# -- precomputation --------------------------------------------------------------

def record_texts(record: dict):
    """Searchable values of one record.

    Returns ``(text, meta, num, date, all_text)``: ``text`` maps a field to its
    lowercased text (absent when null), ``meta`` is a list of
    ``(extractor_name, lowercased JSON text)``, ``num``/``date`` map fields to
    numbers/timestamps, ``all_text`` is the bare-term text (or None).
    """
    text = {}
    get = record.get
    for f in TEXT_FIELDS:
        s = _scalar(get(f))
        if s is not None:
            text[f] = s
    tags = get("tags")
    if tags is not None:
        text["tags"] = _clean(tags if isinstance(tags, str) else json_text(tags))
    branches = get("branches")
    if branches is not None:
        text["branches"] = _clean(branches if isinstance(branches, str)
                                  else jsonb_text(branches))
    failures = get(FAILURE_FIELD)
    if failures:
        text[FAILURE_FIELD] = _clean(jsonb_text(failures))
    subds = get("subdatasets")
    if subds:
        for f, key in SUBDATASET_FIELDS.items():
            vals = [_clean(v) for sd in subds if isinstance(sd, dict)
                    for v in subdataset_values(sd, key, get("url"))]
            if vals:
                text[f] = SEP.join(vals)
    num = {}
    for f in NUMBER_FIELDS:
        v = get(f)
        if v is not None:
            text[f] = _scalar(v)
            n = to_number(v)
            if n is not None:
                num[f] = n
    date = {}
    for f in DATE_FIELDS:
        v = get(f)
        if v is not None:
            text[f] = _scalar(v if not isinstance(v, datetime) else v.isoformat())
            ts = to_timestamp(v)
            if ts is not None:
                date[f] = ts
    meta = []
    for m in get("metadata") or ():
        if not isinstance(m, dict):
            continue
        name = m.get("extractor_name")
        if name is None:
            continue
        meta.append((str(name), _clean(jsonb_text(m.get("extracted_metadata")))))
    parts = [text[f] for f in DEFAULT_FIELDS[:-1] if f in text]
    for name, js in meta:
        parts.append(_clean(name))
        parts.append(js)
    all_text = SEP.join(parts) if parts else None
    return text, meta, num, date, all_text


def build_state(records) -> dict:
    """The column-wise search state of ``records`` (see the module doc)."""
    all_idx, all_txt = [], []
    text = {f: ([], []) for f in _TEXT_COLUMNS}
    meta = {}
    num = {f: ([], []) for f in NUMBER_FIELDS}
    date = {f: ([], []) for f in DATE_FIELDS}
    n = 0
    for i, rec in enumerate(records):
        n = i + 1
        t, m, nu, da, al = record_texts(rec)
        if al is not None:
            all_idx.append(i)
            all_txt.append(al)
        for f, s in t.items():
            col = text[f]
            col[0].append(i)
            col[1].append(s)
        for name, js in m:
            col = meta.get(name)
            if col is None:
                col = meta[name] = ([], [])
            col[0].append(i)
            col[1].append(js)
        for f, v in nu.items():
            col = num[f]
            col[0].append(i)
            col[1].append(v)
        for f, v in da.items():
            col = date[f]
            col[0].append(i)
            col[1].append(v)

    def lists(cols):
        return {k: [v[0], v[1]] for k, v in cols.items()}

    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "n": n,
        "all": [all_idx, all_txt],
        "text": lists(text),
        "meta": lists(meta),
        "num": lists(num),
        "date": lists(date),
    }


def record_fields(record: dict) -> dict:
    """The search state of a single record: a *view item* for predicates."""
    return build_state([record])


def check_state(state) -> None:
    """Raise ValueError unless ``state`` looks like a current search state."""
    if (not isinstance(state, dict) or state.get("format") != STATE_FORMAT
            or state.get("version") != STATE_VERSION):
        raise ValueError("not a search state of this version "
                         f"({STATE_FORMAT} v{STATE_VERSION})")
    for key in ("n", "all", "text", "meta", "num", "date"):
        if key not in state:
            raise ValueError(f"search state lacks {key!r}")
