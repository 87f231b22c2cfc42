"""Size units after a space (``annexed_files_in_wt_size:>1 GB``) and short
extractor names in ``metadata[...]``: query trees and the reference
evaluator."""
import pytest

from datalad_registry_ext.query import And, Not, Or, QueryError, SearchView, Term, parse

SIZE = "annexed_files_in_wt_size"

RECORDS = [
    # 0: 2 bytes, a URL with "gb" in it
    {"url": "https://example.com/gb/small", SIZE: 2, "git_objects_kb": 10},
    # 1: 1.5 GB
    {"url": "https://example.com/big", SIZE: 1_500_000_000,
     "git_objects_kb": 2048},
    # 2: 5 GiB
    {"url": "https://example.com/huge", SIZE: 5 * 1024 ** 3,
     "git_objects_kb": 1024},
    # 3: no size
    {"url": "https://example.com/unknown"},
]


@pytest.fixture(scope="module")
def view():
    return SearchView(RECORDS)


@pytest.mark.parametrize("spaced, joined", [
    (f"{SIZE}:>1 GB", f"{SIZE}:>1GB"),
    (f"{SIZE}:>=1.5 gb", f"{SIZE}:>=1.5GB"),
    (f"{SIZE}:<2 GiB", f"{SIZE}:<2GiB"),
    (f"{SIZE}:<=500   MiB", f"{SIZE}:<=500MiB"),
    (f"{SIZE}:=2 B", f"{SIZE}:=2B"),
    ("git_objects_kb:>1 MiB", "git_objects_kb:>1MiB"),
    ("git_objects_kb:=1 mib", "git_objects_kb:=1MiB"),
])
def test_unit_after_a_space_is_the_unit(view, spaced, joined):
    tree = parse(spaced)
    assert isinstance(tree, Term)
    assert tree.operand == parse(joined).operand
    assert view.search(spaced) == view.search(joined)


def test_the_merged_term_equals_the_quoted_one(view):
    assert parse(f"{SIZE}:>1 GB") == parse(f'{SIZE}:>"1 GB"')
    tree = parse(f"{SIZE}:>1 GB")
    assert tree == Term(value="1 GB", field=SIZE, op="gt",
                        operand=1_000_000_000)
    assert (tree.position, tree.value_position) == (0, len(SIZE) + 2)
    assert view.search(f"{SIZE}:>1 GB") == [1, 2]
    assert view.search(f"{SIZE}:>1 GiB") == [1, 2]
    assert view.search(f"{SIZE}:>1.5 GB") == [2]
    assert view.search("git_objects_kb:>=1 MiB") == [1, 2]


def test_merged_inside_and_or_not(view):
    q = f"example {SIZE}:>1 GB url:huge"
    assert parse(q) == And((Term("example"),
                            Term("1 GB", SIZE, "gt", operand=10 ** 9),
                            Term("huge", "url")))
    assert view.search(q) == [2]
    q = f"url:small OR {SIZE}:>2 GiB"
    assert parse(q) == Or((Term("small", "url"),
                           Term("2 GiB", SIZE, "gt", operand=2 * 1024 ** 3)))
    assert view.search(q) == [0, 2]
    q = f"NOT {SIZE}:>1 GB"
    assert parse(q) == Not(Term("1 GB", SIZE, "gt", operand=10 ** 9))
    assert view.search(q) == [0, 3]


@pytest.mark.parametrize("query", [
    f'{SIZE}:>1 "GB"',            # quoted: a word
    f"{SIZE}:>1 AND GB",          # an explicit AND: a word
    f"({SIZE}:>1) GB",            # not the same AND
    f"{SIZE}:>1GB GB",            # has a unit already
    f'{SIZE}:>"1" GB',            # quoted number
    "annex_key_count:>1 GB",      # not a size field
    f"{SIZE}:1 GB",               # substring search, not a comparison
    f"{SIZE}:>1 GBs",             # not exactly a unit
])
def test_not_merged(query):
    tree = parse(query)
    assert isinstance(tree, And) and len(tree.items) == 2
    assert tree.items[1].field is None
    assert tree.items[1].value.lower() in ("gb", "gbs")


def test_word_gb_still_searches(view):
    # before, ">1 GB" meant "> 1 byte AND the word GB": this is that query
    assert view.search(f"{SIZE}:>1 AND GB") == [0]
    assert view.search(f"{SIZE}:>1 GB") == [1, 2]


def test_errors_keep_their_positions():
    q = f"{SIZE}:>x GB"
    with pytest.raises(QueryError) as e:
        parse(q)
    assert e.value.position == len(SIZE) + 2
    q = f"{SIZE}:>1 GB url:~("
    with pytest.raises(QueryError) as e:
        parse(q)
    assert e.value.position >= q.index("url:~")


def test_short_extractor_names_in_metadata_selector():
    assert parse("metadata[bids]:x") == parse("metadata[bids_dataset]:x")
    assert parse("metadata[core,smm,gin,rfc822,frictionless,datacite,"
                 "studyminimeta]:x").extractors == (
        "metalad_core", "metalad_studyminimeta", "datacite_gin",
        "datalad_rfc822", "frictionless_datapackage")
    # unknown names stay (synced records may carry them); quoted: literal
    assert parse("metadata[dandi:files,someone_elses]:x").extractors == (
        "dandi:files", "someone_elses")
    assert parse('metadata["bids"]:x').extractors == ("bids",)


def test_short_extractor_names_select_records():
    records = [
        {"url": "https://a", "metadata": [{
            "extractor_name": "bids_dataset", "extractor_version": "1",
            "extraction_parameter": {}, "dataset_version": "x",
            "extracted_metadata": {"Name": "haxby"}}]},
        {"url": "https://b", "metadata": [{
            "extractor_name": "datacite_gin", "extractor_version": "1",
            "extraction_parameter": {}, "dataset_version": "x",
            "extracted_metadata": {"title": "haxby"}}]},
    ]
    view = SearchView(records)
    assert view.search("metadata[bids]:haxby") == [0]
    assert view.search("metadata[gin].title:haxby") == [1]
    assert view.search('metadata[bids,gin]:""') == [0, 1]
