"""Invalid queries: QueryError with a message, a caret and what was expected."""
import random

import pytest

from datalad_registry_ext.query import QueryError, SearchView, compile_query, parse
from datalad_registry_ext.query.fields import KNOWN_FIELDS

RECORDS = [
    {"url": "https://github.com/OpenNeuroDatasets/ds000105", "ds_id": "x-1",
     "branches": {"master": {"hexsha": "a"}, "git-annex": {"hexsha": "b"}},
     "tags": [{"name": "1.0"}], "annexed_files_in_wt_size": 10,
     "last_update_dt": "2024-01-01T00:00:00+00:00",
     "metadata": [{"extractor_name": "bids_dataset",
                   "extracted_metadata": {"Name": "haxby", "a": [1, {"b": 2}]}}],
     "subdatasets": [{"path": "s", "url": "u", "ds_id": "y"}]},
    {"url": "https://osf.io/x", "metadata": []},
]

# (query, reason contains, caret position, "expected" line contains)
ERRORS = [
    # unbalanced parentheses, both kinds
    ("(haxby OR url:gin", "unbalanced parenthesis", 17, "expected ')'"),
    ("((a)", "unbalanced parenthesis", 4, "expected ')'"),
    ("haxby OR url:gin)", "unbalanced parenthesis", 16, "unexpected ')'"),
    ("a))", "unbalanced parenthesis", 1, "unexpected ')'"),
    (")a(", "unbalanced parenthesis", 0, "unexpected ')'"),
    ('"(" )', "unbalanced parenthesis", 4, "unexpected ')'"),
    ("()", "empty parentheses", 1, "search term"),
    # dangling operators
    ("haxby AND", "dangling operator 'AND'", 9, "after 'AND'"),
    ("haxby OR", "dangling operator 'OR'", 8, "after 'OR'"),
    ("haxby OR   ", "dangling operator 'OR'", 11, "after 'OR'"),
    ("OR x", "dangling operator 'OR'", 0, "before 'OR'"),
    ("AND x", "dangling operator 'AND'", 0, "before 'AND'"),
    ("AND", "dangling operator 'AND'", 0, "before 'AND'"),
    ("NOT", "dangling operator 'NOT'", 3, "after 'NOT'"),
    ("x NOT", "dangling operator 'NOT'", 5, "after 'NOT'"),
    ("a AND OR b", "dangling operator 'AND'", 6, "after 'AND'"),
    ("(a OR) b", "dangling operator 'OR'", 5, "after 'OR'"),
    ("a (AND b)", "dangling operator 'AND'", 3, "before 'AND'"),
    # quotes
    ('"abc', "unterminated quoted string", 0, "closing '\"'"),
    ('url:"abc', "unterminated quoted string", 4, "closing '\"'"),
    ('haxby "a\\"', "unterminated quoted string", 6, "closing '\"'"),
    # extractors, paths
    ("metadata[]:x", "missing extractor name", 9, "extractor name"),
    ("metadata[a,]:x", "missing extractor name", 11, "extractor name"),
    ("metadata[a", "unbalanced bracket", 10, "expected ']'"),
    ("metadata[a b]:x", "unexpected 'b'", 11, "']'"),
    ("metadata[x]", "missing ':'", 11, "expected ':'"),
    ("metadata[x] haxby", "missing ':'", 12, "expected ':'"),
    ("metadata[a].:x", "missing key name", 12, "key name"),
    ("url[a]:x", "takes no [extractors]", 3, "only metadata"),
    ("url.x:y", "has no keys", 3, "paths apply to"),
    # missing values
    ("url:", "missing value", 4, "expected a value"),
    ("url:  ", "missing value", 6, "expected a value"),
    ("url:=", "missing value", 5, "expected a value"),
    ("url:~", "missing value", 5, "expected a value"),
    ("(url:)", "missing value", 5, "expected a value"),
    # unknown fields
    ("foo:bar", "unknown field 'foo'", 0, "url, ds_id, head"),
    ("haxby AND foo:bar", "unknown field 'foo'", 10, "known fields"),
    ("URL:github", "unknown field 'URL'", 0, "known fields"),
    ("https://github.com", "unknown field 'https'", 0, "known fields"),
    ("x.y:z", "unknown field 'x'", 0, "known fields"),
    # operators that do not apply
    ("url:>5", "operator '>' does not apply to field 'url'", 4, "comparisons"),
    ("metadata[x]:<=3", "operator '<=' does not apply", 12, "comparisons"),
    ("tags:<1", "operator '<' does not apply", 5, "comparisons"),
    # bad numbers, sizes, dates
    ("annex_key_count:>abc", "invalid number", 17, "a number"),
    ("annex_key_count:>10GB", "invalid number", 17, "a number"),
    ("annex_key_count:=", "missing value", 17, "value"),
    ("annexed_files_in_wt_size:>10XB", "invalid number", 26, "10GB"),
    ("annexed_files_in_wt_size:>1.2.3", "invalid number", 26, "size"),
    ("git_objects_kb:<lots", "invalid number", 16, "KiB"),
    ('annexed_files_in_wt_size:>""', "invalid number", 26, "size"),
    ("last_update_dt:>2024-13-01", "invalid date", 16, "ISO 8601"),
    ("last_update_dt:>yesterday", "invalid date", 16, "ISO 8601"),
    ("head_dt:=2024-02-30", "invalid date", 9, "ISO 8601"),
    ("head_dt:<2024-01-01T25:00", "invalid date", 9, "ISO 8601"),
    # bad regular expressions
    ('url:~"(ab"', "invalid regular expression", 6, "regular expression"),
    ('url:~"ab["', "invalid regular expression", 8, "regular expression"),
    ("url:~ab[", "invalid regular expression", 7, "regular expression"),
    ('url:~"(a+)+$"', "unsafe regular expression", 5, "simpler"),
    ('url:~"(a*)*b"', "unsafe regular expression", 5, "simpler"),
    ('url:~"(a|a)*b"', "unsafe regular expression", 5, "simpler"),
    ('url:~"(a|ab)+c"', "unsafe regular expression", 5, "simpler"),
    ('url:~"(a)\\1"', "backreferences", 5, "simpler"),
    ('metadata:~"(x+y?)+z"', "unsafe regular expression", 10, "simpler"),
    # stray characters
    (":x", "unexpected", 0, "search term"),
    ("[a]", "unexpected", 0, "search term"),
    ("a\x00b", "NUL", 1, ""),
]


@pytest.mark.parametrize("query,reason,position,expected", ERRORS,
                         ids=[repr(e[0]) for e in ERRORS])
def test_error(query, reason, position, expected):
    with pytest.raises(QueryError) as ei:
        parse(query)
    err = ei.value
    assert reason in err.reason
    assert err.position == position
    assert expected in err.expected
    assert err.query == query
    lines = str(err).split("\n")
    assert lines[0] == f"Invalid query: {err.reason}"
    assert lines[1] == "  " + "".join(" " if c in "\t\n\r" else c
                                      for c in query)
    assert lines[2] == "  " + " " * position + "^"
    if expected:
        assert lines[3] == err.expected


@pytest.mark.parametrize("query,reason,position,expected", ERRORS[::5])
def test_view_search_raises_same_error(query, reason, position, expected):
    view = SearchView(RECORDS)
    with pytest.raises(QueryError) as ei:
        view.search(query)
    assert ei.value.position == position
    assert reason in ei.value.reason


def test_example_message_exactly():
    with pytest.raises(QueryError) as ei:
        parse("(haxby OR url:gin")
    lines = str(ei.value).split("\n")
    assert lines[:3] == ["Invalid query: unbalanced parenthesis",
                         "  (haxby OR url:gin",
                         "                   ^"]
    assert lines[3].startswith("expected ')'")


def test_unknown_field_names_all_known_fields():
    with pytest.raises(QueryError) as ei:
        parse("nobody:knows")
    for f in KNOWN_FIELDS:
        assert f in str(ei.value)


def test_query_error_is_value_error_with_attributes():
    with pytest.raises(ValueError) as ei:
        parse("url:")
    assert isinstance(ei.value, QueryError)
    assert ei.value.query == "url:"
    assert ei.value.position == 4


def test_whitespace_is_shown_as_spaces_so_the_caret_lines_up():
    with pytest.raises(QueryError) as ei:
        parse("a\tAND")
    lines = str(ei.value).split("\n")
    assert lines[1] == "  a AND"
    assert lines[2] == "       ^"


def test_non_string_query():
    with pytest.raises(QueryError):
        parse(None)
    with pytest.raises(QueryError):
        SearchView(RECORDS).search(b"haxby")


def test_compile_query_accepts_text_and_raises_query_error():
    assert compile_query("haxby")(RECORDS[0]) is True
    assert compile_query("NOT haxby")(RECORDS[1]) is True
    with pytest.raises(QueryError):
        compile_query("haxby AND")


def test_deep_nesting_is_an_error_not_a_recursion_error():
    with pytest.raises(QueryError) as ei:
        SearchView(RECORDS).search("NOT " * 1000 + "haxby")
    assert ei.value.reason == "query nested too deeply"
    assert ei.value.position == 4000
    # redundant parentheses do not nest the tree
    assert SearchView(RECORDS).search("(" * 2000 + "haxby" + ")" * 2000) == [0]


def test_overlong_queries_are_refused_at_once():
    from datalad_registry_ext.query.parser import MAX_QUERY_LENGTH
    with pytest.raises(QueryError) as ei:
        parse("haxby " * (MAX_QUERY_LENGTH // 6 + 1))
    assert ei.value.reason.startswith("query too long")
    assert str(MAX_QUERY_LENGTH) in ei.value.expected


def test_odd_record_values_do_not_break_searching():
    from datetime import datetime, timezone
    recs = [{"url": "u", "ds_id": 5, "tags": "not json", "branches": ["main"],
             "metadata": [{"extractor_name": "x",
                           "extracted_metadata": {"when": datetime(
                               2024, 1, 1, tzinfo=timezone.utc), 1: "one"}},
                          "garbage", {"no": "name"}],
             "annexed_files_in_wt_size": "12", "last_update_dt": "garbage",
             "subdatasets": [{"path": "p"}, "garbage"]}]
    view = SearchView(recs)
    assert view.search("ds_id:=5") == [0]
    assert view.search("tags:json") == [0]
    assert view.search("tags:=json") == []
    assert view.search("branches:=main") == [0]
    assert view.search("metadata[x]:2024-01-01") == [0]
    assert view.search('metadata[x]."1":=one') == [0]
    assert view.search("annexed_files_in_wt_size:>10") == [0]
    assert view.search("last_update_dt:>2000") == []
    assert view.search("last_update_dt:garb") == [0]
    assert view.search('subds_url:""') == []


def test_pathological_regex_finishes_quickly():
    import time
    view = SearchView([{"url": "a" * 50000, "metadata": []}])
    t0 = time.monotonic()
    with pytest.raises(QueryError):
        view.search('url:~"(a+)+$"')
    with pytest.raises(QueryError):
        view.search('url:~"(a|aa)+$"')
    assert time.monotonic() - t0 < 2


# -- nothing but QueryError ever escapes ---------------------------------------

_PIECES = [
    "haxby", "url", "metadata", "ds_id", "tags", "branches", "subds_url",
    "annex_key_count", "annexed_files_in_wt_size", "last_update_dt", "foo",
    "AND", "OR", "NOT", "and", "(", ")", "(", ")", ":", ":", "=", "~", ">",
    ">=", "<", "[", "]", ",", ".", '"', '\\"', '""', '"x y"', " ", " ", " ",
    "10GB", "2024-05", "@graph", "a+", "(a+)+", "$", "\\", "%", "/", "://",
    "bids_dataset", "dandi:files", "\t", "é", "\x00", "*", "?", "1e3", "-",
]


def _random_queries(seed, n):
    rnd = random.Random(seed)
    for _ in range(n):
        yield "".join(rnd.choice(_PIECES) for _ in range(rnd.randint(1, 12)))


def test_fuzz_only_query_error_escapes():
    view = SearchView(RECORDS, regex_timeout=0.5)
    ok = bad = 0
    for q in _random_queries(20240530, 4000):
        try:
            tree = parse(q)
        except QueryError as e:
            bad += 1
            assert 0 <= e.position <= len(q), q
            assert str(e).startswith("Invalid query: ")
            continue
        ok += 1
        result = view.search(q)  # must not raise for a parsed query
        assert result == sorted(set(result))
        pred = compile_query(tree)
        assert [i for i, r in enumerate(RECORDS) if pred(r)] == result, q
    assert ok > 100 and bad > 100


def test_fuzz_structured_queries_parse():
    rnd = random.Random(7)
    terms = ["haxby", '"a b"', "url:github", 'metadata[bids_dataset]:""',
             "annexed_files_in_wt_size:>1kB", "last_update_dt:<2025",
             "metadata[bids_dataset].a.b:=2", 'tags:~"^1"', "subds_id:y"]
    view = SearchView(RECORDS)

    def expr(depth):
        r = rnd.random()
        if depth > 3 or r < 0.3:
            return rnd.choice(terms)
        if r < 0.45:
            return "NOT " + expr(depth + 1)
        if r < 0.6:
            return "(" + expr(depth + 1) + ")"
        op = rnd.choice([" AND ", " OR ", " "])
        return expr(depth + 1) + op + expr(depth + 1)

    for _ in range(500):
        q = expr(0)
        view.search(q)  # parses and evaluates
