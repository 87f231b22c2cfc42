"""registry-search as a command: results, ordering, paging, stats, export."""
import json
import subprocess

import pytest
from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext.index import local_index, source_index

from .fixtures import make_dataset, make_git_repo, set_user_dirs


def search(*args, **kw):
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return registry_search(*args, **kw)


def rec(url, **kw):
    base = {"url": url, "processed": True, "metadata": []}
    base.update(kw)
    return json.dumps(base)


#: annex_key_count of the synced records: ordered by it (descending, ties by
#: URL, nulls last), they are in neither URL order nor its reverse
KEY_COUNTS = {
    "https://github.com/a/one": 2,
    "https://github.com/a/two": 9,
    "https://gin.g-node.org/b/three": None,
    "https://github.com/c/annex-only": 2,
    "https://example.org/d/git-only": None,
}


def upstream_lines():
    return [
        rec("https://github.com/a/one", ds_id="11111111-1111-4111-8111-111111111111",
            annexed_files_in_wt_size=300, annexed_files_in_wt_count=3,
            annex_key_count=KEY_COUNTS["https://github.com/a/one"],
            last_update_dt="2024-01-01T00:00:00+00:00",
            branches={"main": {}, "git-annex": {}},
            metadata=[{"extractor_name": "bids_dataset", "extractor_version": "0.1",
                       "extraction_parameter": {}, "dataset_version": "abc",
                       "dataset_describe": "abc",
                       "extracted_metadata": {"Name": "Haxby faces",
                                              "BIDSVersion": "1.6.0"}}]),
        rec("https://github.com/a/two", ds_id="11111111-1111-4111-8111-111111111111",
            annexed_files_in_wt_size=500, annexed_files_in_wt_count=5,
            annex_key_count=KEY_COUNTS["https://github.com/a/two"],
            last_update_dt="2023-01-01T00:00:00+00:00",
            branches={"main": {}, "git-annex": {}}),
        rec("https://gin.g-node.org/b/three", ds_id="22222222-2222-4222-8222-222222222222",
            annexed_files_in_wt_size=None, last_update_dt=None,
            branches={"master": {}}),
        rec("https://github.com/c/annex-only", annexed_files_in_wt_size=7,
            annexed_files_in_wt_count=1,
            annex_key_count=KEY_COUNTS["https://github.com/c/annex-only"],
            last_update_dt="2025-01-01T00:00:00Z",
            branches={"main": {}, "git-annex": {}}),
        rec("https://example.org/d/git-only", branches={"main": {}},
            last_update_dt="2022-06-01T00:00:00+00:00"),
    ]


def write_upstream(path):
    path.write_text("\n".join(upstream_lines()) + "\n")
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A registry with two own records and five synced ones, built once.

    Its index lives in user dirs under ``root``; the tests only search it
    (through the ``registry`` fixture). Registered without metadata
    extraction: these tests are about searching.
    """
    root = tmp_path_factory.mktemp("search")
    reg = root / "reg"
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, root)
        repo = make_git_repo(root / "plain-tools", {"README": "tools"})
        ds = make_dataset(root / "haxby-study", {"img.dat": "0123456789"})
        res = registry_submit([str(repo), ds.path], dataset=str(reg),
                              extract=False, result_renderer="disabled",
                              return_type="list")
        assert [r["status"] for r in res] == ["ok", "ok"], res
        src = write_upstream(root / "upstream.jsonl")
        res = registry_sync(str(src), dataset=str(reg),
                            result_renderer="disabled", return_type="list")
        assert res[-1]["status"] == "ok", res
    return {"root": root, "registry": reg, "haxby": ds.path, "plain": str(repo)}


@pytest.fixture
def registry(searched, monkeypatch):
    """The module's registry, with its user dirs for this test."""
    set_user_dirs(monkeypatch, searched["root"])
    return searched["registry"]


@pytest.fixture
def own_registry(tmp_path):
    """A registry of the test's own, for tests that change it: only the
    synced records."""
    reg = tmp_path / "reg"
    src = write_upstream(tmp_path / "upstream.jsonl")
    res = registry_sync(str(src), dataset=str(reg),
                        result_renderer="disabled", return_type="list")
    assert res[-1]["status"] == "ok", res
    return reg, src


def urls(res):
    return [r["url"] for r in res if r["action"] == "registry_search"]


def test_empty_query_lists_everything_ordered(registry):
    res = search(dataset=registry)
    assert len(res) == 7
    assert all(r["status"] == "ok" and r["total"] == 7 for r in res)
    # default: last update, newest first; nulls last
    assert urls(res)[-1] == "https://gin.g-node.org/b/three"
    res = search(dataset=registry, order_by="annexed_files_in_wt_size",
                 order_dir="asc")
    sizes = [r["annexed_files_in_wt_size"] for r in res]
    present = [s for s in sizes if s is not None]
    assert present == sorted(present)
    assert sizes[len(present):] == [None] * (len(sizes) - len(present))
    res = search(dataset=registry, order_by="url")
    assert urls(res) == sorted(urls(res), reverse=True)


def test_ties_are_ordered_by_url_and_paging_is_stable(registry, searched):
    counts = dict(KEY_COUNTS)
    counts.update({r["url"]: r.get("annex_key_count")
                   for r in local_index(registry).records()})
    assert len(counts) == 7
    # the own dataset has a count and sorts first by URL (a local path):
    # only the order by the count puts it after larger ones
    assert counts[searched["haxby"]] is not None
    assert counts[searched["plain"]] is None

    def expected(direction):
        sign = -1 if direction == "desc" else 1
        present = sorted((u for u, v in counts.items() if v is not None),
                         key=lambda u: (sign * counts[u], u))
        return present + sorted(u for u, v in counts.items() if v is None)

    for direction in ("desc", "asc"):
        everything = urls(search(dataset=registry, order_by="annex_key_count",
                                 order_dir=direction))
        assert everything == expected(direction)
        assert everything not in (sorted(everything),
                                  sorted(everything, reverse=True))
        pages = [urls(search(dataset=registry, order_by="annex_key_count",
                             order_dir=direction, limit=2, offset=o))
                 for o in range(0, 8, 2)]
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        assert sum(pages, []) == everything


def test_queries_find_own_and_synced_records(registry, searched):
    assert set(urls(search("haxby", dataset=registry))) == {
        "https://github.com/a/one", searched["haxby"]}
    assert set(urls(search('metadata[bids_dataset]:""', dataset=registry))) == {
        "https://github.com/a/one"}
    assert set(urls(search('url:github AND NOT haxby', dataset=registry))) == {
        "https://github.com/a/two", "https://github.com/c/annex-only"}
    assert set(urls(search("annexed_files_in_wt_size:>=300",
                           dataset=registry))) == {
        "https://github.com/a/one", "https://github.com/a/two"}
    own = search("url:plain-tools", dataset=registry)
    assert own[0]["source"] == "local"
    assert own[0]["path"] == str(registry / own[0]["registry_path"])


def test_result_fields_and_metadata_options(registry):
    (hit,) = search("url:github.com/a/one", dataset=registry)
    assert hit["ds_id"] == "11111111-1111-4111-8111-111111111111"
    assert hit["annexed_files_in_wt_size"] == 300
    assert "metadata" not in hit and hit["extractors"] == ["bids_dataset"]
    (hit,) = search("url:github.com/a/one", dataset=registry, metadata="reference")
    assert hit["metadata"] == [{"extractor_name": "bids_dataset",
                                "extractor_version": "0.1",
                                "dataset_version": "abc"}]
    (hit,) = search("url:github.com/a/one", dataset=registry, metadata="content")
    assert hit["metadata"][0]["extracted_metadata"]["Name"] == "Haxby faces"


def test_stats_are_computed_within_the_matching_set(registry):
    res = search("url:github.com/a", dataset=registry, stats=True, limit=0)
    (stats,) = [r for r in res if r["action"] == "registry_search_stats"]
    s = stats["collection_stats"]
    assert s["summary"] == {"unique_ds_count": 1, "ds_count": 2}
    assert s["datalad_ds_stats"]["stats"]["annexed_files_size"] == 800
    # one dataset id: the copy with the largest size counts once
    assert s["datalad_ds_stats"]["unique_ds_stats"] == {
        "ds_count": 1, "annexed_files_size": 500, "annexed_file_count": 5}
    assert s["pure_annex_ds_stats"]["ds_count"] == 0
    res = search("url:gin.g-node.org", dataset=registry, stats=True)
    (stats,) = [r for r in res if r["action"] == "registry_search_stats"]
    # upstream would pull in records outside the filter here; we don't
    assert stats["collection_stats"]["summary"] == {"unique_ds_count": 1,
                                                    "ds_count": 1}


def test_export_round_trips(registry, tmp_path):
    out = tmp_path / "export.jsonl.gz"
    res = search("url:github", dataset=registry, export=str(out))
    assert res[0]["action"] == "registry_export" and res[0]["records"] == 3
    # imported into another registry (the module's one stays as it is)
    other = tmp_path / "other-reg"
    res = registry_sync(str(out), dataset=str(other),
                        result_renderer="disabled", return_type="list")
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == 3
    exported = {r["url"]: r for r in source_index(other, str(out)).records()}
    originals = {r["url"]: r for r in search("url:github", dataset=registry,
                                             metadata="content")}
    assert set(exported) == set(originals)
    one = exported["https://github.com/a/one"]
    assert one["metadata"] == originals["https://github.com/a/one"]["metadata"]


@pytest.mark.parametrize("query, expected", [
    ("(haxby", "unbalanced parenthesis"),
    ("haxby AND", "expected"),
    ('"unterminated', "unterminated"),
    ("metadata[]:x", "extractor"),
    ("url:", "value"),
    ("nosuchfield:x", "url, ds_id"),
])
def test_bad_queries_are_error_results(registry, query, expected):
    res = search(query, dataset=registry)
    assert len(res) == 1 and res[0]["status"] == "error"
    assert expected in res[0]["message"]
    assert "^" in res[0]["message"]


def test_cli_table_and_errors(registry):
    proc = subprocess.run(["datalad", "registry-search", "-d", str(registry),
                           "url:github", "--stats"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("URL") and "EXTRACTORS" in lines[0]
    assert max(len(ln) for ln in lines) <= 100
    assert "3 matching records" in proc.stdout
    assert "Collection statistics" in proc.stdout
    bad = subprocess.run(["datalad", "registry-search", "-d", str(registry),
                          "(url:github OR"], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "^" in bad.stdout and "Traceback" not in bad.stderr


def test_corrupt_source_index_says_how_to_recover(own_registry):
    registry, src = own_registry
    assert len(search("haxby", dataset=registry)) == 1
    index = source_index(registry, str(src))
    index.path.write_text(index.path.read_text()[:200])  # truncated
    res = search("haxby", dataset=registry)
    assert len(res) == 1 and res[0]["status"] == "error"
    assert "registry-sync" in res[0]["message"]
    assert "not valid JSON" in res[0]["message"]


def test_bench_queries_match_a_plain_scan(bench_records):
    """1k generated realistic records: counts agree with an independent scan."""
    records = bench_records
    from datalad_registry_ext.query import SearchView
    view = SearchView(records)
    bids = sum(1 for r in records if any(
        m["extractor_name"] == "bids_dataset" for m in r.get("metadata") or []))
    assert len(view.search('metadata[bids_dataset]:""')) == bids
    github = sum(1 for r in records if "github" in r["url"].lower())
    assert bids and 0 < github < len(records)
    assert len(view.search("url:github")) == github
    assert len(view.search("NOT url:github")) == len(records) - github
