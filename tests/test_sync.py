"""registry-sync: JSON Lines import and rebuilding the registry's own records."""
import gzip
import json
import subprocess

from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext.index import all_indexes, local_index, source_index
from datalad_registry_ext.sources import export_jsonl

from .fixtures import make_git_repo, read_jsonl_gz


def sync(*args, **kw):
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return registry_sync(*args, **kw)


def records_of(registry, source):
    return {r["url"]: r for r in source_index(registry, str(source)).records()}


def _line(url, **kw):
    return json.dumps({"url": url, "processed": True, "metadata": [], **kw})


def test_import_replaces_that_source_only(tmp_path):
    registry = tmp_path / "reg"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_text("\n".join([_line("https://x/1"), _line("https://x/2")]) + "\n")
    b.write_bytes(gzip.compress((_line("https://y/1") + "\n").encode()))
    res = sync(str(a), dataset=registry)
    assert res[-1]["status"] == "ok" and res[-1]["added"] == 2
    res = sync(str(b), dataset=registry)
    assert res[-1]["imported"] == 1
    assert set(records_of(registry, a)) == {"https://x/1", "https://x/2"}
    assert all(r["source"] == str(a) for r in records_of(registry, a).values())

    # x/2 is gone from the file and from the index; x/3 is new; b untouched
    a.write_text("\n".join([_line("https://x/1", annex_key_count=5),
                            _line("https://x/3")]) + "\n")
    res = sync(str(a), dataset=registry)
    assert (res[-1]["added"], res[-1]["updated"], res[-1]["removed"]) == (1, 1, 1)
    assert set(records_of(registry, a)) == {"https://x/1", "https://x/3"}
    assert records_of(registry, a)["https://x/1"]["annex_key_count"] == 5
    assert set(records_of(registry, b)) == {"https://y/1"}
    assert len(all_indexes(registry)) == 3


def test_bad_lines_are_reported_and_skipped(tmp_path):
    registry = tmp_path / "reg"
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join([
        _line("https://ok/1"),
        "{not json",
        json.dumps({"no": "url"}),
        _line("https://bad/1", annex_key_count="lots"),
        json.dumps(["a", "list"]),
        _line("https://bad/2", metadata={"not": "a list"}),
        _line("https://user:secret@ok/2"),
    ]) + "\n")
    res = sync(str(src), dataset=registry)
    errors = [r for r in res if r["status"] == "error"]
    assert [r["line"] for r in errors] == [2, 3, 4, 5, 6]
    assert "not valid JSON" in errors[0]["message"]
    assert "no 'url'" in errors[1]["message"]
    assert "'annex_key_count' must be an integer" in errors[2]["message"]
    assert "line 6" in errors[4]["message"] and "'metadata'" in errors[4]["message"]
    assert res[-1]["status"] == "ok" and res[-1]["skipped"] == 5
    assert set(records_of(registry, src)) == {"https://ok/1", "https://ok/2"}


def test_unreadable_or_truncated_source_changes_nothing(tmp_path):
    registry = tmp_path / "reg"
    src = tmp_path / "good.jsonl.gz"
    src.write_bytes(gzip.compress((_line("https://x/1") + "\n").encode()))
    sync(str(src), dataset=registry)
    index = source_index(registry, str(src))
    before = index.path.read_bytes()
    data = gzip.compress(("\n".join(_line(f"https://x/{i}") for i in range(500))
                          + "\n").encode())
    src.write_bytes(data[: len(data) // 2])
    res = sync(str(src), dataset=registry)
    assert [r["status"] for r in res] == ["error"]
    assert "truncated" in res[0]["message"] and "nothing was imported" in res[0]["message"]
    assert index.path.read_bytes() == before
    res = sync(str(tmp_path / "missing.jsonl"), dataset=registry)
    assert res[0]["status"] == "error" and "cannot read" in res[0]["message"]
    # neither a file nor a DataLad-Registry API (http(s) URLs are probed:
    # tests/test_federation.py)
    res = sync("ftp://registry.example.org/api/v2", dataset=registry)
    assert res[0]["status"] == "impossible"


def test_bench_file_imports_and_exports_round_trip(tmp_path, bench_file):
    # 1k generated realistic records (benchmarks/generate.py)
    registry = tmp_path / "reg"
    originals = sorted(read_jsonl_gz(bench_file), key=lambda r: r["url"])
    n = len(originals)
    assert n and len({r["url"] for r in originals}) == n  # distinct URLs
    res = sync(str(bench_file), dataset=registry)
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == n
    imported = sorted(source_index(registry, str(bench_file)).records(),
                      key=lambda r: r["url"])
    assert len(imported) == n
    # every upstream field survives unchanged
    for orig, rec in zip(originals, imported):
        assert {k: rec[k] for k in orig} == orig

    out = tmp_path / "export.jsonl.gz"
    assert export_jsonl(imported, out) == n
    res = sync(str(out), dataset=registry)
    assert res[-1]["imported"] == n and res[-1]["skipped"] == 0  # no bad line
    reimported = sorted(source_index(registry, str(out)).records(),
                        key=lambda r: r["url"])
    strip = lambda r: {k: v for k, v in r.items() if k != "source"}  # noqa: E731
    assert [strip(r) for r in reimported] == [strip(r) for r in imported]


def test_sync_without_source_rebuilds_own_records(tmp_path):
    registry = tmp_path / "reg"
    repo = make_git_repo(tmp_path / "repo")
    registry_submit([str(repo)], dataset=str(registry), extract=False,
                    result_renderer="disabled")
    before = local_index(registry).records()
    local_index(registry).path.write_text("garbage")
    res = sync(dataset=registry)
    assert res[0]["status"] == "ok" and res[0]["records"] == 1
    assert local_index(registry).records() == before
    res = sync(dataset=tmp_path / "no-registry")
    assert res[0]["status"] == "impossible"


def test_cli(tmp_path):
    src = tmp_path / "s.jsonl"
    src.write_text(_line("https://x/1") + "\n{broken\n")
    proc = subprocess.run(["datalad", "registry-sync", "-d", str(tmp_path / "r"),
                           str(src)], capture_output=True, text=True)
    assert proc.returncode == 1  # a line was bad
    assert "line 2" in proc.stdout and "imported 1 record from" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_resync_summary_is_right_after_the_search_database_was_rebuilt(
        tmp_path, bench_file):
    """The summary compares with what the source held, also when its search
    database was rebuilt from the index file meanwhile."""
    registry = tmp_path / "reg"
    first = sync(str(bench_file), dataset=registry)[-1]
    index = source_index(registry, str(bench_file))
    index.engine_path.unlink()
    registry_search("haxby", dataset=registry, result_renderer="disabled")
    assert index.engine_path.exists()  # rebuilt by the search
    again = sync(str(bench_file), dataset=registry)[-1]
    assert again["unchanged"] == first["imported"] > 0
    assert again["added"] == again["updated"] == again["removed"] == 0
