"""Hostile input: no crash, no stall, no poisoned registry.

One regression test per case of the issue, each building its hostile input
itself: real datasets and git repositories, real JSON Lines files, real
``datalad`` processes wherever a crash or an exit code matters (a regression
that kills the interpreter must not kill pytest). Then a seeded fuzz test of
the metadata loader and of the whole JSON Lines import -> search -> export
path.

Every subprocess gets a copy of ``os.environ``: the autouse fixture (or the
module fixtures' user dirs, set with ``monkeypatch``) put the isolated XDG
directories there.
"""
from __future__ import annotations

import gzip
import json
import os
import random
import re
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from datalad.api import (
    registry_search,
    registry_submit,
    registry_sync,
)

from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    parse_json,
    parse_yaml,
)
from datalad_registry_ext.index import local_index, source_index
from datalad_registry_ext.query import REGEX_TIMEOUT, KNOWN_FIELDS
from datalad_registry_ext.query.parser import MAX_QUERY_LENGTH
from datalad_registry_ext.records import FIELDS, ORDER_KEYS

from .fixtures import (
    ALIAS_BOMB,
    DATASET_DESCRIPTION,
    call,
    make_dataset,
    make_git_repo,
    run,
    set_user_dirs,
)


# -- helpers ------------------------------------------------------------------

def cli(*args, json_format: bool = True, env=None, timeout: float = 300
        ) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``datalad [-f json] ARGS`` in a process of its own.

    Returns the finished process (text output) and the JSON results.
    """
    cmd = ["datalad", *(["-f", "json"] if json_format else []),
           *map(str, args)]
    proc = subprocess.run(cmd, env=dict(os.environ if env is None else env),
                          capture_output=True, text=True, timeout=timeout)
    results = []
    if json_format:
        for line in jsonl_lines(proc.stdout):
            if line.startswith("{"):
                results.append(json.loads(line))
    return proc, results


def jsonl_lines(text: str) -> list[str]:
    """The lines of JSON Lines text: split at "\\n" only (str.splitlines
    would also split at U+2028, \\x1c, ... inside strings)."""
    return [x for x in text.split("\n") if x.strip()]


def assert_no_crash(proc: subprocess.CompletedProcess) -> None:
    """Ended on its own (no signal), without a traceback."""
    assert proc.returncode >= 0, \
        f"killed by signal {-proc.returncode}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]


def hits(results) -> list[dict]:
    return [r for r in results
            if r.get("action") == "registry_search" and r["status"] == "ok"]


def hit_urls(results) -> list[str]:
    return sorted(r["url"] for r in hits(results))


def failures(results) -> list[dict]:
    return [r for r in results if r["status"] in ("error", "impossible")]


def search(registry, query=None, **kw):
    return call(registry_search, query, dataset=str(registry), **kw)


def sync(registry, source=None, **kw):
    return call(registry_sync, None if source is None else str(source),
                dataset=str(registry), **kw)


def submit(registry, *items, **kw):
    kw.setdefault("extract", False)
    return call(registry_submit, [str(i) for i in items],
                dataset=str(registry), **kw)


def line(url, **fields) -> str:
    return json.dumps({"url": url, "processed": True, "metadata": [],
                       **fields})


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    return path


def head_of(repo) -> str:
    return run("git", "rev-parse", "HEAD", cwd=repo).strip()


# -- module registries, built once --------------------------------------------

#: records of the generated registry (case 18 needs "a few thousand")
BENCH_RECORDS = 3000


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A registry holding BENCH_RECORDS generated records (read-only)."""
    from benchmarks.generate import write_jsonl
    root = tmp_path_factory.mktemp("hostile-bench")
    reg = root / "reg"
    src = root / "registry-3k.jsonl.gz"
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, root)
        assert write_jsonl(src, BENCH_RECORDS) == BENCH_RECORDS
        res = sync(reg, src)
        assert res[-1]["status"] == "ok" and \
            res[-1]["imported"] == BENCH_RECORDS, res[-3:]
    return {"root": root, "registry": reg}


@pytest.fixture
def bench_registry(bench, monkeypatch):
    """The generated registry, with its user dirs for this test."""
    set_user_dirs(monkeypatch, bench["root"])
    return bench["registry"]


# == 1. a YAML metadata file nested 30,000 deep ===============================

#: ``a: [[[ ... x ... ]]]``, 30,000 levels, ~120 KB
DEEP_YAML = "a: " + "[ " * 30000 + "x" + " ]" * 30000 + "\n"
DEEP_YAML_FILES = ("datacite.yml", "dandiset.yaml", ".studyminimeta.yaml")
DEEP_YAML_EXTRACTORS = ("datacite_gin", "dandi", "metalad_studyminimeta")


def _extraction(results) -> dict[str, dict]:
    return {r["extractor"]: r for r in results
            if r.get("action") == "registry_extract" and r.get("extractor")}


def test_deep_yaml_metadata_does_not_crash(tmp_path):
    assert 90_000 < len(DEEP_YAML) < 130_000
    files = {name: DEEP_YAML for name in DEEP_YAML_FILES}
    files["dataset_description.json"] = json.dumps(DATASET_DESCRIPTION)
    ds = make_dataset(tmp_path / "deep-yaml", files, to_git=True)
    url = os.path.abspath(ds.path)
    reg = tmp_path / "reg"

    proc, res = cli("registry-submit", "-d", reg, url)
    assert_no_crash(proc)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert res[0]["action"] == "registry_submit" and res[0]["status"] == "ok"
    extracted = _extraction(res)
    for name in DEEP_YAML_EXTRACTORS:
        assert extracted[name]["status"] == "error", extracted[name]
        assert "nested too deeply (limit 100)" in extracted[name]["message"]
    # the BIDS metadata of the same dataset is extracted all the same
    bids = extracted["bids_dataset"]
    assert bids["status"] == "ok", bids

    # the failure is recorded on the record, where a search finds it
    proc, res = cli("registry-search", "-d", reg, 'extraction_failures:""')
    assert_no_crash(proc)
    assert proc.returncode == 0
    (hit,) = hits(res)
    assert hit["url"] == url
    recorded = hit["extraction_failures"]
    for name in DEEP_YAML_EXTRACTORS:
        assert "nested too deeply (limit 100)" in recorded[name]["message"]
    proc, res = cli("registry-search", "-d", reg, "--metadata", "content",
                    f'metadata[bids_dataset]:"{DATASET_DESCRIPTION["Name"]}"')
    assert_no_crash(proc)
    (hit,) = hits(res)
    (bids,) = [m for m in hit["metadata"]
               if m["extractor_name"] == "bids_dataset"]
    assert bids["extracted_metadata"]["Name"] == DATASET_DESCRIPTION["Name"]

    # extracting again crashes no more than the first time did
    proc, res = cli("registry-extract", "--force", "-d", reg, url)
    assert_no_crash(proc)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    extracted = _extraction(res)
    for name in DEEP_YAML_EXTRACTORS:
        assert extracted[name]["status"] == "error"
        assert "nested too deeply (limit 100)" in extracted[name]["message"]
    assert extracted["bids_dataset"]["status"] == "ok"


# == 2. dataset_description.json nested 500 deep ==============================

def test_deep_json_metadata_file_is_refused(tmp_path):
    deep = "[" * 500 + "]" * 500
    text = ('{"Name": "deep json", "BIDSVersion": "1.6.0", "Deep": '
            + deep + "}")
    assert 900 < len(text) < 1200
    with pytest.raises(MetadataFileError, match="nested too deeply"):
        parse_json(text, "dataset_description.json")

    ds = make_dataset(tmp_path / "deep-json",
                      {"dataset_description.json": text}, to_git=True)
    reg = tmp_path / "reg"
    res = submit(reg, ds.path, extract=True)
    assert res[0]["status"] == "ok", res[0]
    bids = _extraction(res)["bids_dataset"]
    assert bids["status"] == "error"
    assert "dataset_description.json is nested too deeply (limit 100)" \
        in bids["message"]

    url = os.path.abspath(ds.path)
    assert hit_urls(search(reg)) == [url]
    res = sync(reg)
    assert [r["status"] for r in res] == ["ok"], res
    assert res[0]["records"] == 1
    assert hit_urls(search(reg)) == [url]
    assert hit_urls(search(reg, "deep")) == [url]
    res = search(reg, stats=True)
    assert not failures(res), failures(res)
    (stats,) = [r for r in res if r["action"] == "registry_search_stats"]
    assert stats["collection_stats"]["summary"]["ds_count"] == 1
    out = tmp_path / "export.jsonl"
    res = search(reg, export=str(out))
    assert [r["status"] for r in res] == ["ok"], res
    (exported,) = [json.loads(x) for x in jsonl_lines(out.read_text())]
    assert exported["url"] == url
    # and everything again from a fresh process
    proc, res = cli("registry-search", "-d", reg, "--stats")
    assert_no_crash(proc)
    assert proc.returncode == 0 and hit_urls(res) == [url]


# == 3. JSON Lines records nested 600 deep ====================================

def _deep_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deep_jsonl_lines_are_skipped_and_failed_syncs_change_nothing(
        tmp_path):
    reg = tmp_path / "reg"
    deep = _deep_list(600)
    src = write_lines(tmp_path / "deep.jsonl", [
        line("https://good.example.org/1"),
        '{"url": "https://deep.example.org/metadata", "metadata": '
        '[{"extractor_name": "bids_dataset", "extracted_metadata": '
        + deep + "}]}",
        line("https://good.example.org/2"),
        '{"url": "https://deep.example.org/branches", "branches": '
        '{"main": ' + deep + "}}",
        line("https://good.example.org/3"),
    ])
    res = sync(reg, src)
    errors = [r for r in res if r["status"] == "error"]
    assert [r["line"] for r in errors] == [2, 4], res
    for r in errors:
        assert f"line {r['line']}" in r["message"]
        assert "nested too deeply" in r["message"]
    assert res[-1]["status"] == "ok"
    assert (res[-1]["imported"], res[-1]["skipped"]) == (3, 2)
    good = [f"https://good.example.org/{i}" for i in (1, 2, 3)]
    assert hit_urls(search(reg)) == good
    assert hit_urls(search(reg, "url:good.example.org")) == good
    assert hits(search(reg, "url:deep.example.org")) == []

    # a sync that fails leaves the previous state of the source intact
    index = source_index(reg, str(src))
    before = index.path.read_bytes()
    data = gzip.compress("".join(
        line(f"https://other.example.org/{i}") + "\n"
        for i in range(2000)).encode())
    src.write_bytes(data[: len(data) // 2])   # the same path, truncated gzip
    res = sync(reg, src)
    assert [r["status"] for r in res] == ["error"], res
    assert "truncated" in res[0]["message"]
    assert index.path.read_bytes() == before
    assert hit_urls(search(reg)) == good
    assert hits(search(reg, "url:other.example.org")) == []
    src.unlink()                              # ... or is gone
    res = sync(reg, src)
    assert [r["status"] for r in res] == ["error"], res
    assert index.path.read_bytes() == before
    proc, res = cli("registry-search", "-d", reg, "url:good.example.org")
    assert_no_crash(proc)
    assert proc.returncode == 0 and hit_urls(res) == good


# == 4. a number of ten million digits in a query =============================

def test_huge_number_in_a_query_answers_at_once(bench_registry):
    start = time.monotonic()
    res = search(bench_registry, "git_objects_kb:>1e9999999")
    elapsed = time.monotonic() - start
    assert elapsed < 1.0, elapsed
    assert [r["status"] for r in res] == ["error"], res
    assert "invalid number" in res[0]["message"]
    # the same from a fresh process
    proc, res = cli("registry-search", "-d", bench_registry,
                    "annexed_files_in_wt_size:<=-1e9999999GB", timeout=60)
    assert_no_crash(proc)
    assert proc.returncode == 1
    assert [r["status"] for r in res] == ["error"]
    assert "invalid number" in res[0]["message"]


# == 5. slow regular expressions, and long queries ============================

def test_slow_regexes_share_one_time_budget(tmp_path):
    reg = tmp_path / "reg"
    src = write_lines(tmp_path / "long.jsonl", [
        json.dumps({
            "url": f"https://long.example.org/{i}/" + "a" * 20000,
            "metadata": [{"extractor_name": "bids_dataset",
                          "extracted_metadata": {"Name": "b" * 20000}}]})
        for i in range(4)])
    assert sync(reg, src)[-1]["status"] == "ok"
    # no literal the pattern requires (the engine would pre-filter on it)
    slow = 'a*a*a*a*a*a*a*a*[yz]'
    terms = [f'url:~"{slow}{{{i + 1}}}"' for i in range(25)]

    # each term alone runs out of the budget...
    start = time.monotonic()
    res = search(reg, terms[0])
    alone = time.monotonic() - start
    assert [r["status"] for r in res] == ["error"], res
    assert "regular expression took too long" in res[0]["message"]
    assert alone < REGEX_TIMEOUT * 4, alone

    # ... and 25 of them OR'ed run within one budget, not 25
    query = " OR ".join(terms)
    assert len(query) <= MAX_QUERY_LENGTH
    start = time.monotonic()
    res = search(reg, query)
    elapsed = time.monotonic() - start
    assert [r["status"] for r in res] == ["error"], res
    assert "regular expression took too long" in res[0]["message"]
    assert elapsed < REGEX_TIMEOUT * 4, elapsed   # 25 budgets would be 50 s
    # the registry answers normal queries afterwards
    assert len(hits(search(reg, "url:long.example.org"))) == 4

    # the length of a query is capped
    at_limit = "url:" + "x" * (MAX_QUERY_LENGTH - 4)
    res = search(reg, at_limit)
    assert not failures(res), res
    res = search(reg, at_limit + "x")
    assert [r["status"] for r in res] == ["error"], res
    assert str(MAX_QUERY_LENGTH) in res[0]["message"]
    res = search(reg, " OR ".join(terms * 40))
    assert [r["status"] for r in res] == ["error"]
    assert str(MAX_QUERY_LENGTH) in res[0]["message"]


# == 6. a gzip decompression bomb =============================================

def _gzip_bomb(path: Path, mib: int, one_line: bool) -> Path:
    """``mib`` MiB of repeated bytes, gzipped (about 1 KB per MiB)."""
    chunk = (b"x" * (1024 * 1024) if one_line
             else b" " * (1024 * 1024 - 1) + b"\n")
    co = zlib.compressobj(9, zlib.DEFLATED, 31)   # 31: the gzip format
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(co.compress(chunk))
        f.write(co.flush())
    return path


def _run_measured(cmd, out: Path, err: Path, timeout: float = 120):
    """Run ``cmd``; return (exit status, max RSS in bytes, seconds)."""
    start = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e,
                                env=dict(os.environ))
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                pytest.fail(f"{cmd} did not end within {timeout} s")
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen: reaped
    return proc.returncode, usage.ru_maxrss * 1024, time.monotonic() - start


@pytest.mark.parametrize("one_line", [False, True],
                         ids=["many-lines", "one-line"])
def test_gzip_bomb_is_refused_quickly(tmp_path, one_line):
    bomb = _gzip_bomb(tmp_path / "bomb.jsonl.gz", 80, one_line)
    size = bomb.stat().st_size
    assert 80 * 1024 * 1024 / size > 100        # the ratio the cap is about
    reg = tmp_path / "reg"
    out, err = tmp_path / "out.json", tmp_path / "err.txt"
    rc, max_rss, elapsed = _run_measured(
        ["datalad", "-f", "json", "registry-sync", "-d", str(reg), str(bomb)],
        out, err)
    stderr = err.read_text(errors="replace")
    assert rc == 1, (rc, stderr[-2000:])
    assert "Traceback" not in stderr
    res = [json.loads(x) for x in out.read_text().splitlines()
           if x.startswith("{")]
    assert [r["status"] for r in res] == ["error"], res
    message = res[0]["message"]
    assert "decompression bomb" in message
    assert "datalad.registry.import-max-ratio" in message
    assert "nothing was imported" in message
    assert max_rss < 500 * 1024 * 1024, max_rss
    assert elapsed < 30, elapsed
    # nothing was imported
    assert not source_index(reg, str(bomb)).exists()
    assert hits(search(reg)) == []


# == 7. an integer of 401 digits ==============================================

def test_out_of_range_integers_are_refused(tmp_path):
    reg = tmp_path / "reg"
    sizes = {f"https://sized.example.org/{i}": size for i, size in
             enumerate([0, 10, 2000, 5_000_000, 3 * 10 ** 12, None])}
    lines = [line(url, annexed_files_in_wt_size=size, annex_key_count=i,
                  annexed_files_in_wt_count=i, git_objects_kb=100 * i,
                  ds_id=f"00000000-0000-4000-8000-{i:012d}",
                  last_update_dt=f"2024-01-{i + 1:02d}T00:00:00+00:00")
             for i, (url, size) in enumerate(sizes.items())]
    # written by hand: 10**400 is no JSON a serialiser would refuse
    lines.insert(2, '{"url": "https://huge.example.org/x", "processed": true, '
                    '"annexed_files_in_wt_size": 1' + "0" * 400 + "}")
    lines.insert(4, '{"url": "https://huge.example.org/y", '
                    '"git_objects_kb": -1' + "0" * 400 + "}")
    src = write_lines(tmp_path / "huge.jsonl", lines)
    res = sync(reg, src)
    errors = [r for r in res if r["status"] == "error"]
    assert [r["line"] for r in errors] == [3, 5], res
    assert all("out of range" in r["message"] for r in errors)
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == len(sizes)

    assert hit_urls(search(reg)) == sorted(sizes)
    assert hits(search(reg, "url:huge.example.org")) == []
    res = search(reg, stats=True)
    assert not failures(res), failures(res)
    (stats,) = [r for r in res if r["action"] == "registry_search_stats"]
    assert stats["collection_stats"]["summary"]["ds_count"] == len(sizes)
    with_size = sorted((u for u, s in sizes.items() if s is not None),
                       key=sizes.get)
    for key in ORDER_KEYS:
        for direction in ("asc", "desc"):
            res = search(reg, order_by=key, order_dir=direction)
            assert not failures(res), (key, direction, failures(res))
            assert sorted(r["url"] for r in res) == sorted(sizes)
    res = search(reg, order_by="annexed_files_in_wt_size", order_dir="asc")
    assert [r["url"] for r in res][:len(with_size)] == with_size
    for query, expected in [
            ("annexed_files_in_wt_size:>1kB", 3),
            ("annexed_files_in_wt_size:<=10", 2),
            ("annexed_files_in_wt_size:>=1TB", 1),
            ("annexed_files_in_wt_size:>1e19", 0),
            ("annexed_files_in_wt_size:<-1e20", 0),
            ("git_objects_kb:>=200", 4)]:
        res = search(reg, query)
        assert not failures(res), (query, res)
        assert len(hits(res)) == expected, query
    proc, res = cli("registry-search", "-d", reg, "--stats",
                    "--order-by", "annexed_files_in_wt_size",
                    json_format=False)
    assert_no_crash(proc)
    assert proc.returncode == 0 and "6 matching records" in proc.stdout


# == 8. a record over the per-record cap ======================================

def test_record_over_the_size_cap_is_skipped(tmp_path):
    reg = tmp_path / "reg"
    big = line("https://big.example.org/x",
               metadata=[{"extractor_name": "bids_dataset",
                          "extracted_metadata": {"Name": "y" * 5000}}])
    assert len(big) > 5000
    src = write_lines(tmp_path / "big.jsonl", [
        line("https://small.example.org/1"), big,
        line("https://small.example.org/2")])
    proc, res = cli("-c", "datalad.registry.record-max-bytes=2000",
                    "registry-sync", "-d", reg, src)
    assert_no_crash(proc)
    assert proc.returncode == 1
    errors = [r for r in res if r["status"] == "error"]
    assert [r["line"] for r in errors] == [2], res
    assert "line 2" in errors[0]["message"]
    assert "2000 bytes" in errors[0]["message"]
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == 2
    assert res[-1]["skipped"] == 1
    assert hit_urls(search(reg)) == ["https://small.example.org/1",
                                     "https://small.example.org/2"]


# == 9. a newline in a directory name =========================================

def test_newline_in_a_path_is_impossible_and_changes_nothing(tmp_path):
    reg = tmp_path / "reg"
    good1 = make_git_repo(tmp_path / "good1")
    bad = make_git_repo(tmp_path / "bad\nname", {"README": "newline"})
    res = submit(reg, good1)
    assert [r["status"] for r in res] == ["ok"], res
    before = head_of(reg)
    gitmodules = (reg / ".gitmodules").read_bytes()

    res = submit(reg, bad)
    assert [r["status"] for r in res] == ["impossible"], res
    assert "control character" in res[0]["message"]
    assert head_of(reg) == before
    assert (reg / ".gitmodules").read_bytes() == gitmodules
    run("git", "config", "-f", ".gitmodules", "--list", cwd=reg)  # valid
    assert run("git", "status", "--porcelain", cwd=reg) == ""

    good2 = make_git_repo(tmp_path / "good2")
    res = submit(reg, bad, good2)
    assert sorted(r["status"] for r in res) == ["impossible", "ok"], res
    assert head_of(reg) != before
    proc = subprocess.run(["datalad", "-f", "json", "subdatasets", "-d",
                           str(reg)], capture_output=True, text=True,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    subs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert sorted(s["gitmodule_url"] for s in subs) == sorted(
        [str(good1), str(good2)])
    assert all("\n" not in s["path"] for s in subs)


# == 10. registry paths that clash under a deep path ==========================

def test_clashing_deep_paths_register_with_short_components(tmp_path):
    base = tmp_path
    while len(str(base)) < 310:
        base = base / ("d" * 50)
    outer = make_git_repo(base, {"README": "outer"})            # a parent...
    middle = make_git_repo(base / "x", {"README": "middle"})    # ...it...
    inner = make_git_repo(base / "x" / "y", {"README": "inner"})  # ...a child
    assert len(str(inner)) > 310
    reg = tmp_path / "reg"
    res = submit(reg, middle)
    assert [r["status"] for r in res] == ["ok"], res
    res = submit(reg, inner, outer)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    paths = [r["registry_path"] for r in res]
    assert all("__" in p for p in paths), paths   # flattened
    names = run("git", "ls-tree", "-r", "--name-only", "-z", "HEAD",
                cwd=reg).split("\0")
    components = [c for n in names if n for c in n.split("/")]
    assert components and max(len(c.encode()) for c in components) <= 255
    entries = {r["url"]: r for r in local_index(reg).records()}
    assert set(entries) == {str(outer), str(middle), str(inner)}
    for repo in (outer, middle, inner):
        assert entries[str(repo)]["head"] == head_of(repo)
    assert run("git", "status", "--porcelain", cwd=reg) == ""
    sibling = make_git_repo(base / "z")
    res = submit(reg, sibling)
    assert [r["status"] for r in res] == ["ok"], res
    assert run("git", "status", "--porcelain", cwd=reg) == ""
    assert len(local_index(reg).records()) == 4


# == 11. a space in a path ====================================================

def test_path_with_a_space_registers(tmp_path):
    reg = tmp_path / "reg"
    repo = make_git_repo(tmp_path / "my data")
    res = submit(reg, repo)
    assert [r["status"] for r in res] == ["ok"], res
    assert res[0]["url"] == str(repo)
    assert hit_urls(search(reg)) == [str(repo)]
    out = run("git", "config", "-z", "-f", ".gitmodules", "--get-regexp",
              r"\.url$", cwd=reg)
    (entry,) = [e for e in out.split("\0") if e]
    assert entry.split("\n", 1)[1] == str(repo)
    assert run("git", "status", "--porcelain", cwd=reg) == ""


# == 12. twin and twin.git ====================================================

def test_twin_and_twin_git_are_two_repositories(tmp_path):
    reg = tmp_path / "reg"
    twin = make_git_repo(tmp_path / "twin", {"README": "one"})
    twin_git = make_git_repo(tmp_path / "twin.git", {"README": "two"})
    assert head_of(twin) != head_of(twin_git)
    res = submit(reg, twin, twin_git)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    assert len({r["registry_path"] for r in res}) == 2
    records = {r["url"]: r for r in local_index(reg).records()}
    assert records[str(twin)]["head"] == head_of(twin)
    assert records[str(twin_git)]["head"] == head_of(twin_git)
    links = {}
    for item in run("git", "ls-tree", "-r", "-z", "HEAD", cwd=reg).split("\0"):
        if item.startswith("160000 "):
            meta, _, path = item.partition("\t")
            links[path] = meta.split()[2]
    assert sorted(links.values()) == sorted([head_of(twin), head_of(twin_git)])


# == 13. an invalid IPv6 URL next to a good repository ========================

def test_invalid_url_is_impossible_and_the_rest_registers(tmp_path):
    reg = tmp_path / "reg"
    bad = "http://[::1/x"
    good = make_git_repo(tmp_path / "good")
    res = submit(reg, bad, good)
    by_status = {r["status"]: r for r in res}
    assert sorted(by_status) == ["impossible", "ok"], res
    assert bad in by_status["impossible"]["message"]
    assert by_status["ok"]["url"] == str(good)

    other = make_git_repo(tmp_path / "other")
    listing = write_lines(tmp_path / "list.txt", [bad, str(other)])
    res = call(registry_submit, dataset=str(reg), from_file=str(listing),
               extract=False)
    by_status = {r["status"]: r for r in res}
    assert sorted(by_status) == ["impossible", "ok"], res
    assert bad in by_status["impossible"]["message"]
    assert by_status["ok"]["url"] == str(other)
    assert hit_urls(search(reg)) == sorted([str(good), str(other)])


# == 14. a damaged index ======================================================

def _index_file(registry) -> Path:
    """The registry's own index file, found under the XDG cache dir."""
    cache = Path(os.environ["XDG_CACHE_HOME"])
    found = [p for p in cache.rglob("local.json")
             if p.parent.parent.name == "index"]
    assert len(found) == 1, found
    assert found[0] == local_index(registry).path
    return found[0]


def _damage(kind: str, path: Path) -> None:
    meta = json.loads(path.read_text())["meta"]
    if kind == "non-utf8":
        path.write_bytes(b'{"records": {"1": {"url": "\xff\xfe\x80"}}}\xc0')
    elif kind == "record-not-an-object":
        path.write_text(json.dumps({"records": {"1": 5}, "meta": meta}))
    elif kind == "record-without-url":
        path.write_text(json.dumps(
            {"records": {"1": {"name": "no url here"}}, "meta": meta}))
    else:  # pragma: no cover
        raise ValueError(kind)


@pytest.mark.parametrize("kind", ["non-utf8", "record-not-an-object",
                                  "record-without-url"])
def test_damaged_own_index_is_rebuilt(tmp_path, kind):
    reg = tmp_path / "reg"
    repo = make_git_repo(tmp_path / "repo")
    assert [r["status"] for r in submit(reg, repo)] == ["ok"]
    path = _index_file(reg)

    def check_rebuilt(proc):
        assert_no_crash(proc)
        assert proc.returncode == 0, proc.stderr[-2000:]
        warnings = [x for x in proc.stderr.splitlines() if "WARNING" in x]
        assert any(str(path) in x for x in warnings), proc.stderr[-2000:]

    _damage(kind, path)
    proc, res = cli("registry-search", "-d", reg)
    check_rebuilt(proc)
    assert hit_urls(res) == [str(repo)]

    _damage(kind, path)
    other = make_git_repo(tmp_path / "other")
    proc, res = cli("registry-submit", "--no-extract", "-d", reg, other)
    check_rebuilt(proc)
    assert [r["status"] for r in res] == ["ok"], res

    _damage(kind, path)   # an explicit rebuild: no warning needed
    proc, res = cli("registry-sync", "-d", reg)
    assert_no_crash(proc)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["status"] for r in res] == ["ok"] and res[0]["records"] == 2
    assert sorted(r["url"] for r in local_index(reg).records()) == sorted(
        [str(repo), str(other)])


def test_damaged_source_index_and_search_databases(tmp_path):
    reg = tmp_path / "reg"
    repo = make_git_repo(tmp_path / "repo")
    assert [r["status"] for r in submit(reg, repo)] == ["ok"]
    src = write_lines(tmp_path / "src.jsonl",
                      [line(f"https://synced.example.org/{i}")
                       for i in range(3)])
    assert sync(reg, src)[-1]["status"] == "ok"
    everything = sorted([str(repo)] + [f"https://synced.example.org/{i}"
                                       for i in range(3)])
    own, synced = local_index(reg), source_index(reg, str(src))

    proc, res = cli("registry-search", "-d", reg)   # builds the databases
    assert proc.returncode == 0 and hit_urls(res) == everything

    # garbage search databases are rebuilt transparently
    for index in (own, synced):
        assert index.engine_path.exists()
        index.engine_path.write_bytes(os.urandom(3000) + b"\0" * 1096)
    proc, res = cli("registry-search", "-d", reg)
    assert_no_crash(proc)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert hit_urls(res) == everything
    assert hit_urls(search(reg)) == everything

    # a synced source's index of the wrong shape: an error naming the file
    # and the command that repairs it
    meta = json.loads(synced.path.read_text())["meta"]
    for damaged in ({"records": {"1": 5}, "meta": meta},
                    {"records": {"1": {"name": "no url"}}, "meta": meta}):
        synced.path.write_text(json.dumps(damaged))
        proc, res = cli("registry-search", "-d", reg)
        assert_no_crash(proc)
        assert proc.returncode == 1
        (err,) = failures(res)
        assert str(synced.path) in err["message"]
        assert "registry-sync" in err["message"]
    # ... which does repair it
    assert sync(reg, src)[-1]["status"] == "ok"
    assert hit_urls(search(reg)) == everything


# == 15. NaN and Infinity in metadata =========================================

def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_export_is_strict_json_despite_nan_in_metadata(tmp_path):
    reg = tmp_path / "reg"
    ds = make_dataset(tmp_path / "nan-ds", {
        "dataset_description.json":
            '{"Name": "NaN study", "BIDSVersion": "1.6.0", '
            '"Authors": ["Jane Doe"], "Score": NaN, "Max": Infinity, '
            '"Min": -Infinity}'}, to_git=True)
    res = submit(reg, ds.path, extract=True)
    assert res[0]["status"] == "ok"
    assert _extraction(res)["bids_dataset"]["status"] == "ok"
    src = write_lines(tmp_path / "nan.jsonl", [
        '{"url": "https://nan.example.org/x", "processed": true, '
        '"extra": NaN, "metadata": [{"extractor_name": "bids_dataset", '
        '"extracted_metadata": {"Name": "NaN record", "Score": NaN, '
        '"Max": Infinity, "Min": -Infinity, "List": [NaN, 1.5]}}]}'])
    assert sync(reg, src)[-1]["status"] == "ok"

    for name in ("export.jsonl", "export.jsonl.gz"):
        out = tmp_path / name
        proc, res = cli("registry-search", "-d", reg, "--export", out)
        assert_no_crash(proc)
        assert proc.returncode == 0, proc.stderr[-2000:]
        text = (gzip.decompress(out.read_bytes()).decode() if name.endswith(
            ".gz") else out.read_text())
        records = [_strict(x) for x in jsonl_lines(text)]
        assert len(records) == 2
        names = set()
        for rec in records:
            for m in rec["metadata"]:
                if m["extractor_name"] == "bids_dataset":
                    names.add(m["extracted_metadata"]["Name"])
        assert names == {"NaN study", "NaN record"}
    res = sync(reg, tmp_path / "export.jsonl")
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == 2, res


# == 16. credentials never shown ==============================================

def test_secrets_are_never_shown(tmp_path):
    reg = tmp_path / "reg"
    listing = write_lines(tmp_path / "list.txt",
                          ["https://user:SECRET@host/x y"])
    leaks = []
    for args in (["user:SECRET@host:repo"], ["--from", str(listing)]):
        for json_format in (False, True):
            proc, res = cli("registry-submit", "--no-extract", "-d", reg,
                            *args, json_format=json_format, timeout=120)
            assert_no_crash(proc)
            assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
            if json_format:
                assert res and all(r["status"] in ("error", "impossible")
                                   for r in res), res
            else:
                assert "impossible" in proc.stdout or "error" in proc.stdout
            for name, text in (("stdout", proc.stdout),
                               ("stderr", proc.stderr)):
                if "SECRET" in text:
                    leaks.append(f"{' '.join(args)} "
                                 f"({'-f json' if json_format else 'default'}"
                                 f" renderer), {name}: {text.strip()}")
    assert not leaks, "\n".join(leaks)


# == 17. the same URL on two lines ============================================

def test_repeated_url_reports_one_problem_and_keeps_the_last(tmp_path):
    reg = tmp_path / "reg"
    lines = [line(f"https://distinct.example.org/{i}") for i in range(1, 18)]
    lines += [line("https://dup.example.org/x", annex_key_count=18),
              line("https://dup.example.org/x", annex_key_count=19)]
    src = write_lines(tmp_path / "dup.jsonl", lines)
    res = sync(reg, src)
    problems = [r for r in res if r["status"] != "ok"]
    assert len(problems) == 1, res
    assert problems[0]["line"] == 18
    assert "line 19" in problems[0]["message"]
    assert "replaces" in problems[0]["message"]
    assert res[-1]["status"] == "ok"
    assert res[-1]["skipped"] == 1 and res[-1]["imported"] == 18
    assert "1 lines skipped" in res[-1]["message"] or \
        "1 line skipped" in res[-1]["message"]
    (stored,) = [r for r in source_index(reg, str(src)).records()
                 if r["url"] == "https://dup.example.org/x"]
    assert stored["annex_key_count"] == 19


# == 18. registry-search | head -1 ============================================

@pytest.mark.parametrize("json_format", [False, True], ids=["table", "json"])
def test_search_into_a_closed_pipe_ends_quietly(bench_registry, tmp_path,
                                                json_format):
    err = tmp_path / "stderr.txt"
    fmt = "-f json " if json_format else ""
    script = (f'set +o pipefail; datalad {fmt}registry-search -d "$1" '
              '2>"$2" | head -1; echo "status=${PIPESTATUS[0]}" >&2')
    proc = subprocess.run(["bash", "-c", script, "bash", str(bench_registry),
                           str(err)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    status = int(re.search(r"status=(\d+)", proc.stderr)[1])
    stderr = err.read_text(errors="replace")
    assert status in (0, 141), (status, stderr[-2000:])
    assert "Broken pipe" not in stderr, stderr[-2000:]
    assert "[ERROR]" not in stderr, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]


# == 19. a stale temporary file ===============================================

def test_stale_temporary_files_are_removed_by_the_next_sync(tmp_path):
    reg = tmp_path / "reg"
    src = write_lines(tmp_path / "src.jsonl",
                      [line("https://t.example.org/1")])
    assert sync(reg, src)[-1]["status"] == "ok"
    index = source_index(reg, str(src))
    stale = [index.path.with_name(index.path.name + ".k1ll3d.tmp"),
             index.engine_path.with_name(index.engine_path.name
                                         + ".k1ll3d.tmp")]
    past = time.time() - 3600
    for tmp in stale:
        tmp.write_bytes(b'{"records": {"1": {"url": "half-writ')
        os.utime(tmp, (past, past))
    res = sync(reg, src)
    assert res[-1]["status"] == "ok", res
    assert [p for p in stale if p.exists()] == []
    assert hit_urls(search(reg)) == ["https://t.example.org/1"]


# == fuzz =====================================================================

FUZZ_SEED = 20240521

_ODD_STRINGS = [
    "", " ", "\x00", "a\x00b", "\x1b[31mred\x1b[0m", "\u202eevil", "\ud800",
    "x\udfffy", "\ufeffbom", "\U0001d518nicode", "'", '"', "\\", "%s%n%x",
    "NaN", "Infinity", "null", "true", "\n\r\t\v\f", "AND", "OR", "NOT", "(",
    ")", ".*", "[", "]", "{", "}", ":", "=~", "metadata[x]", "\x7f",
    "\u2028\u2029", "日本語", "Ünïcødé", "2024-13-45", "9999-99-99",
    "0000-00-00T25:61:61+99:99", "-1", "1e999", "0x1F", "file:///etc/passwd",
    "https://user:pw@host/x", "../../etc", "a" * 3000,
]
_ODD_NUMBERS = [
    0, -1, 1, 2 ** 31, 2 ** 63 - 1, -(2 ** 63), 2 ** 63, -(2 ** 63) - 1,
    10 ** 400, -(10 ** 400), 1.5, -0.0, 1e308, -1e308, 5e-324,
    float("nan"), float("inf"), float("-inf"), True, False,
]
#: number literals json.dumps cannot write (spliced into the text)
_ODD_LITERALS = ["1" + "0" * 5000, "-" + "9" * 4400, "1e99999", "-1e-99999",
                 "1.0e+400", "123456789012345678901234567890.5"]
_BAD_BYTES = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80",
              b"\xf8\x88\x80\x80\x80", b"\xe2\x82"]


class _Doc:
    """A JSON text built from Python values, with markers for what
    ``json.dumps`` cannot write: deep nesting, huge number literals and
    invalid UTF-8."""

    def __init__(self, rng: random.Random, max_depth: int):
        self.rng = rng
        self.max_depth = max_depth
        self.splices: dict[str, bytes] = {}

    def _marker(self, data: bytes) -> str:
        key = f"@@{len(self.splices)}@@"
        self.splices[key] = data
        return key

    def deep(self) -> str:
        depth = self.rng.choice([99, 100, 101, 150, 600, 2000,
                                 self.max_depth])
        if self.rng.random() < 0.5:
            text = "[" * depth + "1" + "]" * depth
        else:
            text = '{"k":' * depth + "1" + "}" * depth
        return self._marker(text.encode())

    def value(self, depth: int = 0):
        rng = self.rng
        r = rng.random()
        if depth >= 4 or r < 0.40:
            pick = rng.random()
            if pick < 0.45:
                return rng.choice(_ODD_STRINGS)
            if pick < 0.80:
                return rng.choice(_ODD_NUMBERS)
            if pick < 0.88:
                return self._marker(rng.choice(_ODD_LITERALS).encode())
            if pick < 0.94:
                return "bad" + self._marker(rng.choice(_BAD_BYTES))
            return None
        if r < 0.60:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]
        if r < 0.80:
            return {self.key(): self.value(depth + 1)
                    for _ in range(rng.randint(0, 4))}
        if r < 0.92:
            return self.deep()
        # wide
        return [rng.choice(_ODD_NUMBERS[:5] + _ODD_STRINGS[:5])
                for _ in range(rng.randint(100, 3000))]

    def key(self) -> str:
        return self.rng.choice(_ODD_STRINGS[:40] + ["Name", "@graph", "k",
                                                    "url", "extractor_name"])

    def dumps(self, obj) -> bytes:
        """JSON text (NaN/Infinity as Python writes them, lone surrogates as
        escapes), markers replaced."""
        text = json.dumps(obj, ensure_ascii=self.rng.random() < 0.5)
        data = text.encode("utf-8", "surrogatepass")
        for key, splice in self.splices.items():
            data = data.replace(f'"{key}"'.encode(), splice)
            data = data.replace(key.encode(), splice)
        return data


def _hostile_documents(rng: random.Random, n: int) -> list[bytes]:
    """Metadata documents as bytes (JSON-ish texts)."""
    docs = []
    for _ in range(n):
        d = _Doc(rng, max_depth=3000)
        base = dict(DATASET_DESCRIPTION)
        for _ in range(rng.randint(1, 5)):
            base[d.key()] = d.value()
        obj = base if rng.random() < 0.8 else d.value()
        docs.append(d.dumps(obj))
    return docs


_YAML_TEMPLATES = [
    "a: " + "[" * 3000 + "]" * 3000,
    "a: " + "{b: " * 2000 + "1" + "}" * 2000,
    "".join("  " * i + f"k{i}:\n" for i in range(300)) + "  " * 300 + "v\n",
    "".join("  " * i + "-\n" for i in range(300)) + "  " * 300 + "x\n",
    ALIAS_BOMB,
    "a: &a [*a]\n",
    "a: *nowhere\n",
    "a: !!python/object/apply:os.system ['echo pwned']\n",
    "a: !!binary 'AAAA'\nb: !!binary '!!'\n",
    "a: !!set {x, y}\n? [1, 2]\n: v\n",
    "? !!binary 'AAAA'\n: v\n? 2024-01-01\n: date key\n? null\n: n\n",
    "a: .nan\nb: .inf\nc: -.inf\nd: 1e99999\n",
    "a: " + "1" * 5000 + "\n",
    "a: 0x" + "f" * 5000 + "\n",
    "a: 0b" + "1" * 20000 + "\n",
    "a: 1" + ":00" * 3000 + "\n",
    "a: 2024-13-45\n",
    "a: !!timestamp 2001-02-30\n",
    "a: !!float 'x'\n",
    "a: !!int 'x'\n",
    'a: "\\ud800"\nb: "\\0\\x01\\e"\n',
    "a: \x00\n",
    "a: b\n---\nc: d\n",
    "\ufeffa: b\n",
    "\t- tab\n",
    "a: [1, 2\n",
    "%YAML 9.9\n---\na: 1\n",
    "a: !<tag:yaml.org,2002:python/name:os.system> x\n",
    "<<: {a: 1}\nb: 2\n",
    "a: &x 1\nb: *x\n" * 50,
    "[" + ", ".join(["x"] * 20000) + "]\n",
]


def test_fuzz_metadata_loader():
    """Only MetadataFileError may leave parse_json / parse_yaml."""
    rng = random.Random(FUZZ_SEED)
    texts = []
    for data in _hostile_documents(rng, 400):
        # what read_text() can hand over: UTF-8 (invalid bytes make it
        # refuse the file; here they become U+FFFD)
        texts.append(data.decode("utf-8", "replace"))
    texts += _YAML_TEMPLATES
    texts += [t.replace(":", ": !!int", 1) for t in _YAML_TEMPLATES[:5]]
    escaped, kinds = [], set()
    for text in texts:
        for parse, name in ((parse_json, "dataset_description.json"),
                            (parse_yaml, "datacite.yml")):
            try:
                parse(text, name)
            except MetadataFileError as e:
                assert name in str(e)
            except BaseException as e:  # noqa: B036 - what we look for
                kinds.add(type(e).__name__)
                escaped.append(f"{parse.__name__}({text[:60]!r}...): "
                               f"{type(e).__name__}: {str(e)[:120]}")
    assert not escaped, (
        f"{len(escaped)} of {2 * len(texts)} hostile documents raised "
        f"something other than MetadataFileError "
        f"({', '.join(sorted(kinds))}), e.g.:\n"
        + "\n".join(sorted(set(escaped))[:25]))


def _normal_records() -> list[dict]:
    recs = []
    for i in range(20):
        animal = "zebrafish" if i % 2 == 0 else "mouse"
        recs.append({
            "url": f"https://normal.example.org/ds{i:02d}",
            "ds_id": f"6518053c-84fd-4844-93a2-{i:012d}",
            "annex_uuid": f"0b1a3d2e-0000-4000-8000-{i:012d}",
            "head": f"{i:040x}", "head_describe": f"v1.{i}",
            "head_dt": f"2023-06-{i + 1:02d}T00:00:00+00:00",
            "branches": {"main": {"hexsha": f"{i:040x}",
                                  "last_commit_dt": "2024-01-01T00:00:00"}},
            "tags": [{"name": f"v1.{i}", "hexsha": f"{i:040x}"}],
            "annex_key_count": i, "annexed_files_in_wt_count": i,
            "annexed_files_in_wt_size": 1000 * i, "git_objects_kb": 10 * i,
            "last_update_dt": f"2024-01-{i + 1:02d}T00:00:00+00:00",
            "last_chk_dt": "2024-02-01T00:00:00+00:00", "processed": True,
            "subdatasets": [{"path": "sub", "url": "https://normal.example.org"
                             f"/sub{i:02d}", "ds_id": None}],
            "metadata": [{"extractor_name": "bids_dataset",
                          "extractor_version": "1",
                          "extracted_metadata": {
                              "Name": f"{animal} study {i}",
                              "Authors": ["Jane Doe"]}}],
        })
    return recs


_INT_FIELDS = ("annex_key_count", "annexed_files_in_wt_count",
               "annexed_files_in_wt_size", "git_objects_kb")
_STR_FIELDS = ("ds_id", "annex_uuid", "head", "head_describe", "head_dt",
               "last_update_dt", "last_chk_dt")
#: integers a record may hold (64-bit), at the edges
_EDGE_INTS = [0, -1, 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 53 + 1, None]


def _nest(depth: int, inner=1):
    for _ in range(depth):
        inner = [inner]
    return inner


def _valid_value(rng: random.Random, depth: int = 0):
    """Any JSON value the import accepts: odd strings and keys (NUL,
    control characters, lone surrogates), NaN/Infinity, huge numbers,
    nesting up to the limit, wide lists."""
    r = rng.random()
    if depth >= 3 or r < 0.45:
        return rng.choice(_ODD_STRINGS + _ODD_NUMBERS + [None])
    if r < 0.65:
        return [_valid_value(rng, depth + 1)
                for _ in range(rng.randint(0, 4))]
    if r < 0.85:
        return {rng.choice(_ODD_STRINGS[:40] + ["Name", "@graph", "url"]):
                _valid_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if r < 0.93:
        return _nest(rng.choice([10, 50, 95, 97, 98, 99]),
                     rng.choice(_ODD_STRINGS[:20]))
    return [rng.choice(_ODD_NUMBERS[:8] + _ODD_STRINGS[:8])
            for _ in range(rng.randint(100, 2000))]


def _well_formed_record(rng: random.Random, i: int) -> dict:
    """A record of the right shape whose content is hostile."""
    rec = {"url": f"https://hostile.example.net/{i}/"
                  + rng.choice(_ODD_STRINGS[:40])}
    for f in FIELDS + ("id", "x-extra"):
        if f == "url" or rng.random() < 0.4:
            continue
        if f in _INT_FIELDS:
            rec[f] = rng.choice(_EDGE_INTS)
        elif f in _STR_FIELDS:
            rec[f] = rng.choice(_ODD_STRINGS + [None])
        elif f == "metadata":
            rec[f] = [{"extractor_name": rng.choice(
                          ["bids_dataset", "x\x00y", "", "\ud800",
                           "datacite_gin", "metalad_core"]),
                       "extractor_version": _valid_value(rng, 2),
                       "dataset_version": _valid_value(rng, 2),
                       "extraction_time": _valid_value(rng, 2),
                       "extracted_metadata": _valid_value(rng)}
                      for _ in range(rng.randint(0, 3))]
        elif f == "branches":
            rec[f] = {rng.choice(_ODD_STRINGS[:40]): _valid_value(rng, 1)
                      for _ in range(rng.randint(0, 3))}
        elif f in ("tags", "subdatasets"):
            rec[f] = [rng.choice([
                _valid_value(rng, 1),
                {"name": _valid_value(rng, 2), "hexsha": _valid_value(rng, 2),
                 "path": _valid_value(rng, 2), "url": _valid_value(rng, 2),
                 "ds_id": _valid_value(rng, 2)}])
                for _ in range(rng.randint(0, 3))]
        else:   # processed, source, extraction_failures, registry_path, ...
            rec[f] = _valid_value(rng)
    for _ in range(rng.randint(0, 2)):
        rec[rng.choice(_ODD_STRINGS[:40])] = _valid_value(rng)
    rec["url"] = rec["url"] if rng.random() < 0.9 else rng.choice(
        _ODD_STRINGS[1:])
    return rec


def _hostile_line(rng: random.Random, i: int) -> bytes:
    d = _Doc(rng, max_depth=3000)
    r = rng.random()
    if r < 0.08:   # not a record at all
        return rng.choice([
            b"", b"   ", b"null", b"[]", b"1e999", b"NaN", b'"\\ud800"',
            b"{", b'{"url": ', b"\x00\x00", b"\xef\xbb\xbf{}",
            b'{"url": "https://hostile.example.net/raw\x01ctl"}',
            b'{"url": "https://hostile.example.net/raw\tctl"}'])
    if r < 0.6:    # the right shape, hostile content
        data = json.dumps(_well_formed_record(rng, i),
                          ensure_ascii=rng.random() < 0.5
                          ).encode("utf-8", "surrogatepass")
        return data.replace(b"\n", b"\\n")
    # anything goes: odd types in every field, deep nesting, huge number
    # literals, invalid UTF-8
    rec = {"url": f"https://hostile.example.net/{i}/"
                  + rng.choice(_ODD_STRINGS[:40])}
    if rng.random() < 0.1:
        rec["url"] = d.value()
    for f in FIELDS + ("id", "x-extra"):
        if f != "url" and rng.random() < 0.3:
            rec[f] = d.value()
    if rng.random() < 0.3:
        rec[d.key()] = d.value()
    data = d.dumps(rec)
    if rng.random() < 0.1:   # a raw control character or NUL somewhere
        pos = rng.randrange(len(data) + 1)
        data = data[:pos] + rng.choice([b"\x00", b"\x01", b"\x1f", b"\r"]) \
            + data[pos:]
    return data.replace(b"\n", b"\\n")


def _fuzz_file(path: Path, rng: random.Random, n: int = 300) -> Path:
    normal = [json.dumps(r).encode() for r in _normal_records()]
    hostile = [_hostile_line(rng, i) for i in range(n)]
    lines = hostile[:]
    for pos, rec in zip(sorted(rng.sample(range(len(hostile)), len(normal))),
                        normal):          # spread over the file
        lines.insert(pos, rec)
    with open(path, "wb") as f:
        for data in lines:
            f.write(data + b"\n")
    return path


#: (query, how many of the normal records it finds), each ANDed with
#: url:normal.example.org so hostile records cannot change the count
_NORMAL_QUERIES = [
    ("", 20),
    ("zebrafish", 10),
    ('"mouse study"', 10),
    ("NOT zebrafish", 10),
    ("metadata[bids_dataset].Name:zebrafish", 10),
    ("metadata.Authors:doe", 20),
    ("ds_id:=6518053c-84fd-4844-93a2-000000000003", 1),
    ('url:~"normal\\.example\\.org/ds0[0-4]$"', 5),
    ("head_describe:=v1.7", 1),
    ("tags:v1.1", 11),
    ("branches:main", 20),
    ("annexed_files_in_wt_size:>=10kB", 10),
    ("annex_key_count:<5", 5),
    ("git_objects_kb:>=100", 10),
    ("last_update_dt:>=2024-01-11", 10),
    ("head_dt:<2023-06-04", 3),
    ("subds_url:sub03", 1),
    ("(zebrafish OR mouse) AND NOT ds_id:=6518053c-84fd-4844-93a2-"
     "000000000001", 19),
]


def test_fuzz_jsonl_import_search_export(tmp_path):
    rng = random.Random(FUZZ_SEED)
    reg = tmp_path / "reg"
    src = _fuzz_file(tmp_path / "hostile.jsonl", rng)
    gz = tmp_path / "hostile.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))

    # the same records in two files, kept apart by a name (unnamed, the
    # second would be recognised as the same source and replace the first)
    for source, name in ((src, None), (gz, "gz")):
        res = sync(reg, source, name=name)
        assert {r["status"] for r in res} <= {"ok", "error", "impossible"}, res
        assert res[-1]["status"] == "ok", res[-1]
        assert res[-1]["imported"] >= 20
        assert all(isinstance(r.get("line"), int) for r in res[:-1])

    def checked(query, **kw):
        res = search(reg, query, **kw)
        assert {r["status"] for r in res} <= {"ok", "error", "impossible"}
        return res

    # the normal records: found, with the right counts, in both sources
    for query, expected in _NORMAL_QUERIES:
        full = f"url:normal.example.org AND ({query})" if query \
            else "url:normal.example.org"
        res = checked(full)
        assert not failures(res), (full, failures(res))
        assert len(hits(res)) == 2 * expected, full

    # a dozen query shapes over every field
    for f in KNOWN_FIELDS:
        for query in (f'{f}:""', f"{f}:a", f'{f}:="\\u0000"', f"{f}:~a.*b",
                      f"{f}:>1", f"{f}:<=2024", f"NOT {f}:x",
                      f'{f}.k:"\\ud800"', f"{f}:%s%n"):
            checked(query)
    for query in ("a", '"\x00"', "\udcff", "NaN", "Infinity", "日本語",
                  '"\\"', "metadata[\"x\x00y\"]:\"\"", "metadata.@graph:x",
                  "metadata[bids_dataset,datacite_gin].Name.k:1"):
        checked(query)

    res = checked("", stats=True, limit=0)
    assert not failures(res), failures(res)
    for key in ORDER_KEYS:
        for direction in ("asc", "desc"):
            res = checked("", order_by=key, order_dir=direction)
            assert not failures(res), (key, failures(res))
            assert len(hits(checked(
                "url:normal.example.org", order_by=key,
                order_dir=direction))) == 40
    for metadata in ("reference", "content"):
        res = checked("zebrafish", metadata=metadata)
        assert not failures(res), failures(res)

    # export, strict JSON, and import again
    out = tmp_path / "export.jsonl.gz"
    res = checked("", export=str(out))
    assert [r["status"] for r in res] == ["ok"], res
    exported = [_strict(x) for x in
                jsonl_lines(gzip.decompress(out.read_bytes()).decode())]
    assert len(exported) == res[0]["records"]
    res = sync(reg, out, name="export")  # a third source, by its name
    assert {r["status"] for r in res} <= {"ok", "error", "impossible"}, res
    assert res[-1]["status"] == "ok"
    assert res[-1]["imported"] == len({r["url"] for r in exported})
    res = checked("url:normal.example.org AND zebrafish")
    assert len(hits(res)) == 30
    proc, res = cli("registry-search", "-d", reg, "--stats", "--limit", "3")
    assert_no_crash(proc)
    assert proc.returncode == 0, proc.stderr[-2000:]
