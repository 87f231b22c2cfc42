"""The SQLite search engine answers exactly as the reference (SearchView),
orders as search.order_records, counts as stats.collection_stats, and
fails plainly on stale or damaged databases."""
import json
import math
import os
import random
import re
import sqlite3
import threading
import time

import pytest

from datalad_registry_ext import engine as E
from datalad_registry_ext.engine import (
    Builder, Engine, EngineDamaged, EngineError, EngineStale, build,
    merge_stats,
)
from datalad_registry_ext.query import MatchAll, QueryError, SearchView, parse
from datalad_registry_ext.query import fields as F
from datalad_registry_ext.records import metadata_id, record_id
from datalad_registry_ext.stats import collection_stats

from benchmarks._common import QUERIES as BENCHMARK_QUERIES

from .test_query_language import CASES, NAMES, RECORDS

# every query the benchmarks time
BENCH_QUERIES = list(BENCHMARK_QUERIES)


def _light(rec):
    light = {k: v for k, v in rec.items() if k != "metadata"}
    light["extractors"] = sorted({m.get("extractor_name")
                                  for m in rec.get("metadata") or []
                                  if isinstance(m, dict)} - {None})
    return light


def _open(tmp_path_factory, records, *, fts=None, name="e"):
    path = tmp_path_factory.mktemp("engine") / f"{name}.sqlite"
    assert build(path, records, "fp-1", fts=fts) == len(records)
    return Engine.open(path, "fp-1")


# -- records: the conformance table's, generated ones, hostile ones ----------

def _varied_records():
    """Records with odd but storable values, in fields the generator does
    not fill (so the random queries meet them)."""
    md = RECORDS[0]["metadata"]
    out = [
        # lone surrogates and NULs: these cannot be stored as SQLite text
        {"url": "https://x.org/sur\ud800rogate", "ds_id": "ds-\udcff",
         "metadata": [{"extractor_name": "bids\ud83d",
                       "extracted_metadata": {"Name": "ok \udc80"}}]},
        {"url": "https://x.org/nul\x00url", "source": "a\x00b",
         "metadata": [{"extractor_name": "x\x00y",
                       "extracted_metadata": {"a": "b\x00c"}}]},
        {"url": "https://x.org/ds-nul", "ds_id": "d\x00s",
         "branches": {"main": {}}, "metadata": []},
        # numbers beyond 64 bits, NaN, infinity, numbers as text, bools
        {"url": "https://x.org/huge", "annex_key_count": 2 ** 70,
         "annexed_files_in_wt_size": 10 ** 20, "git_objects_kb": -2 ** 64,
         "annexed_files_in_wt_count": 3, "ds_id": "huge-ds",
         "branches": {"git-annex": {}}, "metadata": []},
        {"url": "https://x.org/nan", "annex_key_count": float("nan"),
         "annexed_files_in_wt_size": float("inf"), "git_objects_kb": "12",
         "annexed_files_in_wt_count": True, "metadata": []},
        {"url": "https://x.org/strnum", "annex_key_count": "7",
         "annexed_files_in_wt_size": "1.5e3", "git_objects_kb": 2.5,
         "annexed_files_in_wt_count": " 12 ", "metadata": []},
        # odd shapes
        {"url": "https://x.org/odd", "ds_id": 5, "tags": "not json",
         "branches": ["main", "git-annex"],
         "metadata": [{"extractor_name": "x", "extracted_metadata": {
             "when": "2024-01-01", "1": "one", "n": None, "l": [1, [2, [3]]]}},
             "garbage", {"no": "name"}, {"extractor_name": 7,
                                         "extracted_metadata": [1, 2]}],
         "last_update_dt": "garbage", "head_dt": "2024-02-30",
         "subdatasets": [{"path": "p"}, "garbage",
                         {"url": "HTTPS://Sub.example/X", "ds_id": None}]},
        {"url": "https://x.org/strbranches", "branches": "main",
         "tags": '[{"name": "v1"}]', "metadata": None},
        {"url": "https://x.org/failures", "extraction_failures": {
            "bids_dataset": {"message": "Boom: no dataset_description",
                             "count": 2}}, "source": "gin-mirror",
         "metadata": md, "ds_id": RECORDS[0]["ds_id"],
         "annexed_files_in_wt_size": 12_000_000_000,
         "annexed_files_in_wt_count": 99, "branches": {"git-annex": {}}},
        # case and Unicode: lowercasing may change lengths (İ -> i̇)
        {"url": "https://x.org/İstanbul/STRASSE-ß/日本語/🙂",
         "head_describe": "ΣΊΣΥΦΟΣ", "metadata": [{
             "extractor_name": "Cased_Name", "extracted_metadata": {
                 "Title": "Ǆemal İnce", "Ünïcode": "MÜLLER"}}]},
        # nested, with a list of lists on the way
        {"url": "https://x.org/nested", "metadata": [{
            "extractor_name": "deep", "extracted_metadata": {
                "a": [[{"b": {"c": "found-it"}}], {"b": [{"c": 1.5}]}],
                "x": {"y": {"z": {"w": {"v": ["leaf"]}}}}}}]},
        # re.IGNORECASE matches s with ſ and i with ı (str.lower() does
        # not map them), k with the Kelvin sign (str.lower() does)
        {"url": "https://x.org/ſpecial-ınfo-\u212aelvin", "metadata": [{
            "extractor_name": "fold", "extracted_metadata": {
                "k": "ſtraße ıdea \u212a", "branches": ["ma\u0131n"]}}],
         "branches": {"ma\u0131n": {}}, "tags": [{"name": "ſ1"}]},
        {"url": "https://x.org/only-url"},
        {"url": None, "source": "no-url", "annex_key_count": 1},  # no text
        {"url": "", "metadata": []},
        {"url": "https://x.org/dates", "last_update_dt": "2024-05-30T13:09:47",
         "head_dt": "2024-05-30T15:09:47+02:00", "metadata": []},
        # accents, ligatures, ß: substring terms fold them (issue 9)
        ACCENTED,
    ]
    return out


ACCENTED = {
    "url": "https://x.org/lab/Buzsáki-Café", "head_describe": "Crème-1",
    "tags": [{"name": "Ärger"}], "branches": {"ﬁx-Straße": {}},
    "subdatasets": [{"url": "https://x.org/Señor", "ds_id": "sub-ñ"}],
    "metadata": [{"extractor_name": "bids_dataset", "extracted_metadata": {
        "Authors": ["György Buzsáki", "Zoë Ångström"]}}]}

# substring terms on both sides folded; := and :~ not
ACCENT_QUERIES = [
    "buzsaki", "BUZSAKI", "buzsáki", "Buzsa\u0301ki", "gyorgy", "zoe",
    "angstrom", "url:buzsaki", "url:cafe", "url:café", "head_describe:creme",
    "tags:arger", "branches:strasse", "branches:fix", "subds_url:senor",
    "subds_id:sub-n", "metadata:buzsaki", "metadata[bids_dataset]:buzsaki",
    "metadata[bids_dataset]:angström", "metadata[other]:buzsaki", "ki",
    "e", "ö", "crème", "url:=https://x.org/lab/buzsaki-cafe",
    "url:=https://x.org/lab/buzsáki-café", 'url:~"buzsaki"',
    'url:~"buzsáki"', "metadata[bids_dataset].authors:=\"györgy buzsáki\"",
    "metadata[bids_dataset].authors:=\"gyorgy buzsaki\"",
    "metadata[bids_dataset].authors:buzsáki", "NOT buzsaki",
    "buzsaki AND url:lab",
]


@pytest.fixture(scope="module")
def realistic():
    """Generated records (benchmarks/generate.py) plus the hand-made and
    the varied ones."""
    try:
        from benchmarks.generate import generate_records
        generated = list(generate_records(1500, seed=3))
    except ImportError:  # pragma: no cover - the generator ships with us
        generated = []
    return generated + RECORDS + _varied_records()


@pytest.fixture(scope="module")
def reference(realistic):
    return SearchView(realistic)


@pytest.fixture(scope="module")
def fts_engine(tmp_path_factory, realistic):
    if not E.fts5_available():
        pytest.skip("no FTS5 trigram tokenizer in this SQLite")
    with _open(tmp_path_factory, realistic, fts=True, name="fts") as eng:
        assert eng.fts
        yield eng


@pytest.fixture(scope="module")
def scan_engine(tmp_path_factory, realistic):
    with _open(tmp_path_factory, realistic, fts=False, name="scan") as eng:
        assert not eng.fts
        yield eng


@pytest.fixture(scope="module", params=["fts", "scan"])
def engine(request):
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture(scope="module", params=["fts", "scan"])
def small(request, tmp_path_factory):
    fts = request.param == "fts"
    if fts and not E.fts5_available():
        pytest.skip("no FTS5 trigram tokenizer in this SQLite")
    with _open(tmp_path_factory, RECORDS, fts=fts, name=request.param) as eng:
        yield eng


def _urls(records):
    return sorted((r.get("url") for r in records), key=repr)


def _check_same(eng, reference, records, query):
    expected = sorted((records[i].get("url") for i in reference.search(query)),
                      key=repr)
    got = _urls(eng.page(parse(query)))
    assert got == expected, query
    assert eng.count(parse(query)) == len(expected), query


# -- the conformance table -------------------------------------------------------

@pytest.mark.parametrize("query,expected", CASES,
                         ids=[c[0] or "<empty>" for c in CASES])
def test_conformance(small, query, expected):
    name = {r["url"]: n for n, r in zip(NAMES, RECORDS)}
    tree = parse(query)
    got = {name[r["url"]] for r in small.page(tree)}
    assert got == set(expected)
    assert small.count(tree) == len(set(expected))
    # a query text works as well as a tree
    assert small.count(query) == len(set(expected))


# -- equivalence with SearchView on realistic records ------------------------------

@pytest.mark.parametrize("query", BENCH_QUERIES)
def test_benchmark_queries(engine, reference, realistic, query):
    _check_same(engine, reference, realistic, query)


@pytest.mark.parametrize("query", ACCENT_QUERIES)
def test_accent_folding_same_as_reference(engine, reference, realistic,
                                          query):
    _check_same(engine, reference, realistic, query)


def test_accent_folding_finds_what_it_should(engine, reference, realistic):
    def found(q):
        return ACCENTED["url"] in {realistic[i]["url"]
                                   for i in reference.search(q)}
    for q in ["buzsaki", "BUZSAKI", "buzsáki", "gyorgy", "url:cafe",
              "metadata[bids_dataset]:buzsaki", "branches:strasse",
              "branches:fix", "subds_url:senor", "tags:arger",
              "url:=https://x.org/lab/buzsáki-café", 'url:~"buzsáki"']:
        assert found(q), q
    for q in ["url:=https://x.org/lab/buzsaki-cafe", 'url:~"buzsaki"',
              "metadata[other]:buzsaki"]:
        assert not found(q), q
    # and the engine agrees (the equivalence test above checks all)
    assert ACCENTED["url"] in {r["url"] for r in engine.page("buzsaki")}


def _samples(records, rnd):
    """Texts, exact values and JSON paths taken from the records, so that
    random terms match some records."""
    texts = {f: [] for f in ("url", "ds_id", "head", "head_describe",
                             "annex_uuid", "source", "tags", "branches")}
    exact = {f: [] for f in texts}
    paths = []
    for rec in rnd.sample(records, min(300, len(records))):
        for f in texts:
            v = rec.get(f)
            if v is None:
                continue
            s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            texts[f].append(s)
            if f == "tags" and isinstance(v, list) and v:
                exact[f].append(str(v[0].get("name")))
            elif f == "branches" and isinstance(v, dict) and v:
                exact[f].append(rnd.choice(list(v)))
            elif isinstance(v, str):
                exact[f].append(v)
        for m in rec.get("metadata") or []:
            if not isinstance(m, dict):
                continue
            texts.setdefault("metadata", []).append(json.dumps(
                m.get("extracted_metadata"), ensure_ascii=False))
            # a random path down the document
            obj, path = m.get("extracted_metadata"), []
            while isinstance(obj, (dict, list)) and obj and len(path) < 4:
                if isinstance(obj, list):
                    obj = rnd.choice(obj)
                    continue
                key = rnd.choice(list(obj))
                path.append(key)
                obj = obj[key]
            if path and not isinstance(obj, (dict, list)):
                paths.append((m.get("extractor_name"), path, obj))
    return texts, exact, paths


_SAFE = re.compile(r'["\\\x00-\x1f]')


def _piece(text, rnd, lengths=(1, 2, 3, 3, 4, 5, 6, 8, 12)):
    n = rnd.choice(lengths)
    i = rnd.randrange(max(1, len(text) - n + 1))
    return _SAFE.sub("", text[i:i + n])


def _q(value):
    return '"' + value + '"'


def _segment(key):
    key = _SAFE.sub("", str(key))
    return key if re.fullmatch(r"[@\w-]+", key) else _q(key)


def _regex(rnd, text):
    a, b = _piece(text, rnd, (2, 3, 4)), _piece(text, rnd, (1, 2, 3))
    a, b = re.escape(a), re.escape(b)
    return rnd.choice([f"^{a}", f"{a}$", f"{a}.*{b}", f"{a}[0-9]", f"{a}|{b}",
                       f"(?:{a})?{b}", f"\\d{{2}}{a}", "^$", "."])


def _random_term(rnd, samples):
    texts, exact, paths = samples
    fields = [f for f in texts if texts[f] and f != "metadata"]
    r = rnd.random()
    if r < 0.22:  # a bare word or string, short or long
        return _q(_piece(rnd.choice(texts[rnd.choice(list(texts))]), rnd))
    if r < 0.40:
        f = rnd.choice(fields)
        return f"{f}:{_q(_piece(rnd.choice(texts[f]), rnd))}"
    if r < 0.47:
        f = rnd.choice([f for f in fields if exact[f]])
        return f"{f}:={_q(_SAFE.sub('', rnd.choice(exact[f])).lower())}"
    if r < 0.53:
        f = rnd.choice(fields)
        return f"{f}:~{_q(_regex(rnd, rnd.choice(texts[f])))}"
    if r < 0.62:  # comparisons, number and date
        f = rnd.choice(F.NUMBER_FIELDS + F.DATE_FIELDS)
        op = rnd.choice([">", ">=", "<", "<=", "=", ""])
        if f in F.DATE_FIELDS:
            value = rnd.choice(["2023", "2024-05", "2024-05-30",
                                "2022-02-02T02:02:02", "2016"])
        else:
            value = rnd.choice(["0", "3", "100", "1500", "1kB", "10GB",
                                "2GiB", "1e30", "-1"])
            if f not in F.SIZE_FIELDS:
                value = value.rstrip("kGiB")
        return f"{f}:{op}{_q(value) if op == '' else value}"
    if r < 0.85:  # metadata
        extractors = ["bids_dataset", "metalad_core", "datacite_gin",
                      "dandi", "metalad_studyminimeta", "x", "nope"]
        sel = rnd.choice(["", f"[{rnd.choice(extractors)}]",
                          f"[{rnd.choice(extractors)},{rnd.choice(extractors)}]"])
        kind = rnd.random()
        if kind < 0.4 and paths:
            name, path, leaf = rnd.choice(paths)
            cut = path[:rnd.randint(1, len(path))]
            sel = rnd.choice([sel, f"[{name}]"]) if name and re.fullmatch(
                r"[\w:-]+", str(name)) else sel
            where = "".join("." + _segment(k) for k in cut)
            leaf = F.leaf_text(leaf)
            op = rnd.choice(["", "=", "~"])
            value = (_SAFE.sub("", leaf.lower()) if op == "=" else
                     _regex(rnd, leaf) if op == "~" else _piece(leaf, rnd))
            return f"metadata{sel}{where}:{op}{_q(value)}"
        if kind < 0.55:
            return f"metadata{sel}:{_q('')}"
        if kind < 0.7:
            return f"metadata{sel}:~{_q(_regex(rnd, rnd.choice(texts['metadata'])))}"
        return f"metadata{sel}:{_q(_piece(rnd.choice(texts['metadata']), rnd))}"
    if r < 0.9:
        f = rnd.choice(["subds_id", "subds_url", "extraction_failures"])
        return f"{f}:{rnd.choice(['', '=', '~'])}{_q(rnd.choice(['', 'x', 'sub', 'boom', 'https://sub.example/x']))}"
    # paths into tags and branches
    return rnd.choice(["tags.name:=v0.1", "tags.name:1.", 'tags:~"^v"',
                       "branches.master.hexsha:0123", "branches:=git-annex",
                       "branches:~^ma", 'branches.main:""', "tags.hexsha:e"])


def _random_query(rnd, samples, depth=0):
    r = rnd.random()
    if depth >= 3 or r < 0.35:
        return _random_term(rnd, samples)
    if r < 0.5:
        return "NOT " + _random_query(rnd, samples, depth + 1)
    if r < 0.6:
        return "(" + _random_query(rnd, samples, depth + 1) + ")"
    op = rnd.choice([" AND ", " OR ", " "])
    left = _random_query(rnd, samples, depth + 1)
    right = _random_query(rnd, samples, depth + 1)
    return f"({left}{op}{right})"


def _random_queries(records, seed, n):
    rnd = random.Random(seed)
    samples = _samples(records, rnd)
    out = []
    while len(out) < n:
        q = _random_query(rnd, samples)
        try:
            parse(q)
        except QueryError:
            continue
        out.append(q)
    return out


def test_random_queries_same_as_reference(engine, reference, realistic):
    queries = _random_queries(realistic, 20240601, 300)
    matched = 0
    for q in queries:
        _check_same(engine, reference, realistic, q)
        matched += bool(reference.search(q))
    assert matched > 100  # the queries do match records


def test_odd_values_same_as_reference(engine, reference, realistic):
    for q in [
        "url:sur", "url:\ud800", '"\ud800rogate"', "ds_id:=ds-\udcff",
        "metadata[bids\ud83d]:\"\"", 'metadata:"ok \udc80"', "metadata:bids",
        "url:\ufffd", '"nul\ufffdurl"', "metadata[x\x01y]:\"\"",
        "metadata:x\ufffdy", "source:\ufffd", "annex_key_count:>1e20",
        "annex_key_count:>=1180591620717411303424", "annex_key_count:<0",
        "annexed_files_in_wt_size:>1e19", "git_objects_kb:<0",
        "annex_key_count:=7", "annexed_files_in_wt_size:=1500",
        "git_objects_kb:=12", "NOT annex_key_count:>0", "ds_id:=5",
        "tags:json", "tags:=json", "branches:=main", "branches:=git-annex",
        'branches:"main"', "metadata[x]:2024-01-01", 'metadata[x]."1":=one',
        "metadata[x].l:=3", 'metadata[x].n:=null', 'metadata[7]:""',
        "metadata:1", "last_update_dt:>2000", "last_update_dt:garb",
        "head_dt:2024-02-30", 'subds_url:""', "subds_url:=https://sub.example/x",
        "extraction_failures:boom", 'extraction_failures:~"dataset_desc"',
        "istanbul", "i̇stanbul", "İSTANBUL", "strasse-ß", "日本語", "🙂",
        "σίσυφος", "ǆemal", "müller", "metadata[Cased_Name]:ǆ",
        "metadata.a.b.c:found", "metadata[deep].a.b.c:=found-it",
        "metadata.a.b.c:=1.5", "metadata.x.y.z.w.v:=leaf",
        'metadata.x.y:"leaf"', 'metadata.x.y:~"lea."', 'url:""', '""',
        'NOT url:""', "last_update_dt:=2024-05-30T13:09:47Z",
        'url:~"special"', 'url:~"info-kelvin"', 'url:~"x\\.org/sp"',
        'metadata:~"strasse"', 'metadata:~"stra.e idea k"',
        'metadata[fold].k:~"idea"', 'metadata.branches:~"main"',
        'branches:~"main"', 'branches:~"^main$"', 'tags:~"s1"',
        'tags.name:~"^s"', 'metadata:~"^ſtra"', 'url:~"ſpecial"',
        'head_describe:~"^v?1\\."', 'url:~"openneuro.*ds00"',
        'metadata[bids_dataset].Name:~"^haxby f"', 'subds_url:~"\\.git$"',
        "head_dt:=2024-05-30T13:09:47Z", "NOT head_dt:<2030",
    ]:
        _check_same(engine, reference, realistic, q)


def test_scan_and_fts_agree_on_short_and_long_terms(fts_engine, scan_engine):
    for q in ["a", "ab", "abc", "hax", "haxb", "url:gi", "url:git",
              "metadata:or", "metadata:ors", "metadata[bids_dataset]:na",
              "metadata[bids_dataset]:nam", "head_describe:1.", "tags:v1",
              "tags:v1.", "branches:ma", "branches:mas", '"a b"', '"a b c"']:
        assert _urls(fts_engine.page(q)) == _urls(scan_engine.page(q)), q


def test_long_queries_stay_below_sqlite_limits(small):
    # 1000 AND-ed and 550 OR-ed distinct terms (SQLite allows depth 1000)
    view = SearchView(RECORDS)
    for q in (" ".join(str(i) for i in range(1000)),
              " OR ".join(str(i) for i in range(550)),
              " ".join(["a"] * 1500)):
        assert len(q) < 4096
        _check_same(small, view, RECORDS, q)


# -- ordering and pages --------------------------------------------------------------

def _ordering_records():
    """Nulls, ties, equal instants in other time zones, equal URLs from
    different sources."""
    rnd = random.Random(5)
    recs = []
    for i in range(120):
        rec = {"url": f"https://h{rnd.randrange(4)}.org/r{rnd.randrange(60)}",
               "source": rnd.choice([None, "", "local", "b", "a"]),
               "metadata": []}
        for key in ("annex_key_count", "annexed_files_in_wt_count",
                    "annexed_files_in_wt_size", "git_objects_kb"):
            if rnd.random() < 0.8:
                rec[key] = rnd.choice([0, 1, 1, 2, 2.0, 3, 10 ** 12, 7.5])
        if rnd.random() < 0.85:
            rec["last_update_dt"] = rnd.choice([
                "2024-05-30T13:09:47+00:00", "2024-05-30T15:09:47+02:00",
                "2024-05-30T13:09:47", "2023-01-01T00:00:00Z", "garbage", "",
                "2025-01-01T00:00:00-05:00"])
        recs.append(rec)
    recs.append({"url": "", "annex_key_count": 1, "metadata": []})
    return recs


@pytest.mark.parametrize("fts", [True, False])
def test_order_equals_order_records(tmp_path_factory, fts):
    from datalad_registry_ext.search import order_records
    if fts and not E.fts5_available():
        pytest.skip("no FTS5")
    recs = _ordering_records()
    light = [_light(r) for r in recs]
    with _open(tmp_path_factory, recs, fts=fts) as eng:
        for key in E.ORDER_KEYS:
            for direction in ("asc", "desc"):
                expected = order_records(light, key, direction)
                assert eng.page(MatchAll(), key, direction) == expected, \
                    (key, direction)
                assert eng.page(MatchAll(), key, direction, limit=7) == \
                    expected[:7]
                # a query, with the plan chosen by a known count
                tree = parse("url:h1 OR url:h2")
                matching = [r for r in light if "h1" in r["url"]
                            or "h2" in r["url"]]
                want = order_records(matching, key, direction)
                assert eng.page(tree, key, direction, 5) == want[:5]
                assert eng.count(tree) == len(want)
                assert eng.page(tree, key, direction, 5) == want[:5]
                assert [r["url"] for r in eng.iter_records(
                    tree, key, direction)] == [r["url"] for r in want]


def test_order_keys_and_errors(small):
    from datalad_registry_ext.records import ORDER_KEYS
    assert set(E.ORDER_KEYS) == set(ORDER_KEYS)
    with pytest.raises(ValueError) as ei:
        small.page(MatchAll(), "ds_id")
    assert "annex_key_count" in str(ei.value)
    with pytest.raises(ValueError):
        small.page(MatchAll(), "url", "sideways")


def test_page_limits(small):
    tree = parse("url:github OR url:gin")
    everything = small.page(tree, "url", "asc")
    assert [r["url"] for r in everything] == sorted(
        RECORDS[i]["url"] for i in (0, 1, 4, 6))
    assert small.page(tree, "url", "asc", limit=0) == []
    assert small.page(tree, "url", "asc", limit=1) == everything[:1]
    assert small.page(tree, "url", "asc", limit=100) == everything
    assert len(small.page(MatchAll(), limit=3)) == 3


def test_light_and_full_records(small):
    light = small.page(MatchAll(), "url", "asc")
    by_url = {r["url"]: r for r in RECORDS}
    assert light == [_light(by_url[r["url"]]) for r in light]
    assert small.records(list(by_url) + ["https://nowhere"]) == by_url
    assert small.records([]) == {}
    assert list(small.iter_records(None, "url", "asc")) == [
        by_url[u] for u in sorted(by_url)]
    assert list(small.iter_records("haxby")) == [RECORDS[0]]


def test_odd_records_come_back_exactly(engine, realistic):
    odd = [r for r in _varied_records() if r["url"] is not None]
    found = engine.records([r["url"] for r in odd])
    for rec in odd:
        assert found[rec["url"]] == rec or rec["url"] == "https://x.org/nan"
    # a record without a URL is only found by searching
    assert list(engine.iter_records("source:no-url")) == [
        {"url": None, "source": "no-url", "annex_key_count": 1}]
    # NaN != NaN: compare the NaN record as JSON
    nan = found["https://x.org/nan"]
    assert math.isnan(nan["annex_key_count"])
    assert nan["annexed_files_in_wt_size"] == float("inf")


# -- stable API ids ---------------------------------------------------------------------

def _ids(records):
    """{record id: record} and {metadata id: (record, metadata record)} as
    records.record_id / metadata_id give them (first record wins)."""
    recs, mds = {}, {}
    for rec in records:
        url, source = rec.get("url"), rec.get("source")
        if not isinstance(url, str) or not isinstance(source, (str,
                                                                type(None))):
            continue
        recs.setdefault(record_id(source, url), rec)
        for m in rec.get("metadata") or []:
            if isinstance(m, dict) and isinstance(m.get("extractor_name"),
                                                  str):
                mds.setdefault(metadata_id(source, url, m["extractor_name"]),
                               (rec, m))
    return recs, mds


def test_records_and_metadata_by_stable_ids(engine, realistic):
    recs, mds = _ids(realistic)
    # py records (lone surrogates, NUL, huge numbers) are found by id too
    assert any("\ud800" in r["url"] for r in recs.values())
    found = engine.by_ids(list(recs) + [12345, -1, True, "x", 2 ** 70])
    assert set(found) == set(recs)
    nan_url = "https://x.org/nan"  # NaN != NaN
    assert all(found[i] == r for i, r in recs.items() if r["url"] != nan_url)
    got = engine.metadata_by_ids(list(mds) + [recs and next(iter(recs))])
    assert set(got) == set(mds)
    for i, (rec, m) in mds.items():
        light, meta = got[i]
        assert meta == m
        assert light == E.light_record(rec) or rec["url"] == nan_url
    assert engine.by_ids([]) == {} and engine.metadata_by_ids([]) == {}


def test_ids_are_stable_across_rebuilds(tmp_path):
    path = tmp_path / "ids.sqlite"
    build(path, RECORDS, "fp-1")
    with Engine.open(path) as eng:
        first = eng.by_ids(list(_ids(RECORDS)[0]))
    # other records before them, in another order: other row ids, same ids
    from benchmarks.generate import generate_records
    build(path, list(generate_records(50, seed=1)) + RECORDS[::-1], "fp-2")
    with Engine.open(path) as eng:
        assert eng.by_ids(list(first)) == first
        i = record_id(RECORDS[0]["source"], RECORDS[0]["url"])
        assert eng.by_ids([i])[i] == RECORDS[0]
    assert len(first) == len(RECORDS)
    # the source is part of the id: the same URL from elsewhere is another
    other = dict(RECORDS[0], source="elsewhere")
    build(path, [other], "fp-3")
    with Engine.open(path) as eng:
        assert eng.by_ids([i]) == {}
        assert eng.by_ids([record_id("elsewhere", other["url"])]) == {
            record_id("elsewhere", other["url"]): other}


# -- statistics -------------------------------------------------------------------------

def _stats_records():
    rnd = random.Random(11)
    recs = []
    for i in range(200):
        rec = {"url": f"https://s.org/{i}", "metadata": []}
        if rnd.random() < 0.8:
            rec["ds_id"] = rnd.choice(["A", "B", "C", "a", 5, f"u{i}"])
        if rnd.random() < 0.8:
            rec["annexed_files_in_wt_size"] = rnd.choice(
                [None, 0, 10, 10, 2 ** 40, "12", "x", True, 1.5, "1.5"])
        if rnd.random() < 0.8:
            rec["annexed_files_in_wt_count"] = rnd.choice(
                [None, 0, 1, 1, 5, "3", 2.0])
        rec["branches"] = rnd.choice([None, {"git-annex": {}, "main": {}},
                                      {"main": {}}, ["git-annex"], ["main"],
                                      "git-annex"])
        if rec["branches"] is None and rnd.random() < 0.5:
            del rec["branches"]
        rec["tags"] = [{"name": rnd.choice(["v1", "v2"])}]
        recs.append(rec)
    # beyond 64 bits: the record is matched and counted in Python
    recs.append({"url": "https://s.org/huge", "ds_id": "A",
                 "annexed_files_in_wt_size": 2 ** 70, "metadata": []})
    return recs


def test_stats_sums_beyond_64_bits(tmp_path):
    # SQLite's integer sum overflows: added up in Python
    recs = [{"url": f"https://s.org/big{i}", "ds_id": f"Z{i % 2}",
             "annexed_files_in_wt_size": 2 ** 62 + i,
             "annexed_files_in_wt_count": 2 ** 62, "metadata": []}
            for i in range(3)]
    build(tmp_path / "x.sqlite", recs, "fp")
    with Engine.open(tmp_path / "x.sqlite", "fp") as eng:
        for rows in (True, False):
            assert merge_stats([eng.stats("", rows)]) == \
                collection_stats(recs)
            assert merge_stats([eng.stats("big1 OR big2", rows)]) == \
                collection_stats(recs[1:])


@pytest.mark.parametrize("query", ["", "tags:v1", "NOT tags:v1",
                                   "url:1", "url:huge", "url:nothing"])
def test_stats_equal_collection_stats(tmp_path_factory, query):
    recs = _stats_records()
    view = SearchView(recs)
    expected = collection_stats([recs[i] for i in view.search(query)])
    with _open(tmp_path_factory, recs) as eng:
        assert merge_stats([eng.stats(parse(query))]) == expected
        # summed in SQL, as the only engine of a search
        assert merge_stats([eng.stats(parse(query), False)]) == expected
    # the same records split over three databases (copies of a ds_id in
    # several of them)
    parts = []
    for k in range(3):
        with _open(tmp_path_factory, recs[k::3]) as eng:
            parts.append(json.loads(json.dumps(eng.stats(query))))
    assert merge_stats(parts) == expected


def test_stats_of_realistic_records(engine, reference, realistic):
    summed = None
    for q in BENCH_QUERIES + ["", "tags:v1 OR url:x.org"]:
        expected = collection_stats([realistic[i]
                                     for i in reference.search(q)])
        assert merge_stats([engine.stats(q)]) == expected, q
        part = engine.stats(q, False)
        assert merge_stats([part]) == expected, q
        if part["unique"] is None:  # summed in SQL (no odd record matched)
            summed = part
    # most queries match no odd record: their unique statistics are summed
    assert summed is not None
    with pytest.raises(ValueError):
        merge_stats([summed, engine.stats("")])


def test_merge_stats_of_nothing():
    assert merge_stats([]) == collection_stats([])


# -- stale and damaged databases ---------------------------------------------------------

@pytest.fixture
def db_file(tmp_path):
    path = tmp_path / "index.json.sqlite"
    build(path, RECORDS, "fp-1")
    return path


def test_stale(db_file):
    Engine.open(db_file, "fp-1").close()
    Engine.open(db_file).close()  # no fingerprint: no check
    with pytest.raises(EngineStale) as ei:
        Engine.open(db_file, "fp-2")
    assert str(db_file) in str(ei.value)


@pytest.mark.parametrize("damage", ["truncate", "truncate-page", "garbage",
                                    "empty", "missing", "schema", "table",
                                    "meta", "header"])
def test_damaged(db_file, damage):
    size = db_file.stat().st_size
    if damage == "truncate":
        with open(db_file, "r+b") as f:
            f.truncate(size // 2 + 17)
    elif damage == "truncate-page":
        with open(db_file, "r+b") as f:
            f.truncate(size - 4096)
    elif damage == "garbage":
        db_file.write_bytes(os.urandom(size))
    elif damage == "empty":
        db_file.write_bytes(b"")
    elif damage == "missing":
        db_file.unlink()
    elif damage in ("schema", "table", "meta"):
        con = sqlite3.connect(db_file)
        if damage == "schema":
            con.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
        elif damage == "meta":
            con.execute("UPDATE meta SET value = '[' WHERE key = 'py'")
        else:
            con.execute("DROP TABLE sub")
        con.commit()
        con.close()
    elif damage == "header":
        data = bytearray(db_file.read_bytes())
        data[100:4096] = os.urandom(3996)  # the schema page
        db_file.write_bytes(bytes(data))
    with pytest.raises(EngineDamaged) as ei:
        with Engine.open(db_file, "fp-1") as eng:
            eng.count("haxby")
            eng.page("NOT haxby")
    assert str(db_file) in str(ei.value)
    assert isinstance(ei.value, EngineError)


def test_damage_found_while_searching_names_the_file(db_file):
    eng = Engine.open(db_file, "fp-1")
    try:
        # overwrite the records' pages after opening, in place (the page
        # count stays)
        size = db_file.stat().st_size
        with open(db_file, "r+b") as f:
            f.seek(4096 * 3)
            f.write(b"\xff" * (size - 4096 * 3))
        with pytest.raises(EngineDamaged) as ei:
            for q in ("haxby", "url:x", "NOT metadata:x", "tags:=1"):
                eng.page(q)
                eng.records(["https://osf.io/abcde"])
        assert str(db_file) in str(ei.value)
    finally:
        eng.close()


# -- building ------------------------------------------------------------------------------

def test_builder_replaces_atomically_and_cleans_up(tmp_path):
    path = tmp_path / "x.sqlite"
    build(path, RECORDS[:2], "old")
    with pytest.raises(RuntimeError):
        with Builder(path) as b:
            b.add(RECORDS[0])
            tmp = b.tmp_path
            assert os.path.dirname(tmp) == str(tmp_path)
            assert os.path.basename(tmp).startswith("x.sqlite.")
            assert tmp.endswith(".tmp")
            raise RuntimeError("interrupted")
    assert not os.path.exists(tmp)
    assert sorted(os.listdir(tmp_path)) == ["x.sqlite"]  # both temporaries
    with Engine.open(path, "old") as eng:  # the old database is intact
        assert eng.count(MatchAll()) == 2
    with Builder(path) as b:
        for rec in RECORDS:
            b.add(rec)
        tmp = b.tmp_path
        assert b.finish("new") == len(RECORDS)
    assert not os.path.exists(tmp)
    assert sorted(os.listdir(tmp_path)) == ["x.sqlite"]
    with Engine.open(path, "new") as eng:
        assert eng.count(MatchAll()) == len(RECORDS)
    # leaving without finishing removes the temporary files too
    with Builder(path) as b:
        b.add(RECORDS[0])
    b = Builder(path)
    b.abort()
    b.abort()
    assert sorted(os.listdir(tmp_path)) == ["x.sqlite"]
    with pytest.raises(EngineError):
        b.add(RECORDS[0])


def test_full_text_index_is_sound(fts_engine, realistic):
    # fts_rec is built in a second file and copied in: FTS5's own check
    con = sqlite3.connect(fts_engine.path)
    try:
        for t in ("fts_rec", "fts_md"):
            con.execute(f"INSERT INTO {t}({t}) VALUES('integrity-check')")
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()


def test_builder_reports_a_missing_directory(tmp_path):
    with pytest.raises(EngineError) as ei:
        Builder(tmp_path / "missing" / "x.sqlite")
    assert str(tmp_path / "missing" / "x.sqlite") in str(ei.value)


def test_empty_database(tmp_path):
    path = tmp_path / "x.sqlite"
    assert build(path, [], "fp") == 0
    with Engine.open(path, "fp") as eng:
        assert eng.count("haxby") == eng.count(MatchAll()) == 0
        assert eng.page("NOT haxby") == []
        assert merge_stats([eng.stats("")]) == collection_stats([])


def test_unstorable_and_deep_records(tmp_path, caplog):
    circular = {"url": "https://x.org/circular", "metadata": []}
    circular["self"] = circular
    # deeper than anything a loader accepts (a registry poisoned before
    # the limit existed), not too deep for JSON
    deep = leaf = {}
    for _ in range(700):
        leaf["k"] = {}
        leaf = leaf["k"]
    leaf["k"] = "bottom-value"
    deep_rec = {"url": "https://x.org/deep", "metadata": [
        {"extractor_name": "deep", "extracted_metadata": deep}]}
    recs = [RECORDS[0], circular, "not a record", deep_rec, RECORDS[1]]
    path = tmp_path / "x.sqlite"
    with Builder(path) as b:
        for rec in recs:
            b.add(rec)
        assert b.finish("fp") == 3
    skipped = [p for p in b.problems if "skipped" in p[2]]
    assert [p[0] for p in skipped] == [1, 2]
    # the shared renderer is iterative: a deep record is no problem at all
    assert not any(p[0] == 3 for p in b.problems)
    with Engine.open(path, "fp") as eng:
        assert eng.count(MatchAll()) == 3
        assert _urls(eng.page("url:x.org")) == ["https://x.org/deep"]
        assert eng.count("bottom-value") == 1
        assert eng.count("metadata[deep]:bottom") == 1
        assert eng.count("metadata[deep].k.k:bottom") == 1
        assert eng.count("metadata[deep].k.x:bottom") == 0
        assert eng.count("NOT deep") == 2
        assert eng.records(["https://x.org/deep"])["https://x.org/deep"] \
            == deep_rec


def test_fallback_rendering_equals_reference(realistic):
    for rec in realistic:
        try:
            expected = F.record_texts(rec)
        except Exception:  # pragma: no cover
            continue
        assert E._record_texts_fallback(rec, []) == expected


# -- regular expressions: one time budget per query ------------------------------------------

def _slow_records(n=400):
    # each match of a*a*a*a*a*[xy] takes ~20 ms: 400 of them take longer
    # than the budget, though none alone does
    return [{"url": f"https://slow/{i}/" + "a" * 100, "metadata": [
        {"extractor_name": "x", "extracted_metadata": {"k": "a" * 100}}]}
        for i in range(n)]


# (a character class ends each pattern: a literal would be looked up first
# and spare the records without it the slow match; the regex module is
# quick on .*a.*a.*[xy], not on a run of a*)
@pytest.mark.parametrize("query,position", [
    ('url:~"a*a*a*a*a*[xy]"', 5), ('metadata:~"a*a*a*a*a*[xy]"', 10),
    ('haxby OR head:~"x" OR url:~"a*a*a*a*a*[xy]"', 27)])
def test_time_budget_in_a_worker_thread(tmp_path, query, position):
    path = tmp_path / "slow.sqlite"
    build(path, _slow_records(), "fp")
    outcome = {}

    def worker():
        eng = Engine.open(path, "fp", regex_timeout=0.3)
        t0 = time.monotonic()
        try:
            eng.count(parse(query))
        except QueryError as e:
            outcome["error"] = e
        outcome["took"] = time.monotonic() - t0
        eng.close()

    t = threading.Thread(target=worker)
    t.start()
    t.join(30)
    err = outcome.get("error")
    assert err is not None, outcome
    assert err.reason == "regular expression took too long"
    assert err.position == position
    assert outcome["took"] < 3


def test_regex_literals_spare_the_records_without_them(tmp_path):
    path = tmp_path / "slow.sqlite"
    build(path, _slow_records(), "fp")
    with Engine.open(path, "fp", regex_timeout=0.3) as eng:
        t0 = time.monotonic()
        assert eng.count('url:~".*a.*a.*x"') == 0  # no record has an x
        assert eng.count('metadata:~".*a.*a.*xyz"') == 0
        assert time.monotonic() - t0 < 1


def test_time_budget_stops_a_single_match(tmp_path):
    path = tmp_path / "slow.sqlite"
    build(path, [{"url": "a" * 3000, "metadata": []}], "fp")
    with Engine.open(path, "fp", regex_timeout=0.3) as eng:
        t0 = time.monotonic()
        with pytest.raises(QueryError) as ei:
            eng.page('url:~"a*a*a*a*[xy]"')
        assert time.monotonic() - t0 < 5
        assert ei.value.position == 5
        assert ei.value.query == 'url:~"a*a*a*a*[xy]"'
        # the same tree from another text: this text's position
        with pytest.raises(QueryError) as ei:
            eng.count('   url:~"a*a*a*a*[xy]"')
        assert ei.value.position == 8
        # the engine stays usable
        assert eng.count("url:a") == 1


# -- threads, FTS5 flag --------------------------------------------------------------------

def test_one_engine_many_threads(fts_engine, reference, realistic):
    queries = BENCH_QUERIES + ["bids", "url:~github", "metadata[dandi]:\"\""]
    expected = {q: len(reference.search(q)) for q in queries}
    errors = []

    def worker(seed):
        rnd = random.Random(seed)
        try:
            for _ in range(40):
                q = rnd.choice(queries)
                assert fts_engine.count(q) == expected[q]
                assert len(fts_engine.page(q, limit=5)) == min(5, expected[q])
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_without_fts5_at_run_time(tmp_path, monkeypatch):
    # a database built with FTS, searched where SQLite lacks FTS5: scans
    if not E.fts5_available():
        pytest.skip("no FTS5")
    path = tmp_path / "x.sqlite"
    build(path, RECORDS, "fp", fts=True)
    monkeypatch.setattr(E, "_fts5", False)
    assert E.fts5_available() is False
    with Engine.open(path, "fp") as eng:
        assert not eng.fts
        assert [r["url"] for r in eng.page("haxby OR container", "url",
                                           "asc")] == [
            RECORDS[2]["url"], RECORDS[0]["url"]]
    with pytest.raises(EngineError):
        Builder(path, fts=True)
    build(path, RECORDS, "fp2")  # fts=None: what this SQLite has
    with pytest.raises(EngineError):
        Engine.open(path, "fp2", fts=True)


def test_fts5_flag_and_closed_engine(db_file):
    assert E.fts5_available() in (True, False)
    assert E.fts5_available() is E.fts5_available()
    eng = Engine.open(db_file, "fp-1", fts=False)
    assert not eng.fts and eng.count("haxby") == 1
    eng.close()
    with pytest.raises(EngineError):
        eng.count("haxby")


def test_search_lookup_asks_every_index(tmp_path):
    from datalad.api import registry_sync

    from datalad_registry_ext import search
    registry = tmp_path / "reg"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    md = {"extractor_name": "bids_dataset", "extracted_metadata": {"x": 1}}
    for src, url in ((a, "https://x/1"), (b, "https://y/1")):
        src.write_text(json.dumps({"url": url, "metadata": [md]}) + "\n")
        res = registry_sync(str(src), dataset=registry, return_type="list",
                            result_renderer="disabled")
        assert res[-1]["status"] == "ok"
    ia, ib = record_id(str(a), "https://x/1"), record_id(str(b), "https://y/1")
    found = search.lookup(registry, [ia, ib, 7])
    assert set(found) == {ia, ib}
    assert (found[ia]["url"], found[ib]["source"]) == ("https://x/1", str(b))
    mb = metadata_id(str(b), "https://y/1", "bids_dataset")
    light, meta = search.metadata_lookup(registry, [mb, ia])[mb]
    assert meta == md and light["url"] == "https://y/1"
    assert search.metadata_lookup(registry, [ia]) == {}
