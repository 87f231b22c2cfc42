"""The search engine: a derived SQLite database per index file.

Searching used to load a marshalled :class:`~datalad_registry_ext.query.SearchView`
state of every record; this module keeps the same data in an SQLite file
(stdlib :mod:`sqlite3`) next to the index file, built once with
:class:`Builder` and then opened read-only by :class:`Engine`, which answers
queries without loading the records. The in-memory evaluator
(:mod:`datalad_registry_ext.query.evaluate`) stays the reference: for every
query the engine matches exactly the records :class:`SearchView` matches.

Usage::

    with Builder(db_path) as b:          # temporary file next to db_path
        for rec in records:
            b.add(rec)
        b.finish(fingerprint)            # atomically replaces db_path
    with Engine.open(db_path, fingerprint) as eng:
        tree = parse("haxby")
        eng.count(tree), eng.page(tree, limit=20), eng.stats(tree)

The engine knows nothing of TinyDB or DataLad; ``fingerprint`` is any text
that identifies the source data (a different one raises :class:`EngineStale`).

Schema (version :data:`SCHEMA_VERSION`)
---------------------------------------

All texts are the lowercased renderings of
:func:`datalad_registry_ext.query.fields.record_texts`, so substring tests
in SQLite are Python's ``v in s`` (``instr`` and FTS5 compare UTF-8 bytes,
which for valid UTF-8 is the same as comparing code points)::

    meta(key PRIMARY KEY, value)  schema, fingerprint, count, fts, py rids,
                                  okey (see okey)
    rec(rid INTEGER PRIMARY KEY,  position in the input (0-based); narrow,
                                  so that row lookups and scans are cheap
        py                        1: matched in Python (see below)
        has_all                   1: some default field has a value
        n_md                      number of (named) metadata records
        url                       the lowercased URL (also in txt): URL
                                  terms need no look-up in the wide txt
        n_<number field>          query.fields.to_number (int64, finite REAL)
        d_<date field>            query.fields.to_timestamp
        s_size s_files s_annex    collection_stats inputs: stats._int() of
        s_unknown                 size and count; 1/0/NULL: git-annex
                                  branch / other branches / branches
                                  unknown; files of unknown size
        s_failed s_checked        check_stats inputs: stats._int() of
                                  n_failed_chks; 1/0: a last_chk_dt or
                                  last_failed_chk_dt (stats.check_flags)
        s_grp s_rank              the ds_id as a dense integer (NULL: none);
                                  the rank of the copy in the unique
                                  statistics' choice (largest size, then
                                  count, then unknown count): a dataset's
                                  copy among the matches is the one of
                                  least rank (indexed together)
        o_<key>_a o_<key>_d       rank (0..n-1) in search.order_records'
                                  order, per order key and direction
                                  (indexed: a page walks an index)
    txt(rid INTEGER PRIMARY KEY,  the texts, NULL where the field is null
        url ds_id head head_describe branches tags   (the default fields)
        annex_uuid source failures                   (extraction_failures)
        t_<number field> t_<date field>              (for : and :~)
        s_ds)                     the raw ds_id (collection_stats' key)
    sub(rid, f, v)                one row per subds_id/subds_url value
                                  (a URL in each of its spellings:
                                  query.fields.subdataset_values)
    md(mid INTEGER PRIMARY KEY,   rid << 20 | k, the record's k-th metadata
       name, name_lc, js)         extractor name (as given, for [x]), its
                                  lowercased text, lowercased jsonb text
    doc(rid INTEGER PRIMARY KEY,  what is returned: the raw url (lookup),
        url, light, "full", id)   JSON of the light record (no metadata,
                                  "extractors" instead) and of the record,
                                  the API id (records.record_id; indexed)
    mdid(id, rid, k)              records.metadata_id of the k-th entry of
                                  the record's metadata list (indexed)
    okey(rid INTEGER PRIMARY KEY, _order_values of the record as JSON: what
         k)                       engine_patch ranks by; current where
                                  meta's okey is its fingerprint
    fts_rec  FTS5 over txt(the default fields); fts_md over md(name_lc, js):
             contentless, of the folded texts (query.fields.fold: NFKD, no
             combining marks, casefolded), tokenize='trigram
             case_sensitive 1', detail=full (a phrase query is a substring
             search)

Texts never hold "\\x00" (record_texts replaces it); fields are separate
columns or rows, so a term never matches across two fields (the reference
joins them with "\\x00", which a query cannot contain).

How a query becomes SQL
-----------------------

A query tree becomes ONE boolean SQL expression over ``rec r`` (joined with
``txt x`` when texts are needed; ``txt`` alone when only texts are): AND, OR
and NOT map to SQL, long lists as balanced parentheses (SQLite limits
expression depth to 1000), and the operands of an AND are ordered cheapest
first, positive before NOT (as evaluate.py orders them), because SQLite
evaluates them in the order written and stops at the first false one.
Every leaf is 0 or 1, never NULL, so NOT includes records that lack the
field. The leaves:

- substring terms compare folded texts (``fold()``, a Python function on
  the connection, called for non-ASCII texts only); those of 3 or more
  characters on the default fields and metadata (bare words,
  ``metadata[...]:v``, ``tags:v``...): the record ids an FTS5 phrase query
  of the folded value finds, ``r.rid IN temp.s_<hash>``; that temporary
  table of the connection is filled once and kept for the next statements
  (count, page and stats of a query; repeated searches), as SearchView
  caches leaf results;
- shorter terms, and all terms when FTS5 is unavailable or switched off:
  ``instr`` scans; ``url``, ``ds_id`` and ``head`` are scanned always (short
  texts: a scan of 13k URLs costs ~1 ms, less than an FTS lookup of a very
  common value such as url:github);
- comparisons and ``:=`` on number/date fields: column comparisons;
- ``:=`` on text fields: equality with the lowercased column (subdatasets:
  any row);
- regular expressions, paths into JSON, ``:=``/``:~`` on tags, branches and
  metadata: ``py_test(k, text)``, a Python function registered on the
  connection (k selects the test in the running query), evaluated on the
  rows the cheaper operands leave (correlated ``EXISTS`` over ``md``/``sub``),
  after the needles of evaluate.py's ``_json`` (``instr``, and an FTS lookup
  of them first); it reproduces ``_json``/``_leaf`` exactly, with iterative
  JSON walks.

Pages: ``ORDER BY o_<key>_<dir> LIMIT n`` over the matching records either
walks that rank index, testing records until n match (cheap when many
match), or finds all matches and sorts them (cheap when few do). SQLite
cannot know which; once count() of the query has run, page() forces the
cheaper plan.

Regular expressions share one time budget per statement
(``regex_timeout``): each match runs with the time left as the ``regex``
module's ``timeout`` (checked while matching, in any thread, the GIL
released), and a progress handler checks the deadline between rows.
Running out raises the :class:`~datalad_registry_ext.query.QueryError`
SearchView.search raises.

Hostile values
--------------

Records whose values SQLite cannot hold faithfully -- lone surrogates in a
searched text, "\\x00" in an extractor name or ds_id, integers beyond 64 bits
and NaN/Infinity in number or statistics columns -- are marked ``py``: SQL
skips them and they are matched with the reference predicate
(a ``query.SearchView`` over those records, built once) on the stored
records (there are usually none).
Records too deeply nested for the reference's recursive rendering are
rendered by an iterative fallback; a field that cannot be rendered at all is
left out of the search texts (the record stays retrievable) and listed in
:attr:`Builder.problems`; a record that cannot even be stored as JSON is
skipped and listed there too.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import operator
import os
import queue
import re
import sqlite3
import tempfile
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from datetime import datetime
from urllib.parse import quote

from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import ORDER_KEYS as RECORD_ORDER_KEYS
from datalad_registry_ext.records import (
    ID_BITS, dumps_storable, metadata_id, record_id,
)
from datalad_registry_ext.query import (
    REGEX_TIMEOUT,
    parse,
    QueryError,
    RegexTimeout,
    SearchView,
)
from datalad_registry_ext.query import fields as F
from datalad_registry_ext.query.evaluate import (
    bounded_search,
    json_needles,
    json_test,
)
from datalad_registry_ext.query.parser import (
    And, MatchAll, Not, Or, Term, _sre, _src, compile_regex,
)
from datalad_registry_ext.stats import (
    CHECK_STATS_KEY, DEFAULT_MAX_FAILURES, UNKNOWN_SIZE_FIELD,
    UNKNOWN_SIZE_KEY, _better, _has_annex_branch, _int, add_check,
    check_flags, check_stats,
)

__all__ = ["SCHEMA_VERSION", "Builder", "Engine", "EngineError",
           "EngineStale", "EngineDamaged", "build", "merge_stats",
           "ORDER_KEYS"]

lgr = logging.getLogger("datalad.registry_ext.engine")

# 4: the columns of n_failed_chks and last_failed_chk_dt (registry-update)
# 6: s_failed, s_checked (collection_stats' check_stats)
SCHEMA_VERSION = 6

#: search.order_records' keys (DataLad-Registry's), from the catalogue
ORDER_KEYS = RECORD_ORDER_KEYS
_DATE_KEYS = tuple(k for k in ORDER_KEYS if k in F.DATE_FIELDS)

#: The default fields but metadata (txt columns, in fts_rec).
DEFAULT_COLUMNS = tuple(f for f in F.DEFAULT_FIELDS if f != "metadata")
#: Fields whose ``field:value`` substring terms use fts_rec; the others are
#: ``instr`` scans. Measured on 13k records: url, ds_id, head are short, a
#: scan of the URLs (in the narrow rec table, indexed) costs ~1 ms, an FTS
#: lookup of a very common value (url:github matches 70%) more.
FTS_FIELDS = ("head_describe", "tags", "branches")

# txt columns of the texts of record_texts (its ``text`` keys but the
# subdatasets, which have a table of their own)
_TEXT_COLUMN = {f: f for f in F.TEXT_FIELDS + F.JSON_FIELDS
                if f != "metadata"}
_TEXT_COLUMN[F.FAILURE_FIELD] = "failures"
_TEXT_COLUMN.update({f: "t_" + f for f in F.NUMBER_FIELDS + F.DATE_FIELDS})
assert set(DEFAULT_COLUMNS) <= set(_TEXT_COLUMN)

_INT64 = (-(1 << 63), (1 << 63) - 1)
_MID_BITS = 20  # md.mid = rid << 20 | k
_MAX_MD = (1 << _MID_BITS) - 1

_CMP_SQL = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "="}


# -- FTS5 availability ----------------------------------------------------------

_fts5 = None
_fts5_lock = threading.Lock()


def fts5_available() -> bool:
    """Whether this Python's SQLite has FTS5 with the trigram tokenizer
    (probed once)."""
    global _fts5
    if _fts5 is None:
        with _fts5_lock:
            if _fts5 is None:
                try:
                    con = sqlite3.connect(":memory:")
                    try:
                        con.execute("CREATE VIRTUAL TABLE t USING fts5(x, "
                                    "tokenize='trigram case_sensitive 1')")
                    finally:
                        con.close()
                    _fts5 = True
                except sqlite3.Error as e:
                    lgr.debug("SQLite %s has no FTS5 trigram tokenizer (%s); "
                              "searching by scanning", sqlite3.sqlite_version, e)
                    _fts5 = False
    return _fts5


def __getattr__(name):
    # ``engine.FTS5`` is probed lazily, on first use
    if name == "FTS5":
        return fts5_available()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- errors ------------------------------------------------------------------------

class EngineError(RegistryExtError):
    """The search database cannot be used."""


class EngineStale(EngineError):
    """The search database was built from other data than the given one."""


class EngineDamaged(EngineError):
    """The search database is missing, unreadable or of another version."""


# -- values -------------------------------------------------------------------------

def _encodable(s: str) -> bool:
    """Whether SQLite can store ``s`` (no lone surrogates)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sql_number(x) -> bool:
    """Whether SQLite holds number ``x`` exactly (int64, finite float)."""
    if isinstance(x, float):
        return math.isfinite(x)
    return _INT64[0] <= x <= _INT64[1]


def _dumps(obj) -> str:
    """JSON text for storage, as the index file stores it
    (records.dumps_storable); values JSON cannot hold as their str(). May
    raise (circular or too deep): the caller reports the record."""
    try:
        return dumps_storable(obj)
    except TypeError:
        s = json.dumps(obj, ensure_ascii=False, default=str,
                       separators=(",", ":"))
    if not _encodable(s):
        s = json.dumps(obj, default=str, separators=(",", ":"))
    return s


def light_record(record: dict) -> dict:
    """A record without metadata content; ``extractors`` lists the names
    (as ``index.light_record``)."""
    light = {k: v for k, v in record.items() if k != "metadata"}
    try:
        names = {m.get("extractor_name") for m in record.get("metadata") or []
                 if isinstance(m, dict)} - {None}
    except TypeError:  # not a list, or unhashable names
        names = set()
    try:
        light["extractors"] = sorted(names)
    except TypeError:
        light["extractors"] = sorted(names, key=str)
    return light


# -- record -> rows ---------------------------------------------------------------------

def _record_texts_fallback(record: dict, problems: list):
    """query.fields.record_texts, rendering JSON iteratively and leaving out
    a field that cannot be rendered (noted in ``problems``). Used when the
    reference fails on a record (e.g. too deeply nested for its recursion)."""
    clean, scalar = F._clean, F._scalar
    text = {}
    get = record.get

    def attempt(what, fn):
        try:
            return fn()
        except Exception as e:  # RecursionError, odd types, ...
            problems.append(f"{what}: {type(e).__name__}: {e}"[:300])
            return None

    for f in F.TEXT_FIELDS:
        s = attempt(f, lambda: scalar(get(f)))
        if s is not None:
            text[f] = s
    tags = get("tags")
    if tags is not None:
        s = attempt("tags", lambda: clean(
            tags if isinstance(tags, str) else json.dumps(
                tags, ensure_ascii=False, default=str)))
        if s is not None:
            text["tags"] = s
    branches = get("branches")
    if branches is not None:
        s = attempt("branches", lambda: clean(
            branches if isinstance(branches, str) else F.jsonb_text(branches)))
        if s is not None:
            text["branches"] = s
    failures = get(F.FAILURE_FIELD)
    if failures:
        s = attempt(F.FAILURE_FIELD, lambda: clean(F.jsonb_text(failures)))
        if s is not None:
            text[F.FAILURE_FIELD] = s
    subds = get("subdatasets")
    if subds:
        for f, key in F.SUBDATASET_FIELDS.items():
            vals = attempt(f, lambda: [
                clean(v) for sd in subds if isinstance(sd, dict)
                for v in F.subdataset_values(sd, key, get("url"))])
            if vals:
                text[f] = F.SEP.join(vals)
    num = {}
    for f in F.NUMBER_FIELDS:
        v = get(f)
        if v is not None:
            s = attempt(f, lambda: scalar(v))
            if s is not None:
                text[f] = s
            n = attempt(f, lambda: F.to_number(v))
            if n is not None:
                num[f] = n
    date = {}
    for f in F.DATE_FIELDS:
        v = get(f)
        if v is not None:
            s = attempt(f, lambda: scalar(v if not isinstance(v, datetime)
                                          else v.isoformat()))
            if s is not None:
                text[f] = s
            ts = attempt(f, lambda: F.to_timestamp(v))
            if ts is not None:
                date[f] = ts
    meta = []
    for m in attempt("metadata", lambda: list(get("metadata") or ())) or ():
        if not isinstance(m, dict):
            continue
        name = m.get("extractor_name")
        if name is None:
            continue
        js = attempt(f"metadata {name!r}", lambda: clean(
            F.jsonb_text(m.get("extracted_metadata"))))
        if js is not None:
            meta.append((str(name), js))
    parts = [text[f] for f in F.DEFAULT_FIELDS[:-1] if f in text]
    for name, js in meta:
        parts.append(clean(name))
        parts.append(js)
    all_text = F.SEP.join(parts) if parts else None
    return text, meta, num, date, all_text


def _order_values(record: dict):
    """(tie-break key, value per order key) as search.order_records uses
    them. Values that order_records could not compare with the others (a
    non-number under a number key, NaN, a non-text URL) count as null."""
    def tie(v):
        if not v:
            return ""
        return v if isinstance(v, str) else str(v)

    get = record.get
    vals = []
    for key in ORDER_KEYS:
        v = get(key)
        if key in _DATE_KEYS:
            v = F.to_timestamp(v) if v else None
        elif key == "url":
            v = v if isinstance(v, str) else None
        elif not isinstance(v, (int, float)) or (
                isinstance(v, float) and math.isnan(v)):
            v = None
        vals.append(v)
    return (tie(get("url")), tie(get("source"))), vals


def _rank_column(order_by: str, order_dir: str) -> str:
    if order_by not in ORDER_KEYS:
        raise ValueError(f"cannot order by {order_by!r}; use one of: "
                         f"{', '.join(ORDER_KEYS)}")
    if order_dir not in ("asc", "desc"):
        raise ValueError(f"cannot order {order_dir!r}; use asc or desc")
    return f"o_{order_by}_{order_dir[0]}"


_RANK_COLUMNS = [f"o_{k}_{d}" for k in ORDER_KEYS for d in "ad"]

# rec: narrow (numbers, flags, ranks, and the URL, the most searched short
# text): row lookups and scans stay cheap
_REC_COLUMNS = (
    ["rid", "py", "has_all", "n_md", "url"]
    + ["n_" + f for f in F.NUMBER_FIELDS] + ["d_" + f for f in F.DATE_FIELDS]
    + ["s_size", "s_files", "s_annex", "s_unknown", "s_failed", "s_checked"])
# txt: the texts (and the content of fts_rec), and the raw ds_id
_TXT_COLUMNS = ["rid"] + list(_TEXT_COLUMN.values()) + ["s_ds"]

_SCHEMA = f"""
CREATE TABLE meta(key TEXT PRIMARY KEY, value);
CREATE TABLE rec(rid INTEGER PRIMARY KEY, {", ".join(
    _REC_COLUMNS[1:] + _RANK_COLUMNS + ["s_grp", "s_rank"])});
CREATE TABLE txt(rid INTEGER PRIMARY KEY, {", ".join(_TXT_COLUMNS[1:])});
CREATE TABLE sub(rid INTEGER, f TEXT, v TEXT);
CREATE TABLE md(mid INTEGER PRIMARY KEY, name TEXT, name_lc TEXT, js TEXT);
CREATE TABLE doc(rid INTEGER PRIMARY KEY, url, light TEXT, "full" TEXT,
                 id INTEGER);
CREATE TABLE mdid(id INTEGER, rid INTEGER, k INTEGER);
CREATE TABLE okey(rid INTEGER PRIMARY KEY, k TEXT);
"""
#: okey as a patch finds it in a database built before it existed
_OKEY_SCHEMA = ("CREATE TABLE IF NOT EXISTS okey(rid INTEGER PRIMARY KEY, "
                "k TEXT)")

# (column, SELECT rid, value) of the unique statistics' inputs
_GROUP_RANKS = [
    ("s_grp", "SELECT rid, dense_rank() OVER (ORDER BY s_ds) FROM txt "
              "WHERE s_ds IS NOT NULL"),
    ("s_rank", "SELECT rid, row_number() OVER (ORDER BY s_size IS NULL, "
               "s_size DESC, s_files IS NULL, s_files DESC, s_unknown IS "
               "NULL, s_unknown DESC, rid) FROM rec"),
]

# created after the bulk insert
_INDEXES = [f"CREATE INDEX rec_{c} ON rec({c})" for c in _RANK_COLUMNS] + [
    "CREATE INDEX rec_url ON rec(url)",
    "CREATE INDEX rec_grp ON rec(s_grp, s_rank)",
    "CREATE INDEX rec_s_rank ON rec(s_rank)",
    "CREATE INDEX txt_ds_id ON txt(ds_id)",
    "CREATE INDEX sub_rid ON sub(rid, f)",
    "CREATE INDEX sub_fv ON sub(f, v)",
    "CREATE INDEX md_name ON md(name)",
    "CREATE INDEX doc_url ON doc(url)",
    "CREATE INDEX doc_id ON doc(id)",
    "CREATE INDEX mdid_id ON mdid(id)",
]

_FTS_OPTIONS = ("tokenize='trigram case_sensitive 1', detail=full, "
                "columnsize=0")
# contentless: they index the folded texts (fields.fold), which no table
# holds (txt and md keep the lowercased ones, for := and :~)
_FTS_SCHEMA = [
    f"CREATE VIRTUAL TABLE fts_rec USING fts5({', '.join(DEFAULT_COLUMNS)}, "
    f"content='', {_FTS_OPTIONS})",
    f"CREATE VIRTUAL TABLE fts_md USING fts5(name_lc, js, content='', "
    f"{_FTS_OPTIONS})",
] + [
    # while building, every FTS statement flushes its terms as a new index
    # segment; merging segments as they come makes a build superlinear
    # (measured at 130k records: ~15 s more), so nothing is merged (unless
    # Builder.FTS_OPTIMIZE asks for it at the end)
    f"INSERT INTO {t}({t}, rank) VALUES('{k}', {v})"
    for t in ("fts_rec", "fts_md")
    for k, v in (("hashsize", 64 << 20), ("automerge", 0),
                 ("crisismerge", 2000))]
def _folded(col: str) -> str:
    """SQL: the folded text of ``col`` (fields.fold); a text whose length in
    characters is its length in bytes is ASCII, lowercased already, its own
    folding: only other texts cost a call of Python."""
    return (f"(CASE WHEN length({col}) = length(CAST({col} AS BLOB)) "
            f"THEN {col} ELSE fold({col}) END)")


def _fold_sql(s):
    return None if s is None else F.fold(s)


# the FTS tables are filled from txt and md, folded, a chunk of records at a
# time, by the writer threads
_FTS_FILL = [
    f"INSERT INTO fts_rec(rowid, {', '.join(DEFAULT_COLUMNS)}) SELECT rid, "
    f"{', '.join(_folded(c) for c in DEFAULT_COLUMNS)} FROM txt WHERE rid "
    "BETWEEN ? AND ?",
    f"INSERT INTO fts_md(rowid, name_lc, js) SELECT mid, {_folded('name_lc')}"
    f", {_folded('js')} FROM md WHERE mid BETWEEN ? << {_MID_BITS} AND "
    f"(? << {_MID_BITS}) + {_MAX_MD}",
]


def _record_rows(rid: int, record: dict, problems: list,
                 full: str | None = None):
    """The rows (rec, txt, sub, md, doc) of ``record`` and whether it is a
    py record (see the module doc). ``full``: the record's JSON text, if the
    caller has it already. Raises if it cannot be stored at all."""
    if full is None:
        full = _dumps(record)
    light = _dumps(light_record(record))
    url = record.get("url")
    try:
        text, meta, num, date, all_text = F.record_texts(record)
    except Exception as e:
        problems.append(f"rendered by the fallback ({type(e).__name__})")
        text, meta, num, date, all_text = _record_texts_fallback(record,
                                                                 problems)
    if len(meta) > _MAX_MD:
        problems.append(f"only the first {_MAX_MD} metadata records searched")
        meta = meta[:_MAX_MD]
    # anything SQLite cannot hold as is: match this record in Python
    py = not all(_encodable(s) for s in text.values())
    py = py or not all("\x00" not in name and _encodable(name)
                       and _encodable(js) for name, js in meta)
    py = py or not all(_sql_number(v) for v in num.values())
    size = _int(record.get("annexed_files_in_wt_size"))
    files = _int(record.get("annexed_files_in_wt_count"))
    unknown = _int(record.get(UNKNOWN_SIZE_FIELD))
    checked, failed = check_flags(record)
    py = py or not all(v is None or _sql_number(v)
                       for v in (size, files, unknown, failed))
    ds = record.get("ds_id")
    if isinstance(ds, bool):
        ds = int(ds)
    if isinstance(ds, str):
        py = py or "\x00" in ds or not _encodable(ds)
    elif ds is not None and (not isinstance(ds, (int, float))
                             or not _sql_number(ds)):
        py = True
    branches = record.get("branches")
    try:
        annex = None if branches is None else int(_has_annex_branch(branches))
    except Exception:
        annex, py = None, True
    key = url if isinstance(url, str) and "\x00" not in url \
        and _encodable(url) else None
    # records() finds such URLs among the py records
    py = py or (key is None and url is not None)
    doc = (rid, key, light, full)
    if py:
        # no search values: SQL leaves py records out
        return ((rid, 1, 0, 0) + (None,) * (len(_REC_COLUMNS) - 4),
                (rid,) + (None,) * (len(_TXT_COLUMNS) - 1), [], [], doc, True)
    t = text.get
    rec = ((rid, 0, int(all_text is not None), len(meta), t("url"))
           + tuple(num.get(f) for f in F.NUMBER_FIELDS)
           + tuple(date.get(f) for f in F.DATE_FIELDS)
           + (size, files, annex, unknown, failed, int(checked)))
    txt = (rid,) + tuple(t(f) for f in _TEXT_COLUMN) + (ds,)
    sub = [(rid, f, v) for f in F.SUBDATASET_FIELDS if f in text
           for v in text[f].split(F.SEP)]
    md = [((rid << _MID_BITS) | k, name, F._clean(name), js)
          for k, (name, js) in enumerate(meta)]
    return rec, txt, sub, md, doc, False


def _api_ids(rid: int, record: dict):
    """(records.record_id of the record, [(records.metadata_id, rid, k)] of
    its k-th metadata record): the stable ids of the API, for by_ids() and
    metadata_by_ids(). None / left out where the URL, source or extractor
    name is not a text (such a record has no id)."""
    url, source = record.get("url"), record.get("source")
    if not isinstance(url, str) or not (source is None
                                        or isinstance(source, str)):
        return None, []
    mds = record.get("metadata")
    md_ids = [(metadata_id(source, url, m["extractor_name"]), rid, k)
              for k, m in enumerate(mds if isinstance(mds, list) else ())
              if isinstance(m, dict)
              and isinstance(m.get("extractor_name"), str)]
    return record_id(source, url), md_ids


# -- building -----------------------------------------------------------------------------

class _Writer:
    """A thread that writes batches on its own connection, so that SQLite
    (which releases the GIL) inserts and indexes while Python renders the
    next records. ``write(first_rid, last_rid, rows)``; rows is None once,
    at the end."""

    def __init__(self, db, write, size):
        self.db = db
        self._write = write
        self.error = None
        # room for more than an FTS chunk: rendering goes on while the
        # writer indexes one
        self._queue = queue.Queue(maxsize=size)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="registry-engine-writer")
        self._thread.start()

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # keep draining: put() must not block
            try:
                self._write(*item)
            except BaseException as e:
                self.error = e

    def put(self, item):
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def stop(self):
        """Finish the queued work (or skip it after an error) and end."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()



@contextmanager
def aborting(owner, doing: str):
    """A step of a :class:`Builder` or a patch: on any failure,
    ``owner.abort()`` (the database stays as it was) and raise EngineError
    naming ``owner.db_path`` (``owner._failed`` for SQLite's errors)."""
    try:
        yield
    except sqlite3.Error as e:
        owner.abort()
        raise owner._failed(e) from e
    except OSError as e:
        owner.abort()
        raise EngineError(f"cannot {doing} the search database "
                          f"{owner.db_path}: {e.strerror or e}") from e
    except BaseException:
        owner.abort()
        raise

class Builder:
    """Build a search database incrementally::

        with Builder(db_path) as b:
            for rec in records:      # in index order
                b.add(rec)
            b.finish(fingerprint)

    The database is written to a temporary file next to ``db_path``
    (``<name>.<random>.tmp``) and moved into place by :meth:`finish`;
    leaving the block without finishing, or with an exception, removes it.
    ``fts``: build the full-text index (None: if FTS5 is available).

    Most of a build is FTS5 indexing, and SQLite has one writer per file:
    so the metadata (``md``, ``fts_md``) and ``doc`` go into the temporary
    file itself and the rest into a second temporary file, each written by
    a thread of its own while Python renders the records; finish() copies
    the second file's tables (~15% of the data) into the first. After
    :meth:`finish`, :attr:`problems` lists ``(position, url, message)`` of
    the records not fully searchable or skipped (see the module doc).
    """

    BATCH = 500
    #: records per FTS statement (one or two index segments each)
    FTS_CHUNK = 8000
    #: up to this many records, merge the FTS index segments into one at
    #: the end. Measured: 13k records ~1.5 s more build time, 130k ~20 s,
    #: for lookups faster by a few tenths of a millisecond at most: off.
    FTS_OPTIMIZE = 0

    def __init__(self, db_path, *, fts: bool | None = None):
        self.db_path = os.fspath(db_path)
        self.fts = fts5_available() if fts is None else bool(fts)
        if self.fts and not fts5_available():
            raise EngineError("this Python's SQLite has no FTS5 trigram "
                              "tokenizer")
        self.problems = []
        self._n = 0          # records seen
        self._stored = 0     # records stored (the next rid)
        self._py = []
        self._keys = []      # order_values per stored record, for the ranks
        self._batch = ([], [], [], [], [], [])
        self._batch_start = 0
        self._fts_next = [0, 0]  # per writer: the first rid not in FTS yet
        self._done = False
        self._writers = []
        self._dbs = []
        self._paths = []
        try:
            # A: the database itself (md, doc, fts_md); B: the rest
            self.tmp_path = self._temporary()
            self._aux_path = self._temporary()
            self._db = self._connect(self.tmp_path)
            self._aux = self._connect(self._aux_path)
            if self.fts:
                for stmt in _FTS_SCHEMA:
                    self._db.execute(stmt)
                for stmt in _FTS_SCHEMA:
                    if "fts_rec" in stmt:
                        self._aux.execute(stmt)
            for db in self._dbs:
                db.execute("BEGIN")
            size = 2 * self.FTS_CHUNK // self.BATCH
            self._writers = [_Writer(self._db, self._write_a, size),
                             _Writer(self._aux, self._write_b, size)]
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        except BaseException:
            self.abort()
            raise

    def _temporary(self) -> str:
        directory, name = os.path.split(os.path.abspath(self.db_path))
        try:
            fd, path = tempfile.mkstemp(prefix=name + ".", suffix=".tmp",
                                        dir=directory)
        except OSError as e:
            raise EngineError(f"cannot write the search database "
                              f"{self.db_path}: {e.strerror or e}") from e
        os.close(fd)
        self._paths.append(path)
        return path

    def _connect(self, path, new=True):
        db = sqlite3.connect(path, isolation_level=None,
                             check_same_thread=False)
        self._dbs.append(db)
        db.create_function("fold", 1, _fold_sql, deterministic=True)
        # a throw-away file until finish(): no journal, no syncing
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("PRAGMA temp_store=MEMORY")
        # 32 MiB of page cache per connection: as fast as 128 MiB here, and
        # an import of 13k records peaks at ~300 MB instead of ~400 MB
        db.execute("PRAGMA cache_size=-32768")
        if new:
            db.executescript(_SCHEMA)
        return db

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._done:
            self.abort()
        return False

    def _failed(self, e) -> EngineError:
        return EngineError(f"cannot write the search database {self.db_path} "
                           f"(temporary file {self.tmp_path}): {e}")

    # -- the writers ---------------------------------------------------------------

    def _fts_fill(self, db, k, stmt, last, final):
        # every FTS_CHUNK records (each FTS statement writes a new index
        # segment: fewer, larger ones are cheaper to write and to read)
        if self.fts and (final
                         or last + 1 - self._fts_next[k] >= self.FTS_CHUNK):
            db.execute(stmt, (self._fts_next[k], last))
            self._fts_next[k] = last + 1

    def _write_a(self, first, last, rows):
        db = self._db
        if rows is not None:
            mds, docs, mdids = rows
            db.executemany("INSERT INTO md VALUES (?, ?, ?, ?)", mds)
            db.executemany("INSERT INTO doc VALUES (?, ?, ?, ?, ?)", docs)
            db.executemany("INSERT INTO mdid VALUES (?, ?, ?)", mdids)
        self._fts_fill(db, 0, _FTS_FILL[1], last, rows is None)

    def _write_b(self, first, last, rows):
        db = self._aux
        if rows is not None:
            recs, txts, subs = rows
            db.executemany(f"INSERT INTO rec({', '.join(_REC_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_REC_COLUMNS))})",
                           recs)
            db.executemany(f"INSERT INTO txt({', '.join(_TXT_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_TXT_COLUMNS))})",
                           txts)
            db.executemany("INSERT INTO sub VALUES (?, ?, ?)", subs)
        self._fts_fill(db, 1, _FTS_FILL[0], last, rows is None)

    def _flush(self, final=False):
        first, last = self._batch_start, self._stored - 1
        recs, txts, subs, mds, docs, mdids = self._batch
        try:
            if last >= first:
                self._writers[0].put((first, last, (mds, docs, mdids)))
                self._writers[1].put((first, last, (recs, txts, subs)))
            if final:
                for w in self._writers:
                    w.put((0, last, None))
        except sqlite3.Error as e:
            raise self._failed(e) from e
        self._batch = ([], [], [], [], [], [])
        self._batch_start = self._stored

    # -- the API -----------------------------------------------------------------------

    def add(self, record: dict, json_text: str | None = None) -> None:
        """Add the next record (a dict in API v2 shape); ``json_text``: its
        JSON text (UTF-8-encodable), when the caller has serialised it."""
        if self._done:
            raise EngineError("this builder is finished")
        pos = self._n
        self._n += 1
        url = record.get("url") if isinstance(record, dict) else None
        problems = []
        try:
            if not isinstance(record, dict):
                raise TypeError(f"not a dict but {type(record).__name__}")
            rows = _record_rows(self._stored, record, problems, json_text)
            keys = _order_values(record)
            api_id, md_ids = _api_ids(self._stored, record)
        # what odd values and shapes can raise; a programming error (a
        # NameError, say) must not pass for a bad record
        except (TypeError, ValueError, AttributeError, KeyError, IndexError,
                RecursionError, OverflowError) as e:
            self.problems.append((pos, url, f"skipped: {type(e).__name__}: "
                                            f"{e}"[:300]))
            lgr.warning("record %s (%s) not added to the search database: %s",
                        pos, url, e)
            return
        for p in problems:
            self.problems.append((pos, url, p))
        if problems:
            lgr.debug("record %s (%s): %s", pos, url, "; ".join(problems))
        if rows[5]:
            self._py.append(self._stored)
        self._stored += 1
        self._keys.append(keys)
        recs, txts, subs, mds, docs, mdids = self._batch
        recs.append(rows[0])
        txts.append(rows[1])
        subs.extend(rows[2])
        mds.extend(rows[3])
        docs.append(rows[4] + (api_id,))
        mdids.extend(md_ids)
        if len(recs) >= self.BATCH:
            self._flush()

    def _ranks(self):
        """Rows (ranks..., rid) for UPDATE: per order key and direction,
        each record's position in search.order_records' order."""
        keys = self._keys
        n = len(keys)
        by_tie = sorted(range(n), key=lambda i: keys[i][0])
        columns = []
        for j in range(len(ORDER_KEYS)):
            present = [i for i in by_tie if keys[i][1][j] is not None]
            missing = [i for i in by_tie if keys[i][1][j] is None]
            for reverse in (False, True):
                # stable sorts: ties keep the url/source order, also reversed
                order = sorted(present, key=lambda i: keys[i][1][j],
                               reverse=reverse) + missing
                rank = [0] * n
                for pos, i in enumerate(order):
                    rank[i] = pos
                columns.append(rank)
        return zip(*columns, range(n))

    def _merge_aux(self):
        """Copy the second file's tables into the first."""
        db = self._db
        db.execute("ATTACH DATABASE ? AS b", (self._aux_path,))
        for table in ("rec", "txt", "sub"):
            db.execute(f"INSERT INTO main.{table} SELECT * FROM b.{table}")
        if self.fts:
            # fts_rec as it was built in b: its shadow tables, row by row
            # (external content: they hold the index only)
            shadows = [r[0] for r in db.execute(
                "SELECT name FROM b.sqlite_master WHERE type = 'table' AND "
                "name LIKE 'fts\\_rec\\_%' ESCAPE '\\'")]
            try:
                db.execute("SAVEPOINT copy")
                for t in shadows:
                    db.execute(f"DELETE FROM main.{t}")
                    db.execute(f"INSERT INTO main.{t} SELECT * FROM b.{t}")
                db.execute("RELEASE copy")
            except sqlite3.Error as e:  # e.g. SQLITE_DBCONFIG_DEFENSIVE
                lgr.debug("cannot copy the FTS index (%s); rebuilding it", e)
                db.execute("ROLLBACK TO copy")
                db.execute("RELEASE copy")
                db.execute("INSERT INTO fts_rec(fts_rec) VALUES('delete-all')")
                db.execute(_FTS_FILL[0], (0, self._stored))
        db.execute("COMMIT")
        db.execute("DETACH DATABASE b")

    def finish(self, fingerprint: str) -> int:
        """Build the indexes, store ``fingerprint``, move the database into
        place; return the number of records stored."""
        if self._done:
            raise EngineError("this builder is finished")
        if not isinstance(fingerprint, str):
            raise TypeError("the fingerprint must be a str")
        with aborting(self, "write"):
            self._flush(final=True)
            for w in self._writers:
                w.stop()
            for w in self._writers:
                if w.error is not None:
                    raise w.error
            self._aux.execute("COMMIT")
            self._aux.close()
            self._merge_aux()
            os.unlink(self._aux_path)
            # a new connection: the old one's FTS5 state predates the copy
            self._db.close()
            db = self._db = self._connect(self.tmp_path, new=False)
            db.execute("BEGIN")
            sets = ", ".join(f"{c} = ?" for c in _RANK_COLUMNS)
            db.executemany(f"UPDATE rec SET {sets} WHERE rid = ?",
                           self._ranks())
            # the order keys, for the first patch of this database as for
            # the later ones (engine_patch: reading them from the records
            # again cost that patch ~0.4 s of 13,000 records)
            db.executemany("INSERT INTO okey VALUES (?, ?)", (
                (rid, json.dumps(k)) for rid, k in enumerate(self._keys)))
            self._keys = []
            # the unique statistics' inputs (see the schema); no UPDATE ...
            # FROM: SQLite before 3.33 lacks it
            for column, ranking in _GROUP_RANKS:
                db.execute("CREATE TEMP TABLE k(rid INTEGER PRIMARY KEY, v)")
                db.execute(f"INSERT INTO temp.k {ranking}")
                db.execute(f"UPDATE rec SET {column} = (SELECT v FROM temp.k "
                           "WHERE temp.k.rid = rec.rid)")
                db.execute("DROP TABLE temp.k")
            for stmt in _INDEXES:
                db.execute(stmt)
            if self.fts and self._stored <= self.FTS_OPTIMIZE:
                for t in ("fts_rec", "fts_md"):
                    db.execute(f"INSERT INTO {t}({t}) VALUES('optimize')")
            meta = {"schema": SCHEMA_VERSION, "fingerprint": fingerprint,
                    "count": self._stored, "fts": int(self.fts),
                    "py": json.dumps(self._py), "okey": fingerprint,
                    "sqlite": sqlite3.sqlite_version}
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.execute("ANALYZE")
            db.execute("COMMIT")
            db.close()
            os.replace(self.tmp_path, self.db_path)
        self._done = True
        return self._stored

    def abort(self) -> None:
        """Discard the temporary files (idempotent)."""
        self._done = True
        for w in self._writers:
            w.error = w.error or EngineError("aborted")
            w.stop()
        for db in self._dbs:
            try:
                db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        for path in self._paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def build(db_path, records, fingerprint: str, *, fts: bool | None = None) -> int:
    """Build the search database of ``records`` at ``db_path``; return the
    number of records stored."""
    with Builder(db_path, fts=fts) as b:
        for rec in records:
            b.add(rec)
        return b.finish(fingerprint)


# -- query -> SQL -----------------------------------------------------------------------------

# cost ranks for ordering the operands of AND (per row; IN subqueries are
# materialised once per statement)
_C_COLUMN, _C_SET, _C_SCAN, _C_BIG_SCAN, _C_PYTHON = 1, 2, 5, 30, 200


class _Compiled:
    """A query tree as SQL: ``where`` (``{rid}`` stands for the record id),
    its ``params``, the ``sets`` it reads (see _Conn.ensure), the ``tests``
    py_test(k, ...) calls as (term, callable, is_regex), and which tables it
    reads (rec ``r``, txt ``x``)."""
    __slots__ = ("where", "params", "sets", "tests", "regex", "r_cols",
                 "uses_x")

    def __init__(self, where, params, sets, tests, r_cols, uses_x):
        self.where = where
        self.params = params
        self.sets = sets
        self.tests = tests
        self.regex = [t for t, _, rx in tests if rx]
        self.r_cols = r_cols   # the rec columns it reads
        self.uses_x = uses_x


def _phrase(v: str, column: str | None = None) -> str:
    """An FTS5 phrase query (a substring search with the trigram tokenizer)."""
    q = '"' + v.replace('"', '""') + '"'
    return q if column is None else "{" + column + "} : " + q


def _balanced(op: str, parts: list) -> str:
    """``a op b op c ...`` as balanced parentheses (SQLite limits the depth
    of expressions to 1000), the operands in the same order."""
    while len(parts) > 1:
        parts = [f"({parts[i]} {op} {parts[i + 1]})" if i + 1 < len(parts)
                 else parts[i] for i in range(0, len(parts), 2)]
    return parts[0]


def _operand(x):
    """A comparison operand SQLite compares exactly, or None."""
    if isinstance(x, int) and not _sql_number(x):
        f = float(x)
        return f if f == x else None  # beyond int64 but exact as a double
    return x


# a metadata row whose extractor name or JSON text contains the (folded)
# needle, given twice
_MD_CONTAINS = (f"(instr({_folded('m.name_lc')}, ?) > 0 OR "
                f"instr({_folded('m.js')}, ?) > 0)")

_LONE_SET = re.compile(r"(NOT )?\{rid\} IN temp\.(s_[0-9a-f]+)\Z")

# the metadata rows of the record (md.mid = rid << 20 | k): a rowid range
_MD_OF_R = (f"m.mid BETWEEN ({{rid}} << {_MID_BITS}) "
            f"AND ({{rid}} << {_MID_BITS}) + {_MAX_MD}")


class _Compiler:
    """Query tree -> :class:`_Compiled`; see the module doc."""

    def __init__(self, fts: bool):
        self.fts = fts
        self.tests = []
        self.sets = {}
        self.r_cols = set()
        self.uses_x = False

    def compile(self, tree) -> _Compiled:
        sql, params = self._node(tree, False)
        return _Compiled(sql, params, list(self.sets.values()), self.tests,
                         frozenset(self.r_cols), self.uses_x)

    # -- helpers ----------------------------------------------------------------

    def _set(self, sql: str, params: list) -> str:
        """``{rid} IN`` the record ids ``sql`` selects, kept in a temporary
        table of the connection (see _Conn.ensure)."""
        if not all(_encodable(p) for p in params if isinstance(p, str)):
            raise _Unencodable()
        key = repr((sql, params)).encode("utf-8")
        name = "s_" + hashlib.sha1(key).hexdigest()[:20]
        self.sets[name] = (name, sql, params)
        return f"{{rid}} IN temp.{name}"

    def _r(self, col):
        self.r_cols.add(col)
        return "r." + col

    def _x(self, col):
        self.uses_x = True
        return "x." + col

    def _text(self, field):
        """The column of a text field (url is in rec too)."""
        if field == "url":
            return self._r("url")
        return self._x(_TEXT_COLUMN[field])

    def _fts_all(self, needles, column):
        """An FTS5 query for the rows whose ``column`` contains every needle
        of 3 or more characters (None if there is none)."""
        if not self.fts:
            return None
        # the index holds folded texts: a needle of the lowercased text
        # folds to a needle of the folded one (fields.fold)
        long = [n for n in map(F.fold, needles) if len(n) >= 3]
        return " AND ".join(_phrase(n, column) for n in long) or None

    def _test(self, term, fn, regex=False) -> int:
        self.tests.append((term, fn, regex))
        return len(self.tests) - 1

    # -- costs: the order of AND's operands ----------------------------------------

    def cost(self, node) -> int:
        """What testing one record costs (after once-per-statement work)."""
        if isinstance(node, Term):
            return self._term_cost(node)
        if isinstance(node, Not):
            return self.cost(node.item) + 1
        if isinstance(node, (And, Or)):
            return sum(self.cost(x) for x in node.items)
        return 0

    def _term_cost(self, t: Term) -> int:
        f, op, v = t.field, t.op, t.value
        fts = self.fts and len(F.fold(v)) >= 3
        if f is None:
            return _C_COLUMN if not v else _C_SET if fts else _C_BIG_SCAN
        if f == "metadata":
            if t.path or op in ("eq", "regex"):
                return _C_PYTHON
            if not v:
                return _C_COLUMN if t.extractors is None else _C_SET
            return _C_SET if fts else _C_BIG_SCAN
        if f in ("tags", "branches") and (t.path or op in ("eq", "regex")):
            return _C_PYTHON
        if op == "regex":
            return _C_PYTHON
        if f in F.SUBDATASET_FIELDS:
            return _C_SET
        if op == "contains" and v:
            return _C_SET if fts and f in FTS_FIELDS else _C_SCAN
        return _C_COLUMN

    # -- the tree ------------------------------------------------------------------------

    def _node(self, node, restricted: bool):
        """(sql, params) of a node; params in the order of the SQL.

        ``restricted``: a cheaper operand of an enclosing AND comes first,
        so this node is tested on the records that one leaves only; a leaf
        then tests each record rather than building the set of all the
        records it matches.
        """
        if isinstance(node, Term):
            try:
                sql, params = self._term(node, restricted)
                if not all(_encodable(p) for p in params
                           if isinstance(p, str)):
                    raise _Unencodable()
            except _Unencodable:
                # a value with a lone surrogate: only py records (matched
                # in Python) can contain it
                return "0", []
            return sql, params
        if isinstance(node, Not):
            sql, params = self._node(node.item, restricted)
            return f"NOT {sql}", params
        if isinstance(node, (And, Or)):
            items = list(dict.fromkeys(node.items))  # a AND a is a
            if isinstance(node, And):
                # cheap and selective first, NOT last (as evaluate.py)
                items.sort(key=lambda x: (isinstance(x, Not), self.cost(x)))
                parts = [self._node(x, restricted or i > 0)
                         for i, x in enumerate(items)]
            else:
                parts = [self._node(x, restricted) for x in items]
            sql = _balanced("AND" if isinstance(node, And) else "OR",
                            [p[0] for p in parts])
            return sql, [x for p in parts for x in p[1]]
        if isinstance(node, MatchAll):
            return "1", []
        raise TypeError(f"not a query tree node: {node!r}")

    # -- leaves (each 0 or 1, never NULL) ------------------------------------------

    def _term(self, t: Term, restricted: bool):
        f, op = t.field, t.op
        if f is None:
            return self._bare(F.fold(t.value), restricted)
        if f == "metadata":
            return self._metadata(t, restricted)
        if f in ("tags", "branches") and (t.path or op in ("eq", "regex")):
            k = self._test(t, _json_test(t, branch_names=(
                f == "branches" and not t.path)), op == "regex")
            # evaluate.py's needles, and what a regex match contains
            needles = json_needles(t) + (_regex_literals(t.value)
                                     if op == "regex" else [])
            col = self._x(f)
            conds = [f"{col} IS NOT NULL"]
            q = self._fts_all(needles, f)
            if q:  # the records whose text has the needles, found by FTS
                conds.insert(0, self._set("SELECT rowid FROM fts_rec WHERE "
                                          "fts_rec MATCH ?", [q]))
            conds += [f"instr({col}, ?) > 0" for _ in needles]
            conds.append(f"py_test({k}, {col})")
            return "(" + " AND ".join(conds) + ")", needles
        if f in F.SUBDATASET_FIELDS:
            return self._subdatasets(t)
        if f in F.NUMBER_FIELDS and op not in ("contains", "regex"):
            c = self._r("n_" + f)
            x = _operand(t.operand)
            if x is None:  # an integer SQLite cannot hold: compare in Python
                cmp, operand = getattr(operator, op), t.operand
                k = self._test(t, lambda s: cmp(s, operand))
                return f"({c} IS NOT NULL AND py_test({k}, {c}))", []
            return f"({c} IS NOT NULL AND {c} {_CMP_SQL[op]} ?)", [x]
        if f in F.DATE_FIELDS and op not in ("contains", "regex"):
            start, end = t.operand
            c = self._r("d_" + f)
            sql, params = {
                "gt": (f"{c} >= ?", [end]), "ge": (f"{c} >= ?", [start]),
                "lt": (f"{c} < ?", [start]), "le": (f"{c} < ?", [end]),
                "eq": (f"{c} >= ? AND {c} < ?", [start, end])}[op]
            return f"({c} IS NOT NULL AND {sql})", params
        col = self._text(f)
        v = t.value.lower()
        if op == "contains":  # substrings of the folded texts
            v = F.fold(t.value)
            if not v:
                return f"({col} IS NOT NULL)", []
            if self.fts and f in FTS_FIELDS and len(v) >= 3:
                return self._set("SELECT rowid FROM fts_rec WHERE fts_rec "
                                 "MATCH ?", [_phrase(v, f)]), []
            return f"coalesce(instr({_folded(col)}, ?), 0) > 0", [v]
        if op == "eq":
            return f"({col} IS NOT NULL AND {col} = ?)", [v]
        if op == "regex":
            k = self._test(t, _regex_test(t.value), True)
            literals = _regex_literals(t.value)
            conds = [f"{col} IS NOT NULL"]
            q = self._fts_all(literals, f) if f in FTS_FIELDS else None
            if q:
                conds.insert(0, self._set("SELECT rowid FROM fts_rec WHERE "
                                          "fts_rec MATCH ?", [q]))
            conds += [f"instr({col}, ?) > 0" for _ in literals]
            conds.append(f"py_test({k}, {col})")
            return "(" + " AND ".join(conds) + ")", literals
        raise AssertionError(f"unhandled term {t!r}")  # pragma: no cover

    def _md(self, cond, params, restricted):
        """The records with a metadata row meeting ``cond``: tested per
        record when restricted, else one pass over md (a kept set)."""
        if restricted:
            return (f"EXISTS (SELECT 1 FROM md m WHERE {_MD_OF_R} AND "
                    f"{cond})", params)
        return self._set(f"SELECT mid >> {_MID_BITS} FROM md m WHERE {cond}",
                         params), []

    def _bare(self, v: str, restricted: bool):
        """A word or "string": any default field, any metadata record's
        extractor name or JSON text contains it."""
        if not v:
            return self._r("has_all"), []
        if self.fts and len(v) >= 3:
            q = _phrase(v)
            return self._set(
                "SELECT rowid FROM fts_rec WHERE fts_rec MATCH ? UNION ALL "
                f"SELECT rowid >> {_MID_BITS} FROM fts_md WHERE fts_md "
                "MATCH ?", [q, q]), []
        conds = [f"coalesce(instr({_folded(self._text(c))}, ?), 0) > 0"
                 for c in DEFAULT_COLUMNS]
        md, params = self._md(_MD_CONTAINS, [v, v], restricted)
        return "(" + " OR ".join(conds + [md]) + ")", \
            [v] * len(conds) + params

    def _metadata(self, t: Term, restricted: bool):
        """evaluate.py's _metadata: with [extractors] their JSON texts,
        without also every extractor name."""
        names = None
        if t.extractors is not None:
            # a name SQLite cannot hold is only in py records
            names = [n for n in dict.fromkeys(t.extractors) if _encodable(n)]
            if not names:
                return "0", []
        name_sql = ("" if names is None
                    else f" AND m.name IN ({', '.join('?' * len(names))})")
        name_params = names or []
        if t.path or t.op in ("eq", "regex"):
            k = self._test(t, _json_test(t), t.op == "regex")
            needles = json_needles(t) + (_regex_literals(t.value)
                                     if t.op == "regex" else [])
            cond = "".join(" AND instr(m.js, ?) > 0" for _ in needles)
            sql = (f"EXISTS (SELECT 1 FROM md m WHERE {_MD_OF_R}{name_sql}"
                   f"{cond} AND py_test({k}, m.js))")
            q = self._fts_all(needles, "js")
            if q:  # the records with the needles in some metadata, by FTS
                sql = "(" + self._set(
                    f"SELECT rowid >> {_MID_BITS} FROM fts_md WHERE fts_md "
                    "MATCH ?", [q]) + f" AND {sql})"
            return sql, name_params + needles
        v = F.fold(t.value)
        if not v:
            if names is None:
                return f"({self._r('n_md')} > 0)", []
            return self._set(f"SELECT mid >> {_MID_BITS} FROM md m "
                             f"WHERE 1{name_sql}", name_params), []
        if self.fts and len(v) >= 3:
            if names is None:  # the extractor name or the JSON text
                return self._set(f"SELECT rowid >> {_MID_BITS} FROM fts_md "
                                 "WHERE fts_md MATCH ?", [_phrase(v)]), []
            return self._set(
                f"SELECT mid >> {_MID_BITS} FROM md m WHERE mid IN (SELECT "
                f"rowid FROM fts_md WHERE fts_md MATCH ?){name_sql}",
                [_phrase(v, "js")] + name_params), []
        if names is None:
            return self._md(_MD_CONTAINS, [v, v], restricted)
        return self._md(f"instr({_folded('m.js')}, ?) > 0{name_sql}",
                        [v] + name_params, restricted)

    def _subdatasets(self, t: Term):
        """subds_id/subds_url: any subdataset's value."""
        f, op, v = t.field, t.op, t.value.lower()
        if op == "regex":
            k = self._test(t, _regex_test(t.value), True)
            literals = _regex_literals(t.value)
            cond = "".join(" AND instr(s.v, ?) > 0" for _ in literals)
            return ("EXISTS (SELECT 1 FROM sub s WHERE s.rid = {rid} AND "
                    f"s.f = ?{cond} AND py_test({k}, s.v))", [f] + literals)
        if op == "eq":
            # a URL also by its other spelling (a path by its file:// URL)
            vs = F.subdataset_url_needles(t.value) if f == "subds_url" \
                else [v]
            sql = ("SELECT rid FROM sub WHERE f = ? AND v IN "
                   f"({', '.join('?' * len(vs))})")
            params = [f, *vs]
        elif not v:
            sql, params = "SELECT rid FROM sub WHERE f = ?", [f]
        else:
            sql = (f"SELECT rid FROM sub WHERE f = ? AND instr({_folded('v')}"
                   ", ?) > 0")
            params = [f, F.fold(t.value)]
        return self._set(sql, params), []


def _unsafe_literals() -> set:
    """ASCII characters a literal cannot be looked up by: those that
    re.IGNORECASE also matches with other characters than their str.lower()
    (i with ı, s with ſ), and those JSON text escapes. Patterns are matched
    by the ``regex`` module (parser.compile_regex), whose IGNORECASE matches
    fewer such pairs (I with ı, s with ſ; not i with ı): re's set covers
    them."""
    try:
        from re._casefix import _EXTRA_CASES
        extra = {chr(c) for c in _EXTRA_CASES if c < 128}
    except ImportError:  # pragma: no cover - Python < 3.11
        extra = {"i", "s"}
    extra |= {c.upper() for c in extra}
    return extra | {'"', "\\"} | {chr(c) for c in range(32)} | {"\x7f"}


_UNSAFE_LITERALS = _unsafe_literals()


def _regex_literals(pattern: str) -> list:
    """Texts every match of ``pattern`` (case-insensitive) contains, in a
    lowercased text and in its JSON rendering: the runs of plain ASCII
    literals at the pattern's top level (zero-width assertions do not break
    a run). Records without them need not be tested."""
    try:
        items = _sre.parse(pattern, re.IGNORECASE)
    except Exception:  # pragma: no cover - the parser checked the pattern
        return []
    runs, run = [], []
    for op, av in items:
        if op is _src.AT:
            continue
        if op is _src.LITERAL and av < 128 \
                and chr(av) not in _UNSAFE_LITERALS:
            run.append(chr(av).lower())
            continue
        if run:
            runs.append("".join(run))
            run = []
    if run:
        runs.append("".join(run))
    return runs


def _regex_test(pattern):
    rx = compile_regex(pattern)

    def test(s, deadline):
        # the deadline of the running statement (compiled tests are shared)
        return bounded_search(rx, s, deadline) is not None
    return test


def _json_test(t: Term, branch_names=False):
    """evaluate.json_test of one JSON text (after the needles)."""
    test = json_test(t, branch_names)
    loads = json.loads

    def run(s, deadline=None):
        try:
            obj = loads(s)
        except ValueError:
            return False
        return test(obj, deadline)
    return run


# -- connections --------------------------------------------------------------------------------

class _Timeout(Exception):
    pass


class _Unencodable(Exception):
    pass


class _Budget:
    """The regular-expression time budget of one statement."""
    __slots__ = ("deadline", "fired", "term")

    def __init__(self, seconds, term):
        self.deadline = time.monotonic() + seconds
        self.fired = False
        self.term = term  # reported when the budget runs out

    def fire(self) -> None:
        self.fired = True

    def expired(self) -> bool:
        if not self.fired and time.monotonic() > self.deadline:
            self.fired = True
        return self.fired


class _Conn:
    """One read-only connection with py_test() registered; ``tests``,
    ``budget`` and ``current`` belong to the statement running on it."""

    def __init__(self, uri):
        self.db = sqlite3.connect(uri, uri=True, check_same_thread=False,
                                  isolation_level=None, cached_statements=256)
        # the file never changes in place (immutable=1): map it
        self.db.execute("PRAGMA mmap_size=2147418112")
        # 8 MiB of page cache per connection (a server has one per worker
        # thread); the file itself is memory-mapped and shared
        self.db.execute("PRAGMA cache_size=-8192")
        self.db.execute("PRAGMA temp_store=MEMORY")
        self.tests = ()
        self.budget = None
        self.current = None
        self.sets = OrderedDict()  # temp tables of FTS results, LRU
        self.db.create_function("py_test", 2, self._py_test)
        self.db.create_function("fold", 1, _fold_sql, deterministic=True)

    #: FTS results kept per connection (each a table of record ids)
    MAX_SETS = 32

    def ensure(self, sets):
        """Create the temporary tables of ``sets`` [(name, sql, params)]
        that do not exist yet. An FTS lookup then costs once for count(),
        page() and stats() of a query, and for repeated searches (as
        SearchView's leaf cache)."""
        for name, sql, params in sets:
            if name in self.sets:
                self.sets.move_to_end(name)
                continue
            self.db.execute(f"CREATE TEMP TABLE {name}(rid INTEGER PRIMARY "
                            "KEY)")
            self.sets[name] = True
            self.db.execute(f"INSERT OR IGNORE INTO temp.{name} {sql}", params)
        if len(self.sets) > self.MAX_SETS:
            needed = {name for name, _, _ in sets}
            for name in [n for n in self.sets if n not in needed][
                    :len(self.sets) - self.MAX_SETS]:
                del self.sets[name]
                self.db.execute(f"DROP TABLE temp.{name}")

    def _py_test(self, k, s):
        if s is None:
            return 0
        term, fn, regex = self.tests[k]
        budget = self.budget
        try:
            if regex:  # a statement with a regex test always has a budget
                self.current = term
                if budget.expired():
                    raise _Timeout()
                return 1 if fn(s, budget.deadline) else 0
            return 1 if fn(s) else 0
        except TimeoutError:  # bounded_search: the budget has run out
            # (by the regex module's clock, which may stop a hair early)
            budget.fire()
            raise _Timeout() from None
        except (RecursionError, ValueError, TypeError):
            # e.g. a document too deeply nested to load: no match
            return 0

    def _progress(self):
        return 1 if self.budget is not None and self.budget.expired() else 0


# -- the engine -----------------------------------------------------------------------------

_HEADER = b"SQLite format 3\x00"


def _check_file(path: str) -> None:
    """Raise EngineDamaged unless ``path`` is a complete SQLite file (the
    page count in its header times the page size is its length)."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise EngineDamaged(f"the search database {path} does not exist") \
            from None
    except OSError as e:
        raise EngineDamaged(f"cannot read the search database {path}: "
                            f"{e.strerror or e}") from e
    if len(head) < 100 or not head.startswith(_HEADER):
        raise EngineDamaged(f"the search database {path} is not an SQLite "
                            "database")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]
    if not page or size % page or (valid and pages * page != size):
        raise EngineDamaged(f"the search database {path} is truncated or "
                            "damaged")


class Engine:
    """A search database opened read-only (:meth:`open`); see the module doc.

    Safe to share between threads and to keep open for many searches:
    every call borrows a connection from a pool (made on demand).
    Methods take a parsed query tree or a query text.
    """

    def __init__(self, path, meta, *, regex_timeout=None, fts=None):
        self.path = os.fspath(path)
        self.regex_timeout = (REGEX_TIMEOUT if regex_timeout is None
                              else regex_timeout)
        self._uri = _uri(self.path)
        self.n = int(meta["count"])
        has_fts = bool(int(meta["fts"]))
        if fts and not (has_fts and fts5_available()):
            raise EngineError(f"the search database {self.path} has no "
                              "full-text index usable here")
        # a database built with FTS is searched by scanning where this
        # Python's SQLite lacks FTS5
        self.fts = has_fts and fts5_available() and fts is not False
        self.fingerprint = meta["fingerprint"]
        self._py_rids = json.loads(meta["py"])
        self._py_records = None   # rid -> record, loaded when needed
        self._pool = []
        self._all = []
        self._lock = threading.Lock()
        self._cache = OrderedDict()   # tree -> _Compiled
        self._counts = OrderedDict()  # tree -> count (to plan page())
        self._closed = False

    @classmethod
    def open(cls, db_path, fingerprint: str | None = None, *,
             regex_timeout=None, fts: bool | None = None) -> "Engine":
        """Open ``db_path`` read-only.

        Raises EngineDamaged when it is missing, not a (complete) SQLite
        database or of another schema version, EngineStale when
        ``fingerprint`` is given and is not the stored one. ``fts=False``
        searches by scanning even where a full-text index exists.
        """
        path = os.fspath(db_path)
        _check_file(path)
        try:
            db = sqlite3.connect(_uri(path), uri=True)
            try:
                meta = dict(db.execute("SELECT key, value FROM meta"))
                if str(meta.get("schema")) != str(SCHEMA_VERSION):
                    raise EngineDamaged(
                        f"the search database {path} has schema version "
                        f"{meta.get('schema')}, not {SCHEMA_VERSION}")
                missing = {"count", "fts", "fingerprint", "py"} - set(meta)
                if missing:
                    raise EngineDamaged(f"the search database {path} lacks "
                                        f"{', '.join(sorted(missing))}")
                int(meta["count"]), int(meta["fts"]), json.loads(meta["py"])
                names = {r[0] for r in db.execute(
                    "SELECT name FROM sqlite_master")}
                missing = {"rec", "txt", "md", "sub", "doc", "mdid"} - names
                if int(meta["fts"]):
                    missing |= {"fts_rec", "fts_md"} - names
                if missing:
                    raise EngineDamaged(f"the search database {path} lacks "
                                        f"tables {', '.join(sorted(missing))}")
            finally:
                db.close()
        except (sqlite3.Error, ValueError, TypeError) as e:
            raise EngineDamaged(f"cannot read the search database {path}: "
                                f"{e}") from e
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise EngineStale(f"the search database {path} is stale (it was "
                              "built from other data)")
        return cls(path, meta, regex_timeout=regex_timeout, fts=fts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __len__(self):
        return self.n

    def close(self) -> None:
        """Close the connections (not while another thread searches)."""
        with self._lock:
            self._closed = True
            conns, self._all, self._pool = self._all, [], []
        for c in conns:
            c.db.close()

    # -- connections and statements -------------------------------------------------

    @contextmanager
    def _connection(self):
        with self._lock:
            if self._closed:
                raise EngineError(f"the search database {self.path} is closed")
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            try:
                conn = _Conn(self._uri)
                # the path may name a newer file by now (another process
                # rebuilt it): a new connection to it would mix two states
                # in one answer of this engine
                found = conn.db.execute("SELECT value FROM meta WHERE key = "
                                        "'fingerprint'").fetchone()
            except sqlite3.Error as e:
                raise self._damaged(e) from e
            if not found or found[0] != self.fingerprint:
                conn.db.close()
                raise EngineStale(f"the search database {self.path} was "
                                  "replaced; search again")
            with self._lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            conn.tests, conn.budget, conn.current = (), None, None
            with self._lock:
                if not self._closed:
                    self._pool.append(conn)
                    conn = None
            if conn is not None:  # closed meanwhile
                conn.db.close()

    def _damaged(self, e) -> EngineDamaged:
        return EngineDamaged(f"cannot read the search database {self.path}: "
                             f"{e}")

    def _prepare(self, query):
        """(tree, compiled, query text) of a parsed tree or a query text."""
        text = ""
        if isinstance(query, str):
            text, query = query, parse(query)
        with self._lock:
            c = self._cache.get(query)
            if c is not None:
                self._cache.move_to_end(query)
        if c is None:
            c = _Compiler(self.fts).compile(query)
            with self._lock:
                self._cache[query] = c
                while len(self._cache) > 256:
                    self._cache.popitem(last=False)
        return query, c, text

    def _source(self, c: _Compiled, need_r=False, need_x=False,
                indexed=None):
        """(FROM clause, WHERE clause) of a statement over ``c``."""
        use_x = need_x or c.uses_x
        where = c.where
        if use_x and c.r_cols == {"url"} and not need_r:
            # txt has the URL too: spare the join
            where = where.replace("r.url", "x.url")
            use_r = False
        else:
            use_r = need_r or bool(c.r_cols) or not use_x
        use_r = use_r or bool(self._py_rids)
        if use_r:
            src = "rec r" + (f" INDEXED BY {indexed}" if indexed else "")
            if use_x:
                src += " JOIN txt x ON x.rid = r.rid"
            where = where.replace("{rid}", "r.rid")
        else:  # texts only: no need to visit rec
            src, where = "txt x", where.replace("{rid}", "x.rid")
        if self._py_rids:  # py records are matched in Python
            where = f"({where}) AND NOT r.py"
        return src, where

    @contextmanager
    def _run(self, conn: _Conn, c: _Compiled, text: str, tree=None):
        """Run ``c``'s statements on ``conn``: its tests, its time budget;
        SQLite errors become EngineDamaged, timeouts QueryError."""
        conn.tests = c.tests
        budget = None
        if c.sets:
            try:
                conn.ensure(c.sets)
            except sqlite3.Error as e:
                raise self._damaged(e) from e
        if c.regex:
            budget = _Budget(self.regex_timeout, c.regex[0])
            conn.budget = budget
            conn.db.set_progress_handler(conn._progress, 10000)
        try:
            yield
        except (sqlite3.OperationalError, _Timeout) as e:
            if budget is not None and budget.expired():
                term = conn.current or budget.term
                # compiled queries are shared by equal trees, whose terms
                # may stand elsewhere in the text: report this tree's
                raise self._timeout(_same_term(tree, term), text) from None
            if isinstance(e, sqlite3.OperationalError):
                raise self._damaged(e) from e
            raise
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        finally:
            if budget is not None:
                conn.db.set_progress_handler(None, 0)
                conn.budget = None

    def _timeout(self, term, text) -> QueryError:
        # the error SearchView.search raises
        return QueryError(
            "regular expression took too long", text, term.value_position,
            f"expected a pattern that runs within {self.regex_timeout:g} s"
            " (avoid nested or ambiguous repetitions)")

    # -- py records (matched in Python) -------------------------------------------------

    def _py_matches(self, tree, conn) -> list:
        """rids of the py records matching ``tree``, by the reference
        evaluator over those records (rendered once per engine)."""
        if not self._py_rids:
            return []
        _, rids, view = self._py_view(conn)
        if isinstance(tree, MatchAll):
            return list(rids)
        try:
            # within the budget of the statement that ran before (_run)
            found = view.evaluate(tree, deadline=None if conn.budget is None
                                  else conn.budget.deadline)
        except RegexTimeout as e:
            raise self._timeout(e.term, "") from None
        return [rids[i] for i in found]

    def _py_recs(self, conn) -> dict:
        """``{rid: record}`` of the py records."""
        return self._py_view(conn)[0]

    def _py_view(self, conn):
        """``({rid: record}, rids, SearchView)`` of the py records, built
        once; a record even the reference cannot render is left out of the
        view (it matches nothing)."""
        if self._py_records is None:
            rids = self._py_rids
            records = {rid: json.loads(full) for rid, full in conn.db.execute(
                f'SELECT rid, "full" FROM doc WHERE rid IN '
                f'({", ".join("?" * len(rids))})', rids)}
            kept = []
            for rid in sorted(records):
                try:
                    SearchView([records[rid]], cache_size=0)
                    kept.append(rid)
                except Exception as e:
                    lgr.debug("record %s of %s is not searchable: %s", rid,
                              self.path, e)
            self._py_records = (records, kept, SearchView(
                [records[rid] for rid in kept],
                regex_timeout=self.regex_timeout))
        return self._py_records

    # -- searching ----------------------------------------------------------------------

    def count(self, query) -> int:
        """How many records match ``query``."""
        tree, c, text = self._prepare(query)
        if isinstance(tree, MatchAll):
            return self.n
        src, where = self._source(c)
        sql = f"SELECT count(*) FROM {src} WHERE {where}"
        # one set, or NOT one set: count its table (each id is a record)
        lone = _LONE_SET.match(c.where)
        if lone and not self._py_rids:
            sql = f"SELECT count(*) FROM temp.{lone.group(2)}"
        with self._connection() as conn, self._run(conn, c, text, tree):
            n = conn.db.execute(sql, () if lone and not self._py_rids
                                else c.params).fetchone()[0]
            if lone and lone.group(1) and not self._py_rids:
                n = self.n - n
            n += len(self._py_matches(tree, conn))
        with self._lock:
            self._counts[tree] = n
            while len(self._counts) > 256:
                self._counts.popitem(last=False)
        return n

    def page(self, query, order_by: str = "last_update_dt",
             order_dir: str = "desc", limit: int | None = None) -> list:
        """The first ``limit`` (None: all) light records matching ``query``,
        in search.order_records' order (nulls last, ties by url, source)."""
        col = _rank_column(order_by, order_dir)
        tree, c, text = self._prepare(query)
        if limit is not None and limit <= 0:
            return []
        indexed = None
        if limit is not None:
            with self._lock:
                known = self._counts.get(tree)
            # walking the rank index costs ~ n * limit / count steps,
            # finding and sorting the matches ~ count (measured: a step is
            # ~5x cheaper than a lookup and sort)
            if known and known * known * 5 >= self.n * limit:
                indexed = "rec_" + col
        src, where = self._source(c, need_r=True, indexed=indexed)
        # rank only (rank, rid) pairs; the light records of the page after
        sql = (f"SELECT t.o, d.light FROM (SELECT r.{col} AS o, r.rid AS rid "
               f"FROM {src} WHERE {where} ORDER BY r.{col}"
               + ("" if limit is None else " LIMIT ?")
               + ") t JOIN doc d ON d.rid = t.rid ORDER BY t.o")
        params = list(c.params) + ([] if limit is None else [limit])
        with self._connection() as conn, self._run(conn, c, text, tree):
            rows = conn.db.execute(sql, params).fetchall()
            extra = self._py_matches(tree, conn)
            if extra:
                rows += conn.db.execute(
                    f"SELECT r.{col}, d.light FROM rec r JOIN doc d ON "
                    f"d.rid = r.rid WHERE r.rid IN "
                    f"({', '.join('?' * len(extra))})", extra).fetchall()
                rows.sort(key=lambda r: r[0])
                if limit is not None:
                    rows = rows[:limit]
        return [json.loads(light) for _, light in rows]

    def search(self, query, order_by: str = "last_update_dt",
               order_dir: str = "desc", limit: int | None = None):
        """``(count, page)`` (see :meth:`count`, :meth:`page`)."""
        return self.count(query), self.page(query, order_by, order_dir, limit)

    def stored_texts(self):
        """``{url: JSON text}`` of every stored record, as it was stored (the
        text :meth:`Builder.add` was given), without parsing any of it."""
        with self._connection() as conn:
            try:
                return dict(conn.db.execute(
                    'SELECT url, "full" FROM doc WHERE url IS NOT NULL '
                    'ORDER BY rid DESC'))  # the first record of a URL wins
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e

    def urls(self) -> set[str]:
        """The URLs of every stored record (nothing else is read)."""
        with self._connection() as conn:
            try:
                return {u for (u,) in conn.db.execute(
                    "SELECT url FROM doc WHERE url IS NOT NULL")}
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e

    def iter_records(self, query=None, order_by: str = "last_update_dt",
                     order_dir: str = "desc"):
        """Yield the full records matching ``query`` (None: all) in order,
        without loading them all at once (for exports)."""
        for _, _, full in self.iter_docs(query, order_by, order_dir):
            yield json.loads(full)

    def iter_docs(self, query=None, order_by: str = "last_update_dt",
                  order_dir: str = "desc"):
        """Yield ``(API id, url, stored JSON text)`` of the records matching
        ``query`` (None: all) in order, without parsing them (the url is
        None for a URL SQLite cannot hold: read it from the text)."""
        col = _rank_column(order_by, order_dir)
        tree, c, text = self._prepare(MatchAll() if query is None else query)
        src, where = self._source(c, need_r=True)
        # the matching rids first (within the time budget), then the
        # records in batches (as slowly as the consumer takes them)
        with self._connection() as conn, self._run(conn, c, text, tree):
            ranked = conn.db.execute(
                f"SELECT r.{col}, r.rid FROM {src} WHERE {where} "
                f"ORDER BY r.{col}", c.params).fetchall()
            extra = self._py_matches(tree, conn)
            if extra:
                ranked += conn.db.execute(
                    f"SELECT {col}, rid FROM rec WHERE rid IN "
                    f"({', '.join('?' * len(extra))})", extra).fetchall()
                ranked.sort()
        rids = [rid for _, rid in ranked]
        del ranked
        for i in range(0, len(rids), 256):
            chunk = rids[i:i + 256]
            with self._connection() as conn:
                try:
                    found = {rid: rest for rid, *rest in conn.db.execute(
                        f'SELECT rid, id, url, "full" FROM doc WHERE rid IN '
                        f'({", ".join("?" * len(chunk))})', chunk)}
                except sqlite3.DatabaseError as e:
                    raise self._damaged(e) from e
            for rid in chunk:
                yield tuple(found[rid])

    def records(self, urls) -> dict:
        """``{url: full record}`` of the records with these URLs (URLs not
        found are left out)."""
        urls = list(dict.fromkeys(urls))
        out = {}
        with self._connection() as conn:
            try:
                for i in range(0, len(urls), 500):
                    chunk = [u for u in urls[i:i + 500]
                             if isinstance(u, str) and _encodable(u)]
                    if not chunk:
                        continue
                    # rows come last first: the first record of a URL wins
                    out.update((u, json.loads(full)) for u, full in
                               conn.db.execute(
                                   f'SELECT url, "full" FROM doc WHERE url IN '
                                   f'({", ".join("?" * len(chunk))}) '
                                   f'ORDER BY rid DESC', chunk))
                if self._py_rids:
                    wanted = set(urls)
                    for rid, rec in sorted(self._py_recs(conn).items()):
                        u = rec.get("url")
                        if isinstance(u, str) and u in wanted \
                                and u not in out:
                            out[u] = rec
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e
        return out

    def _by_ids(self, ids, sql):
        """Rows of ``sql`` (``{ids}`` stands for the placeholders) for the
        integer ids among ``ids``, 500 at a time."""
        # 0 < id <= 2**48 (records.ID_BITS): anything else is no id of ours
        # (and bool is no id, though an int)
        ids = [i for i in dict.fromkeys(ids) if isinstance(i, int)
               and not isinstance(i, bool) and 0 < i <= 1 << ID_BITS]
        rows = []
        with self._connection() as conn:
            try:
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    rows += conn.db.execute(sql.format(
                        ids=", ".join("?" * len(chunk))), chunk).fetchall()
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e
        return rows

    def by_ids(self, ids) -> dict:
        """``{id: full record}`` of the records with these API ids
        (:func:`records.record_id`); ids not found are left out."""
        # rows come last first: the first record of an id wins, as in
        # records()
        rows = self._by_ids(ids, 'SELECT id, "full" FROM doc WHERE id IN '
                                 '({ids}) ORDER BY rid DESC')
        return {i: json.loads(full) for i, full in rows}

    def metadata_by_ids(self, ids) -> dict:
        """``{id: (light record, metadata record)}`` of the metadata records
        with these API ids (:func:`records.metadata_id`); ids not found are
        left out."""
        rows = self._by_ids(ids, 'SELECT m.id, m.k, d.light, d."full" FROM '
                                 'mdid m JOIN doc d ON d.rid = m.rid WHERE '
                                 'm.id IN ({ids}) ORDER BY m.rid DESC, '
                                 'm.k DESC')
        return {i: (json.loads(light), json.loads(full)["metadata"][k])
                for i, k, light, full in rows}

    # -- statistics -------------------------------------------------------------------

    def stats(self, query, unique_rows: bool = True,
              max_failures: int = DEFAULT_MAX_FAILURES) -> dict:
        """Partial collection statistics of the records matching ``query``;
        :func:`merge_stats` turns parts of one or more engines into
        stats.collection_stats' result. ``unique_rows=False``: the part of
        the only engine of a search, whose unique statistics are summed in
        SQL (one row per dataset id otherwise, to merge across engines).
        ``max_failures``: as stats.collection_stats' (check_stats)."""
        if isinstance(max_failures, bool) or not isinstance(max_failures,
                                                             int):
            raise TypeError("max_failures must be an int")
        tree, c, text = self._prepare(query)
        src, where = self._source(c, need_r=True, need_x=True)
        # an int literal (within int64: SQLite reads a larger one as REAL)
        mf = min(max(max_failures, _INT64[0]), _INT64[1])
        sums = ("count(*), "
                "count(*) FILTER (WHERE x.s_ds IS NOT NULL), "
                "sum(r.s_size) FILTER (WHERE x.s_ds IS NOT NULL), "
                "sum(r.s_files) FILTER (WHERE x.s_ds IS NOT NULL), "
                "count(*) FILTER (WHERE r.s_annex = 1 AND x.s_ds IS NULL), "
                "sum(r.s_size) FILTER (WHERE r.s_annex = 1 AND x.s_ds IS NULL),"
                " sum(r.s_files) FILTER (WHERE r.s_annex = 1 AND x.s_ds IS "
                "NULL), count(*) FILTER (WHERE r.s_annex = 0), "
                "sum(r.s_unknown) FILTER (WHERE x.s_ds IS NOT NULL), "
                "sum(r.s_unknown) FILTER (WHERE r.s_annex = 1 AND x.s_ds IS "
                "NULL), count(*) FILTER (WHERE r.s_checked = 1), "
                "count(*) FILTER (WHERE r.s_failed > 0), "
                f"count(*) FILTER (WHERE r.s_failed > 0 AND r.s_failed >= "
                f"{mf})")
        # per ds_id the copy with the largest size, then count (NULL loses)
        unique = (
            "SELECT s_ds, s_size, s_files, s_unknown FROM (SELECT x.s_ds AS "
            "s_ds, r.s_size AS s_size, r.s_files AS s_files, r.s_unknown AS "
            "s_unknown, row_number() OVER (PARTITION BY x.s_ds ORDER BY "
            "r.s_size IS NULL, r.s_size DESC, r.s_files IS NULL, r.s_files "
            "DESC, r.s_unknown IS NULL, r.s_unknown DESC) AS k "
            f"FROM {src} WHERE x.s_ds IS NOT NULL AND ({where})) WHERE k = 1")
        with self._connection() as conn, self._run(conn, c, text, tree):
            try:
                row = conn.db.execute(f"SELECT {sums} FROM {src} WHERE "
                                      f"{where}", c.params).fetchone()
                part = {"ds_count": row[0],
                        "datalad": list(row[1:4]) + [row[8]],
                        "pure_annex": list(row[4:7]) + [row[9]],
                        "non_annex": row[7], "checks": list(row[10:13])}
            except sqlite3.OperationalError as e:
                if "overflow" not in str(e):
                    raise
                # a sum beyond 64 bits: add up in Python
                part = _partial(conn.db.execute(
                    f"SELECT x.s_ds, r.s_size, r.s_files, r.s_annex, "
                    f"r.s_unknown, r.s_checked, r.s_failed FROM "
                    f"{src} WHERE {where}", c.params), max_failures)
            extra = self._py_matches(tree, conn)
            summed = None
            if not unique_rows and not extra:
                # each dataset's copy of least rank, summed here: no row
                # per dataset id reaches Python (13k records: 45 -> 8 ms)
                try:
                    summed = list(conn.db.execute(
                        "SELECT count(*), sum(b.s_size), sum(b.s_files), "
                        "sum(b.s_unknown) FROM (SELECT min(r.s_rank) AS m "
                        f"FROM {src} WHERE r.s_grp IS NOT NULL AND ({where}) "
                        "GROUP BY r.s_grp) z JOIN rec b ON b.s_rank = z.m",
                        c.params).fetchone())
                except sqlite3.OperationalError as e:
                    if "overflow" not in str(e):
                        raise
            if summed is not None:
                part["unique"], part["unique_sum"] = None, summed
            else:
                part["unique"] = [list(r) for r in
                                  conn.db.execute(unique, c.params)]
            if extra:
                recs = self._py_recs(conn)
                part = _merge_partials([part, _partial(
                    (_stats_row(recs[rid]) for rid in extra),
                    max_failures)])
        return part


def _same_term(tree, term):
    """The term of ``tree`` equal to ``term`` (positions are not compared)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Term):
            if node == term:
                return node
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, (And, Or)):
            stack.extend(reversed(node.items))
    return term


def _uri(path: str) -> str:
    # immutable: the file is only ever replaced, never changed in place
    return "file:" + quote(os.path.abspath(path)) + "?mode=ro&immutable=1"


# -- statistics ----------------------------------------------------------------------------

def _stats_row(rec: dict):
    """(ds_id, size, count, annex, unknown, checked, failed) of a record, as
    collection_stats sees it."""
    branches = rec.get("branches")
    annex = None if branches is None else int(_has_annex_branch(branches))
    return (rec.get("ds_id"), _int(rec.get("annexed_files_in_wt_size")),
            _int(rec.get("annexed_files_in_wt_count")), annex,
            _int(rec.get(UNKNOWN_SIZE_FIELD)), *check_flags(rec))


def _add(total, value):
    if value is None:
        return total
    return value if total is None else total + value


def _partial(rows, max_failures: int) -> dict:
    """Partial statistics of (ds, size, files, annex, unknown, checked,
    failed) rows, in Python."""
    part = {"ds_count": 0, "datalad": [0, None, None, None],
            "pure_annex": [0, None, None, None], "non_annex": 0,
            "checks": [0, 0, 0]}
    best = {}
    for ds, size, files, annex, unknown, checked, failed in rows:
        part["ds_count"] += 1
        add_check(part["checks"], checked, failed, max_failures)
        if ds is not None:
            d = part["datalad"]
            d[0] += 1
            d[1], d[2] = _add(d[1], size), _add(d[2], files)
            d[3] = _add(d[3], unknown)
            prev = best.get(ds)
            if prev is None or _better((size, files, unknown), prev):
                best[ds] = (size, files, unknown)
        if annex == 1 and ds is None:
            p = part["pure_annex"]
            p[0] += 1
            p[1], p[2] = _add(p[1], size), _add(p[2], files)
            p[3] = _add(p[3], unknown)
        elif annex == 0:
            part["non_annex"] += 1
    part["unique"] = [[ds, *v] for ds, v in best.items()]
    return part


def _merge_partials(parts) -> dict:
    out = {"ds_count": 0, "datalad": [0, None, None, None],
           "pure_annex": [0, None, None, None], "non_annex": 0,
           "checks": [0, 0, 0]}
    best = {}
    for p in parts:
        out["ds_count"] += p["ds_count"]
        out["non_annex"] += p["non_annex"]
        out["checks"] = [a + b for a, b in zip(out["checks"], p["checks"])]
        for key in ("datalad", "pure_annex"):
            o, q = out[key], p[key]
            o[0] += q[0]
            o[1], o[2], o[3] = (_add(o[1], q[1]), _add(o[2], q[2]),
                                _add(o[3], q[3]))
        for ds, *value in p["unique"]:
            value = tuple(value)
            prev = best.get(ds)
            if prev is None or _better(value, prev):
                best[ds] = value
    out["unique"] = [[ds, *v] for ds, v in best.items()]
    return out


def _annex_dict(count, size, files, unknown=None) -> dict:
    out = {"ds_count": count}
    if size is not None:
        out["annexed_files_size"] = size
    if files is not None:
        out["annexed_file_count"] = files
    if unknown:  # as stats._Sum: only when some size is unknown
        out[UNKNOWN_SIZE_KEY] = unknown
    return out


def merge_stats(parts) -> dict:
    """stats.collection_stats of all the records that the partial
    statistics ``parts`` (from :meth:`Engine.stats`) were computed over."""
    parts = list(parts)
    summed = [q for q in parts if q.get("unique") is None]
    if summed and len(parts) > 1:
        raise ValueError("statistics summed per engine (unique_rows=False) "
                         "cannot be merged with others")
    p = _merge_partials([dict(q, unique=q.get("unique") or [])
                         for q in parts])
    unique = list(summed[0]["unique_sum"]) if summed else [0, None, None, None]
    for _, size, files, unknown in p["unique"]:
        unique[0] += 1
        unique[1], unique[2] = _add(unique[1], size), _add(unique[2], files)
        unique[3] = _add(unique[3], unknown)
    out = {
        "datalad_ds_stats": {
            "unique_ds_stats": _annex_dict(*unique),
            "stats": _annex_dict(*p["datalad"]),
        },
        "pure_annex_ds_stats": _annex_dict(*p["pure_annex"]),
        "non_annex_ds_stats": {"ds_count": p["non_annex"]},
        "summary": {"unique_ds_count": unique[0], "ds_count": p["ds_count"]},
    }
    checks = check_stats(*p["checks"])
    if checks is not None:  # as stats.collection_stats: only when failing
        out[CHECK_STATS_KEY] = checks
    return out
