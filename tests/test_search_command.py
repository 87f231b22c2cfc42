"""registry-search as a command: results, ordering, paging, stats, export."""
import json
import subprocess

import pytest
from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext.index import source_index

from .fixtures import BENCH_DIR, make_dataset, make_git_repo


def search(*args, **kw):
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return registry_search(*args, **kw)


def rec(url, **kw):
    base = {"url": url, "processed": True, "metadata": []}
    base.update(kw)
    return json.dumps(base)


@pytest.fixture
def registry(tmp_path):
    """A registry with two own records and five synced ones."""
    reg = tmp_path / "reg"
    repo = make_git_repo(tmp_path / "plain-tools", {"README": "tools"})
    ds = make_dataset(tmp_path / "haxby-study", {"img.dat": "0123456789"})
    registry_submit([str(repo), ds.path], dataset=str(reg),
                    result_renderer="disabled")
    src = tmp_path / "upstream.jsonl"
    lines = [
        rec("https://github.com/a/one", ds_id="11111111-1111-4111-8111-111111111111",
            annexed_files_in_wt_size=300, annexed_files_in_wt_count=3,
            last_update_dt="2024-01-01T00:00:00+00:00",
            branches={"main": {}, "git-annex": {}},
            metadata=[{"extractor_name": "bids_dataset", "extractor_version": "0.1",
                       "extraction_parameter": {}, "dataset_version": "abc",
                       "dataset_describe": "abc",
                       "extracted_metadata": {"Name": "Haxby faces",
                                              "BIDSVersion": "1.6.0"}}]),
        rec("https://github.com/a/two", ds_id="11111111-1111-4111-8111-111111111111",
            annexed_files_in_wt_size=500, annexed_files_in_wt_count=5,
            last_update_dt="2023-01-01T00:00:00+00:00",
            branches={"main": {}, "git-annex": {}}),
        rec("https://gin.g-node.org/b/three", ds_id="22222222-2222-4222-8222-222222222222",
            annexed_files_in_wt_size=None, last_update_dt=None,
            branches={"master": {}}),
        rec("https://github.com/c/annex-only", annexed_files_in_wt_size=7,
            annexed_files_in_wt_count=1, last_update_dt="2025-01-01T00:00:00Z",
            branches={"main": {}, "git-annex": {}}),
        rec("https://example.org/d/git-only", branches={"main": {}},
            last_update_dt="2022-06-01T00:00:00+00:00"),
    ]
    src.write_text("\n".join(lines) + "\n")
    registry_sync(str(src), dataset=str(reg), result_renderer="disabled")
    return reg


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


def test_ties_are_ordered_by_url_and_paging_is_stable(registry):
    everything = urls(search(dataset=registry, order_by="annex_key_count"))
    pages = [urls(search(dataset=registry, order_by="annex_key_count",
                         limit=2, offset=o)) for o in range(0, 8, 2)]
    assert sum(pages, []) == everything
    nulls = [u for u in everything]  # all annex_key_count are null here
    assert nulls == sorted(nulls)


def test_queries_find_own_and_synced_records(registry, tmp_path):
    assert set(urls(search("haxby", dataset=registry))) == {
        "https://github.com/a/one", str(tmp_path / "haxby-study")}
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
    registry_sync(str(out), dataset=str(registry), result_renderer="disabled")
    exported = {r["url"]: r for r in source_index(registry, str(out)).records()}
    originals = {r["url"]: r for r in search("url:github", dataset=registry,
                                             metadata="content")
                 if r["source"] != str(out)}
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


def test_corrupt_source_index_says_how_to_recover(registry, tmp_path):
    index = source_index(registry, str(tmp_path / "upstream.jsonl"))
    index.path.write_text(index.path.read_text()[:200])  # truncated
    res = search("haxby", dataset=registry)
    assert len(res) == 1 and res[0]["status"] == "error"
    assert "registry-sync" in res[0]["message"]
    assert "not valid JSON" in res[0]["message"]


def test_bench_queries_match_a_plain_scan():
    """The 1k bench file: counts agree with an independent scan."""
    import gzip
    records = [json.loads(line) for line in
               gzip.open(BENCH_DIR / "registry-1k.jsonl.gz", "rt")]
    from datalad_registry_ext.query import SearchView
    view = SearchView(records)
    bids = sum(1 for r in records if any(
        m["extractor_name"] == "bids_dataset" for m in r.get("metadata") or []))
    assert len(view.search('metadata[bids_dataset]:""')) == bids
    github = sum(1 for r in records if "github" in r["url"].lower())
    assert len(view.search("url:github")) == github
    assert len(view.search("NOT url:github")) == len(records) - github
