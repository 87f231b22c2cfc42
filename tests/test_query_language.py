"""The search query language: semantics, over hand-made and generated
realistic records."""
import json
from pathlib import Path

import pytest

from datalad_registry_ext.query import (
    And, MatchAll, Not, Or, QueryError, SearchView, Term, compile_query, parse,
    record_fields,
)
from datalad_registry_ext.query.fields import jsonb_text

HEAD_A = "0123456789abcdef0123456789abcdef01234567"
HEAD_B = "deadbeef" * 5
DS_A = "11111111-aaaa-4bbb-8ccc-000000000105"
SUB_A = "22222222-bbbb-4ccc-8ddd-000000000001"
DS_C = "33333333-cccc-4ddd-8eee-000000000003"
DS_E = "44444444-dddd-4eee-8fff-000000000004"
SUB_E = "55555555-eeee-4fff-8aaa-000000000005"
DS_F = "66666666-ffff-4aaa-8bbb-000000000006"
SUB_F = "77777777-aaaa-4bbb-8ccc-000000000007"
DS_H = "88888888-bbbb-4ccc-8ddd-000000000008"


def _branches(*names, head="f" * 40, dt="2023-01-15T10:00:00+00:00"):
    return {n: {"hexsha": (head if n in ("master", "main") else "f" * 40),
                "last_commit_dt": dt} for n in names}


def _md(name, content):
    return {"extractor_name": name, "extractor_version": "1",
            "extraction_parameter": {}, "extracted_metadata": content,
            "dataset_version": HEAD_A, "dataset_describe": "x"}


# Records A..H (indices 0..7). Fields a record lacks are absent (= null).
RECORDS = [
    # A: an OpenNeuro BIDS dataset on GitHub, with a subdataset
    {
        "url": "https://github.com/OpenNeuroDatasets/ds000105",
        "ds_id": DS_A,
        "annex_uuid": "99999999-0000-4000-8000-000000000001",
        "head": HEAD_A,
        "head_describe": "1.0.2",
        "head_dt": "2023-01-15T10:00:00+00:00",
        "branches": _branches("master", "git-annex", head=HEAD_A),
        "tags": [{"name": "1.0.2", "hexsha": HEAD_A}],
        "annex_key_count": 120,
        "annexed_files_in_wt_count": 100,
        "annexed_files_in_wt_size": 12_000_000_000,
        "git_objects_kb": 2048,
        "last_update_dt": "2024-05-30T13:09:47+00:00",
        "processed": True,
        "metadata": [
            _md("bids_dataset", {"Name": "Haxby faces", "BIDSVersion": "1.6.0",
                                 "Authors": ["James Haxby", "M. Ida Gobbini"],
                                 "License": "CC0"}),
            _md("metalad_core", {"@context": {"@vocab": "http://schema.org/"},
                                 "@graph": [{"@type": "Dataset",
                                             "identifier": DS_A,
                                             "hasPart": [{"identifier": SUB_A,
                                                          "name": "sub-01"}]}]}),
        ],
        "subdatasets": [{"path": "sub-01",
                         "url": "https://github.com/OpenNeuroDatasets/sub01",
                         "ds_id": SUB_A}],
        "source": "local",
    },
    # B: a pure annex repository on GIN (no ds_id); offset time zone
    {
        "url": "https://gin.g-node.org/lab/ephys-raw",
        "annex_uuid": "99999999-0000-4000-8000-000000000002",
        "head": HEAD_B,
        "head_describe": "deadbee",
        "branches": _branches("main", "git-annex"),
        "tags": [],
        "annex_key_count": 5,
        "annexed_files_in_wt_count": 5,
        "annexed_files_in_wt_size": 1500,
        "git_objects_kb": 10,
        "last_update_dt": "2023-12-31T23:30:00-02:00",
        "processed": True,
        "metadata": [],
        "source": "gin-mirror",
    },
    # C: a DataLad dataset without annex; tricky metadata text
    {
        "url": "https://example.com/datalad/handbook",
        "ds_id": DS_C,
        "head": "c" * 40,
        "head_describe": "v2.0-3-g5a5a5a5",
        "branches": _branches("main"),
        "tags": [{"name": "v2.0", "hexsha": "c" * 40}],
        "git_objects_kb": 500,
        "last_update_dt": "2024-06-01T00:00:00+00:00",
        "processed": True,
        "metadata": [
            _md("datacite_gin", {"title": 'The "DataLad" Handbook',
                                 "keywords": ["container", "AND", "tutorial"],
                                 "authors": [{"firstname": "Adina",
                                              "lastname": "Wagner"}]}),
            _md("dandi:files", [{"path": "sub-01/x.nwb", "size": 2048}]),
        ],
    },
    # D: not processed yet: nothing but a URL
    {"url": "https://osf.io/abcde", "processed": False, "metadata": []},
    # E: "or" in URL and metadata; naive date; hasPart is an object
    {
        "url": "https://github.com/example/or-tools-data",
        "ds_id": DS_E,
        "head": "e" * 40,
        "head_describe": "v0.1",
        "head_dt": "2022-02-01T00:00:00+00:00",
        "branches": _branches("master", "git-annex", head="e" * 40),
        "tags": [{"name": "v0.1", "hexsha": "e" * 40}],
        "annex_key_count": 0,
        "annexed_files_in_wt_count": 0,
        "annexed_files_in_wt_size": 0,
        "git_objects_kb": 64,
        "last_update_dt": "2022-02-02T02:02:02",
        "processed": True,
        "metadata": [
            _md("bids_dataset", {"Name": "Or tools and more",
                                 "BIDSVersion": "1.8.0", "Authors": ["Ann Or"]}),
            _md("metalad_core", {"@graph": [{"hasPart": {"identifier": SUB_E}}]}),
        ],
    },
    # F: non-ASCII, jsonb key order, tags as (upstream) JSON text
    {
        "url": "https://hub.datalad.org/inm7/daten",
        "ds_id": DS_F,
        "head": "f" * 40,
        "head_describe": "release-2024",
        "branches": {"zeta": {"hexsha": "f0" * 20, "last_commit_dt": "x"},
                     "a": {"hexsha": "e1" * 20, "last_commit_dt": "y"},
                     "git-annex": {"hexsha": "d2" * 20, "last_commit_dt": "z"}},
        "tags": '[{"name": "release-2024", "hexsha": "ffff"}]',
        "annex_key_count": 3,
        "annexed_files_in_wt_count": 3,
        "annexed_files_in_wt_size": 2 * 1024 ** 3,
        "git_objects_kb": 1024 ** 2,
        "last_update_dt": "2025-01-01T00:00:00Z",
        "processed": True,
        "metadata": [
            _md("metalad_studyminimeta",
                {"bb": 1, "a": 2, "ccc": 3, "é": 4,
                 "title": "Studie am Forschungszentrum Jülich",
                 "Ünïcode": "MÜLLER"}),
        ],
        "subdatasets": [
            {"path": "code", "url": "https://github.com/example/tools.git",
             "ds_id": None},
            {"path": "data", "url": "../data", "ds_id": SUB_F},
        ],
    },
    # G: another copy of A's dataset (same ds_id) on GIN
    {
        "url": "https://gin.g-node.org/OpenNeuro/ds000105-copy",
        "ds_id": DS_A,
        "head": HEAD_A,
        "head_describe": "1.0.1",
        "branches": _branches("main", "git-annex", head=HEAD_A),
        "tags": [],
        "annex_key_count": 100,
        "annexed_files_in_wt_count": 90,
        "annexed_files_in_wt_size": 11_000_000_000,
        "git_objects_kb": 1900,
        "last_update_dt": "2024-03-01T00:00:00+00:00",
        "processed": True,
        "metadata": [],
    },
    # H: special characters in URL and metadata
    {
        "url": "https://example.org/data%20set?x=1&y=2#frag",
        "ds_id": DS_H,
        "head": "a" * 40,
        "head_describe": "x_y-z",
        "branches": _branches("master", head="a" * 40),
        "tags": [],
        "git_objects_kb": 1,
        "last_update_dt": "2023-06-15T12:00:00+00:00",
        "processed": True,
        "metadata": [_md("bids_dataset", {"Name": 'back\\slash "quote" 100%',
                                          "BIDSVersion": "1.6"})],
    },
]
NAMES = "ABCDEFGH"
ALL = set(NAMES)


@pytest.fixture(scope="module")
def view():
    return SearchView(RECORDS)


def names(indices):
    return {NAMES[i] for i in indices}


CASES = [
    # -- bare words and strings: the 7 default fields, case-insensitive
    ("haxby", "A"),
    ("HAXBY", "A"),
    ("Haxby", "A"),
    ('"James Haxby"', "A"),
    ("github", "AE"),
    ("ds000105", "AG"),
    ("deadbee", "B"),
    ("container", "C"),
    ("handbook", "C"),
    ("ANDROID", ""),
    ("1.0.2", "A"),
    ('""', ALL),
    ("bids_dataset", "AEH"),         # extractor names are searched too
    ("jülich", "F"),
    ("JÜLICH", "F"),
    ("müller", "F"),                 # stored as MÜLLER
    # -- lowercase and/or/not are words; uppercase are operators
    ("example OR handbook", "CEH"),
    ("example or handbook", "C"),    # "or" is in C's metadata ("authors")
    ("example handbook", "C"),
    ("example AND handbook", "C"),
    ("tools not", ""),
    # -- precedence: NOT > AND (incl. juxtaposition) > OR
    ("haxby OR example handbook", "AC"),
    ("example handbook OR haxby", "AC"),
    ("haxby OR example AND handbook", "AC"),
    ("(haxby OR example) AND handbook", "C"),
    ("NOT haxby github", "E"),
    ("github NOT haxby", "E"),
    ("github AND NOT haxby", "E"),
    ("NOT (haxby OR github)", "BCDFGH"),
    ("NOT NOT haxby", "A"),
    ("haxby OR NOT github", "ABCDFGH"),
    ("(haxby)", "A"),
    ("((url:gin))", "BG"),
    # -- NULL handling with NOT
    ("NOT haxby", "BCDEFGH"),
    ("NOT metadata:haxby", "BCDEFGH"),
    ("NOT ds_id:\"\"", "BD"),
    ("head_describe:deadbee", "B"),
    ("NOT head_describe:deadbee", "ACDEFGH"),
    ("tags:\"\"", "ABCEFGH"),
    ("NOT tags:\"\"", "D"),
    ("NOT source:\"\"", "CDEFGH"),
    ("NOT annexed_files_in_wt_size:>0", "CDEH"),
    ("NOT metadata[bids_dataset]:\"\"", "BCDFG"),
    # -- fields
    ("url:github", "AE"),
    ("url:GitHub", "AE"),
    ("url:?github", "AE"),
    ("url : github", "AE"),
    ("url:gin", "BG"),
    ("url:github OR url:gin", "ABEG"),
    ("(url:github OR url:gin) AND haxby", "A"),
    ("url:github url:gin", ""),
    ("NOT url:github", "BCDFGH"),
    ("ds_id:11111111", "AG"),
    ("head:0123456789abcdef", "AG"),
    ("source:local", "A"),
    ("source:gin", "B"),
    ("annex_uuid:\"\"", "AB"),
    ("branches:git-annex", "ABEFG"),
    ("NOT branches:git-annex", "CDH"),
    ("tags:release-2024", "F"),
    ("tags:v", "CE"),
    # -- unquoted URLs and special characters
    ("url:https://github.com/OpenNeuroDatasets", "A"),
    ("url:https://example.org/data%20set?x=1&y=2#frag", "H"),
    ("url:%20", "H"),
    ("100%", "H"),
    # -- metadata and extractors
    ('metadata[bids_dataset]:""', "AEH"),
    ('metadata [bids_dataset] : ""', "AEH"),
    ('metadata[bids_dataset]:"" AND NOT url:openneuro', "EH"),
    ('metadata[bids_dataset]:"BIDSVersion\\": \\"1.6"', "AH"),
    ('metadata[bids_dataset,metalad_core]:"BIDSVersion\\": \\"v"', ""),
    ("metadata:bids_dataset", "AEH"),
    ("metadata[metalad_core]:bids_dataset", ""),  # name itself not searched
    ('metadata[BIDS_dataset]:""', ""),            # names are case-sensitive
    ('metadata[nonexistent]:""', ""),
    ('metadata["bids_dataset"]:haxby', "A"),
    ("metadata[dandi:files]:nwb", "C"),
    ('metadata[dandi:files]:""', "C"),
    ('metadata[datacite_gin, dandi:files]:tutorial', "C"),
    ('metadata:"Ann Or"', "E"),
    # -- quoted strings with escaped quotes; backslashes (JSON text)
    ('"\\"DataLad"', "C"),
    ('"The \\"DataLad\\" Handbook"', ""),     # JSON text has \" there
    ('metadata[datacite_gin].title:"The \\"DataLad\\" Handbook"', "C"),
    ('"back\\\\slash"', "H"),                 # \\ stays two backslashes
    # -- jsonb key order: by byte length, then bytewise
    ('metadata:"\\"a\\": 2, \\"bb\\": 1, \\"é\\": 4, \\"ccc\\": 3"', "F"),
    ('metadata:"\\"bb\\": 1, \\"a\\": 2"', ""),
    ('metadata:"\\"é\\": 4, \\"bb\\""', ""),
    ('metadata[bids_dataset]:"\\"license\\": \\"cc0\\", \\"bidsversion\\""',
     "A"),
    ('metadata[bids_dataset]:"faces\\", \\"Authors\\": [\\"James"', "A"),
    ('branches:"{\\"a\\": {\\"hexsha\\""', "F"),
    ('branches:"\\"zeta\\": {\\"hexsha\\": \\"f0f0"', "F"),
    # -- exact values
    ("url:=https://osf.io/abcde", "D"),
    ("url:=https://osf.io/ABCDE", "D"),
    ("url:=https://osf.io/abcd", ""),
    (f"ds_id:={DS_C}", "C"),
    ("url:=https://github.com/OpenNeuroDatasets/ds000105", "A"),
    ("tags:=release-2024", "F"),
    ("tags:=v2.0", "C"),
    ("branches:=master", "AEH"),
    ("metadata[bids_dataset]:=1.6", "H"),
    ("annex_key_count:=0", "E"),
    ("annex_key_count:0", "AEG"),            # substring of the decimal text
    # -- field paths into metadata
    ("metadata[bids_dataset].Authors:haxby", "A"),
    ("metadata[bids_dataset].Name:haxby", "A"),
    ("metadata[bids_dataset].License:haxby", ""),
    ('metadata[bids_dataset].Authors:"or"', "E"),
    (f"metadata[metalad_core].@graph.hasPart.identifier:{SUB_A[:8]}", "A"),
    (f"metadata[metalad_core].@graph.hasPart.identifier:={SUB_E}", "E"),
    ('metadata.@graph.hasPart.identifier:""', "AE"),
    ('metadata[bids_dataset].Missing:""', ""),
    ("metadata[bids_dataset].BIDSVersion:=1.6", "H"),
    ("metadata[bids_dataset].bidsversion:=1.6", "H"),
    ('metadata[metalad_core]."@graph".hasPart.name:sub', "A"),
    ("branches.master.hexsha:0123", "A"),
    ("tags.name:=v0.1", "E"),
    # -- subdatasets
    (f"subds_id:{SUB_A}", "A"),
    (f"subds_id:={SUB_F}", "F"),
    ("subds_url:tools", "F"),
    ("subds_url:=../data", "F"),
    ('NOT subds_id:""', "BCDEGH"),
    # -- comparisons with units
    ("annexed_files_in_wt_size:>10GB", "AG"),
    ("annexed_files_in_wt_size:>=2GiB", "AFG"),
    ("annexed_files_in_wt_size:<2GiB", "BE"),
    ("annexed_files_in_wt_size:<=1.5kB", "BE"),
    ("annexed_files_in_wt_size:<1.5kB", "E"),
    ("annexed_files_in_wt_size:=1500", "B"),
    ("annexed_files_in_wt_size:> 11.5GB", "A"),
    ("annexed_files_in_wt_size:>11.5 GB", "A"),   # the unit after a space
    ('annexed_files_in_wt_size:>"11.5 GB"', "A"),
    ("git_objects_kb:>=1GiB", "F"),
    ("git_objects_kb:>1GiB", ""),
    ("git_objects_kb:>1000", "AFG"),
    ("annex_key_count:>=100", "AG"),
    # -- comparisons with dates
    ("last_update_dt:>=2024", "ABCFG"),
    ("last_update_dt:<2024", "EH"),
    ("last_update_dt:2023-12-31", "B"),
    ("last_update_dt:=2024-05", "A"),
    ("last_update_dt:>2024-05-30", "CF"),
    ("last_update_dt:<=2024-05-30", "ABEGH"),
    ("last_update_dt:>2024-05-30T13:09:46Z", "ACF"),
    ("last_update_dt:>2024-05-30T15:09:47+02:00", "CF"),
    ('last_update_dt:>="2024-05-30 15:09:47+02:00"', "ACF"),
    ("last_update_dt:=2022-02-02T02:02:02", "E"),
    ("head_dt:<2023", "E"),
    ("NOT head_dt:<2023", "ABCDFGH"),
    # -- regular expressions
    ('head_describe:~"^v\\d"', "CE"),
    ("head_describe:~^1\\.", "AG"),
    ('url:~"\\.org/"', "BFGH"),
    ('metadata[bids_dataset].Name:~"^or tools"', "E"),
    ('tags:~"^v\\d"', "CE"),
    ('subds_url:~"\\.git$"', "F"),
    ('metadata:~"^cc0$"', "A"),
    ("branches:~^zet", "F"),
    # -- empty query
    ("", ALL),
    ("   ", ALL),
]


@pytest.mark.parametrize("query,expected", CASES, ids=[c[0] or "<empty>"
                                                      for c in CASES])
def test_conformance(view, query, expected):
    assert names(view.search(query)) == set(expected)


def test_conformance_table_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("query,expected", CASES[::7])
def test_predicate_agrees_with_view(query, expected):
    pred = compile_query(parse(query))
    assert {NAMES[i] for i, r in enumerate(RECORDS) if pred(r)} == set(expected)
    # also from the precomputed per-record fields
    assert {NAMES[i] for i, r in enumerate(RECORDS)
            if pred(record_fields(r))} == set(expected)


def test_search_returns_indices_in_input_order(view):
    assert view.search("url:gin OR haxby") == [0, 1, 6]


def test_search_records_returns_records(view):
    assert view.search_records("handbook") == [RECORDS[2]]


def test_results_do_not_depend_on_cache():
    cached = SearchView(RECORDS, cache_size=4)
    plain = SearchView(RECORDS, cache_size=0)
    for q, expected in CASES:
        assert names(cached.search(q)) == set(expected), q
        assert names(cached.search(q)) == set(expected), q  # warm
        assert names(plain.search(q)) == set(expected), q


# -- the tree -----------------------------------------------------------------

def test_parse_tree_shapes():
    assert parse("") == MatchAll()
    assert parse("a") == Term("a")
    assert parse("a b OR c") == Or((And((Term("a"), Term("b"))), Term("c")))
    assert parse("NOT a b") == And((Not(Term("a")), Term("b")))
    assert parse("a OR b OR c") == Or((Term("a"), Term("b"), Term("c")))
    t = parse('metadata[x, "y z"].k."a b":=v')
    assert (t.field, t.op, t.extractors, t.path, t.value) == (
        "metadata", "eq", ("x", "y z"), ("k", "a b"), "v")


def test_parse_positions():
    t = parse("haxby url:gin")
    assert [x.position for x in t.items] == [0, 6]
    assert t.items[1].value_position == 10


def test_parse_unescapes_only_quotes():
    assert parse(r'"a\"b"').value == 'a"b'
    assert parse(r'"a\\b"').value == "a\\\\b"
    assert parse(r'"a\nb"').value == "a\\nb"


def test_parse_operator_words_stay_words_in_values():
    assert parse("url:AND").value == "AND"
    assert parse("ANDY OR NOTE") == Or((Term("ANDY"), Term("NOTE")))


def test_parse_operands():
    assert parse("annexed_files_in_wt_size:>1.5kB").operand == 1500
    assert parse("annexed_files_in_wt_size:>1MiB").operand == 1024 ** 2
    assert parse("git_objects_kb:>1MiB").operand == 1024
    assert parse("annexed_files_in_wt_size:>10gb").operand == 10 ** 10
    start, end = parse("last_update_dt:>2024").operand
    assert end - start == 366 * 86400
    start, end = parse("head_dt:=2024-02").operand
    assert end - start == 29 * 86400
    start, end = parse("head_dt:=2024-12").operand
    assert end - start == 31 * 86400


def test_and_or_words_lowercase_are_terms():
    assert parse("a and b") == And((Term("a"), Term("and"), Term("b")))
    assert parse("a or b") == And((Term("a"), Term("or"), Term("b")))


def test_parse_returns_same_tree_for_same_text():
    assert parse("haxby url:gin") is parse("haxby url:gin")


def test_matching_does_not_cross_field_boundaries():
    recs = [{"url": "https://x/abc", "ds_id": "def", "metadata": []}]
    v = SearchView(recs)
    assert v.search("abc") == [0]
    assert v.search("def") == [0]
    assert v.search('"abcdef"') == []
    assert v.search('"abc def"') == []


def test_nul_in_record_text_never_matches_across():
    recs = [{"url": "a\x00b", "metadata": []}]
    v = SearchView(recs)
    assert v.search("a") == [0]
    assert v.search("b") == [0]


def test_metadata_record_without_content_is_searchable_by_name():
    recs = [{"url": "u", "metadata": [{"extractor_name": "x",
                                       "extracted_metadata": None}]}]
    v = SearchView(recs)
    assert v.search('metadata[x]:""') == [0]
    assert v.search("metadata:null") == [0]


def test_non_bare_fields_not_in_default_search(view):
    # annex_uuid, source and subdatasets are searchable by field only
    assert view.search("99999999") == []
    assert view.search("gin-mirror") == []
    assert names(view.search("annex_uuid:99999999")) == {"A", "B"}
    assert view.search("sub01") == []


def test_jsonb_text_key_order():
    assert jsonb_text({"bb": 1, "a": {"zz": 0, "y": [{"ccc": 1, "dd": 2}]}}) == \
        '{"a": {"y": [{"dd": 2, "ccc": 1}], "zz": 0}, "bb": 1}'
    # byte length, not character length
    assert jsonb_text({"é": 1, "ab": 2, "c": 3}) == '{"c": 3, "ab": 2, "é": 1}'


# -- regular expressions --------------------------------------------------------

def test_catastrophic_regex_is_refused_quickly():
    import time
    recs = [{"url": "a" * 5000, "metadata": []}]
    v = SearchView(recs)
    t0 = time.monotonic()
    with pytest.raises(QueryError) as ei:
        v.search('url:~"(a+)+$"')
    assert time.monotonic() - t0 < 2
    assert "regular expression" in ei.value.reason
    assert ei.value.position == 5


def test_slow_regex_is_stopped_by_time_budget():
    import time
    recs = [{"url": "a" * 3000, "metadata": []}]
    v = SearchView(recs, regex_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(QueryError) as ei:
        v.search('url:~"a*a*a*a*[xy]"')
    assert time.monotonic() - t0 < 5
    assert "took too long" in str(ei.value)
    assert ei.value.position == 5


def test_slow_regex_in_metadata_is_stopped_by_time_budget():
    import time
    recs = [{"url": "u", "metadata": [_md("x", {"k": "a" * 3000})]}]
    v = SearchView(recs, regex_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(QueryError):
        v.search('metadata:~"a*a*a*a*[xy]"')
    assert time.monotonic() - t0 < 5


def test_regex_fine_on_long_text():
    recs = [{"url": "a" * 100000 + "b", "metadata": []}]
    v = SearchView(recs)
    assert v.search('url:~"a+b$"') == [0]


def test_empty_view():
    v = SearchView([])
    assert v.search("haxby") == []
    assert v.search("") == []
    assert v.search("NOT haxby") == []


# -- realistic records (1k generated by benchmarks/generate.py) ----------------
# Each expectation is computed by a plain scan over the same records.

@pytest.fixture(scope="module")
def bench(bench_records):
    return bench_records, SearchView(bench_records)


def test_generated_bids_dataset_count(bench):
    recs, v = bench
    expected = [i for i, r in enumerate(recs)
                if any(m["extractor_name"] == "bids_dataset"
                       for m in r.get("metadata") or [])]
    assert expected
    assert v.search('metadata[bids_dataset]:""') == expected


def test_generated_url_search(bench):
    recs, v = bench
    expected = [i for i, r in enumerate(recs) if "github" in r["url"].lower()]
    assert 0 < len(expected) < len(recs)
    assert v.search("url:github") == expected


def _default_texts(r):
    out = [r.get(f) for f in ("url", "ds_id", "head", "head_describe")]
    out += [json.dumps(r.get(f), ensure_ascii=False)
            for f in ("tags", "branches") if r.get(f) is not None]
    for m in r.get("metadata") or []:
        out += [m["extractor_name"],
                json.dumps(m["extracted_metadata"], ensure_ascii=False)]
    return [x.lower() for x in out if x is not None]


@pytest.mark.parametrize("word", ["haxby", "container", "bids", "openneuro"])
def test_generated_bare_word_and_not(bench, word):
    recs, v = bench
    expected = [i for i, r in enumerate(recs)
                if any(word in t for t in _default_texts(r))]
    assert expected  # the generated records hold every word
    assert v.search(word) == expected
    assert v.search(f"NOT {word}") == sorted(set(range(len(recs)))
                                             - set(expected))


def test_generated_combined_query(bench):
    recs, v = bench
    def has(r, name):
        return any(m["extractor_name"] == name for m in r.get("metadata") or [])
    bids = [i for i, r in enumerate(recs) if has(r, "bids_dataset")]
    expected = [i for i in bids if "openneuro" not in recs[i]["url"].lower()]
    assert 0 < len(expected) < len(bids)  # both sides of AND NOT count
    assert v.search('metadata[bids_dataset]:"" AND NOT url:openneuro') == expected


def test_generated_size_comparison(bench):
    recs, v = bench
    expected = [i for i, r in enumerate(recs)
                if (r.get("annexed_files_in_wt_size") or -1) > 10 ** 10]
    assert expected
    assert v.search("annexed_files_in_wt_size:>10GB") == expected


# -- the reference's examples stay valid ------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "source" / \
    "query-language.rst"


def _doc_examples():
    """Queries in the literal blocks of the reference, before its Errors
    section (comments after two spaces and '#' dropped)."""
    import re
    text = DOC.read_text(encoding="utf-8")
    lines = text[:text.index("\nErrors\n")].split("\n")
    out, indent = [], None
    for line in lines:
        width = len(line) - len(line.lstrip())
        if indent is not None:
            if not line.strip():
                continue
            if width > indent:
                out.append(re.split(r"\s{2,}#", line.strip())[0].strip())
                continue
            indent = None
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            indent = width
    return out


def test_reference_examples_parse():
    if not DOC.exists():
        pytest.skip("documentation not available")
    examples = _doc_examples()
    assert len(examples) > 50
    view = SearchView(RECORDS)
    for q in examples:
        view.search(q)  # raises QueryError if an example is invalid
