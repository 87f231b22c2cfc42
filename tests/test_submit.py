"""registry-submit: registering real repositories in a real registry."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from datalad.api import Dataset, registry_submit, subdatasets

from datalad_registry_ext import index_sync
from datalad_registry_ext.index import local_index
from datalad_registry_ext.registry import RECORDS_FILE, head_commit, read_entries

from .fixtures import HTTPServer, annex_info, make_dataset, make_git_repo, run


def submit(*urls, **kw):
    """registry-submit's registration results.

    Without metadata extraction unless asked: extraction is tested in
    test_extract_command.py (the command-line runs here still extract).
    """
    kw.setdefault("extract", False)
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return [r for r in registry_submit(list(urls) or None, **kw)
            if r["action"] == "registry_submit"]


@pytest.fixture(scope="session")
def repos(tmp_path_factory):
    """Two DataLad datasets (one with a subdataset) and a plain git repo."""
    root = tmp_path_factory.mktemp("repos")
    ds1 = make_dataset(root / "ds1", {"a.dat": "12345", "d/b.dat": "1234567890",
                                      "code.txt": "x"},
                       subdatasets=["sub"], tag="v1.0")
    ds2 = make_dataset(root / "ds2", {"only.dat": "abc"})
    plain = make_git_repo(root / "plain", {"README": "just git"})
    return {"ds1": Path(ds1.path), "ds2": Path(ds2.path), "plain": plain}


@pytest.fixture
def registry(tmp_path):
    return tmp_path / "registry"


def test_commands_are_registered():
    import datalad.api
    assert hasattr(datalad.api, "registry_submit")
    assert hasattr(Dataset, "registry_submit")


def test_submit_two_datasets_and_a_git_repo(repos, registry):
    res = submit(repos["ds1"], repos["ds2"], repos["plain"], dataset=registry)
    assert [r["status"] for r in res] == ["ok", "ok", "ok"]
    assert all(r["action"] == "registry_submit" and r["change"] == "new"
               for r in res)

    # three uninstalled subdataset entries, listed by DataLad itself
    subs = subdatasets(dataset=str(registry), result_renderer="disabled",
                       return_type="list")
    assert len(subs) == 3
    assert all(s["state"] == "absent" for s in subs)
    by_url = {s["gitmodule_url"]: s for s in subs}
    assert set(by_url) == {str(p) for p in repos.values()}
    ds1 = Dataset(str(repos["ds1"]))
    assert by_url[str(repos["ds1"])]["gitmodule_datalad-id"] == ds1.id
    assert "gitmodule_datalad-id" not in by_url[str(repos["plain"])]
    for p in repos.values():
        head = run("git", "rev-parse", "HEAD", cwd=p).strip()
        assert by_url[str(p)]["gitshasum"] == head

    # one commit for the whole call, naming what was registered
    log = run("git", "log", "--format=%s%n%b", "-1", cwd=registry)
    assert "Register 3 repositories" in log
    for r in res:
        assert r["registry_path"] in log
    assert run("git", "status", "--porcelain", cwd=registry) == ""

    # three index records with correct facts
    records = {r["url"]: r for r in local_index(registry).records()}
    assert set(records) == {str(p) for p in repos.values()}
    rec = records[str(repos["ds1"])]
    info = annex_info(repos["ds1"])
    assert rec["ds_id"] == ds1.id
    assert rec["annexed_files_in_wt_count"] == info["annexed files in working tree"] == 3
    assert rec["annexed_files_in_wt_size"] == int(
        info["size of annexed files in working tree"]) == 16
    assert rec["annex_key_count"] == 3
    assert rec["annex_uuid"] == ds1.repo.uuid
    assert rec["head"] == ds1.repo.get_hexsha()
    assert rec["head_describe"] == run(
        "git", "describe", "--tags", "--always", cwd=repos["ds1"]).strip()
    assert rec["head_dt"] == run("git", "log", "-1", "--format=%aI",
                                 cwd=repos["ds1"]).strip()
    assert rec["tags"] == [{"name": "v1.0", "hexsha": rec["head"]}]
    assert "git-annex" in rec["branches"]
    assert rec["branches"][ds1.repo.get_active_branch()]["hexsha"] == rec["head"]
    assert rec["git_objects_kb"] > 0
    assert rec["processed"] is True and rec["source"] == "local"
    assert rec["last_update_dt"] and rec["last_chk_dt"]
    sub = Dataset(str(repos["ds1"] / "sub"))
    assert rec["subdatasets"] == [{"path": "sub", "url": "./sub", "ds_id": sub.id}]

    plain = records[str(repos["plain"])]
    assert plain["ds_id"] is None
    assert plain["annex_key_count"] is None and plain["annex_uuid"] is None
    assert plain["annexed_files_in_wt_count"] is None
    assert "git-annex" not in plain["branches"]
    # the result carries the facts too
    assert res[0]["record"]["annexed_files_in_wt_size"] == 16


def test_resubmission_refreshes_facts(tmp_path, registry):
    ds = make_dataset(tmp_path / "ds", {"f.dat": "one"})
    first = submit(tmp_path / "ds", dataset=registry)
    assert first[0]["status"] == "ok"
    head0 = head_commit(registry)

    again = submit(str(tmp_path / "ds") + "/", dataset=registry)
    assert again[0]["status"] == "notneeded"
    assert "unchanged" in again[0]["message"]
    assert head_commit(registry) == head0

    (tmp_path / "ds" / "g.dat").write_text("two!")
    ds.save(result_renderer="disabled")
    updated = submit(tmp_path / "ds", dataset=registry)
    assert updated[0]["status"] == "ok"
    assert updated[0]["change"] == "updated"
    assert "HEAD" in updated[0]["message"]
    assert "annexed_files_in_wt_count 1 -> 2" in updated[0]["message"]
    rec = local_index(registry).records()[0]
    assert rec["annexed_files_in_wt_count"] == 2
    assert rec["head"] == ds.repo.get_hexsha()
    entries = read_entries(registry)
    assert len(entries) == 1
    assert next(iter(entries.values()))["head"] == ds.repo.get_hexsha()
    assert run("git", "rev-list", "--count", "HEAD", cwd=registry).strip() == "3"


def test_url_variants_are_one_repository(tmp_path, registry):
    served = tmp_path / "srv"
    served.mkdir()
    make_git_repo(tmp_path / "work", bare_copy=served / "r.git")
    (served / "r").symlink_to("r.git")
    with HTTPServer(served) as srv:
        res = submit(f"{srv.url}/r", f"{srv.url}/r/", f"{srv.url}/r.git",
                     dataset=registry)
        assert [r["status"] for r in res] == ["ok"]
        res = submit(f"{srv.url}/r.git/", dataset=registry)
        assert [r["status"] for r in res] == ["notneeded"]
    assert len(read_entries(registry)) == 1
    assert [r["url"] for r in local_index(registry).records()] == [f"{srv.url}/r"]
    assert next(iter(read_entries(registry))) == "127.0.0.1_{}/r".format(
        srv.url.rsplit(":", 1)[1])


def test_jobs_and_registry_from_config(repos, tmp_path, monkeypatch):
    registry = tmp_path / "cfg-registry"
    monkeypatch.setenv("DATALAD_REGISTRY_DATASET", str(registry))
    from datalad import cfg
    cfg.reload()
    try:
        res = submit(repos["ds1"], repos["ds2"], repos["plain"], jobs=3)
    finally:
        monkeypatch.delenv("DATALAD_REGISTRY_DATASET")
        cfg.reload()
    assert [r["status"] for r in res] == ["ok"] * 3
    assert all(r["registry"] == str(registry) for r in res)
    assert len(read_entries(registry)) == 3


def test_default_registry_location_is_user_data_dir(repos, tmp_path):
    res = submit(repos["plain"])
    expected = tmp_path / "xdg-data" / "datalad-registry-ext" / "registry"
    assert res[0]["registry"] == str(expected)
    assert (expected / ".datalad" / "config").exists()


def test_from_url_list_and_dashboard_file(tmp_path, registry):
    served = tmp_path / "srv"
    (served / "gin").mkdir(parents=True)
    make_git_repo(tmp_path / "w1", bare_copy=served / "gh.git")
    make_git_repo(tmp_path / "w2", {"x": "2"}, bare_copy=served / "gin" / "g")
    make_git_repo(tmp_path / "w3", {"x": "3"}, bare_copy=served / "listed.git")
    with HTTPServer(served) as srv:
        dashboard = {
            "github": [
                {"id": 1, "name": "o/gh", "url": f"{srv.url}/gh", "stars": 0,
                 "dataset": True, "run": False, "container_run": False,
                 "status": "active"},
                {"id": 2, "name": "o/gone", "url": f"{srv.url}/gone",
                 "stars": 0, "dataset": True, "run": False,
                 "container_run": False, "status": "gone"},
            ],
            "osf": [{"url": "https://osf.io/4cdw3/", "id": "4cdw3",
                     "name": "x", "status": "active"}],
            "gin": [{"id": 3, "name": "gin/g", "url": f"{srv.url}/gin/g",
                     "stars": 0, "status": "active"}],
            "hub_datalad_org": [], "atris": [],
        }
        dash = tmp_path / "datalad-repos.json"
        dash.write_text(json.dumps(dashboard))
        res = submit(dataset=registry, from_file=str(dash))
        by_status = {}
        for r in res:
            by_status.setdefault(r["status"], []).append(r)
        assert len(by_status["ok"]) == 2
        assert {r["url"] for r in by_status["ok"]} == {
            f"{srv.url}/gh.git", f"{srv.url}/gin/g"}
        (osf,) = by_status["impossible"]
        assert osf["url"] == "https://osf.io/4cdw3/"
        assert "OSF" in osf["message"] and "not git" in osf["message"]

        listing = tmp_path / "urls.txt"
        listing.write_text(f"# my repos\n\n{srv.url}/listed.git\n")
        res = submit(dataset=registry, from_file=str(listing))
        assert [r["status"] for r in res] == ["ok"]
    assert len(read_entries(registry)) == 3


# -- bad input -----------------------------------------------------------------------

def _state(registry: Path):
    """Everything that must not change when a submission fails."""
    index = local_index(registry)
    return (head_commit(registry),
            index.path.read_bytes() if index.exists() else None)


@pytest.fixture
def populated(repos, registry):
    submit(repos["ds2"], dataset=registry)
    return registry


def _assert_failed_cleanly(res, registry, before, status, *words):
    assert len(res) == 1, res
    assert res[0]["status"] == status, res
    for w in words:
        assert w in res[0]["message"], res[0]["message"]
    assert "Traceback" not in res[0]["message"]
    assert _state(registry) == before


def test_unreachable_url(populated):
    before = _state(populated)
    res = submit("http://127.0.0.1:1/nothing.git", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "error",
                           "cannot register http://127.0.0.1:1/nothing.git")


def test_nonexistent_repository_on_a_server(tmp_path, populated):
    before = _state(populated)
    with HTTPServer(tmp_path) as srv:
        res = submit(f"{srv.url}/missing.git", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "error", "missing.git")


def test_nonexistent_path(tmp_path, populated):
    before = _state(populated)
    res = submit(tmp_path / "nope", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "impossible", "no such path")


def test_path_that_is_not_a_git_repository(tmp_path, populated):
    (tmp_path / "notgit").mkdir()
    (tmp_path / "notgit" / "file").write_text("x")
    before = _state(populated)
    res = submit(tmp_path / "notgit", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "impossible",
                           "is not a git repository")
    (tmp_path / "repo" / "subdir").mkdir(parents=True)
    run("git", "init", "-q", cwd=tmp_path / "repo")
    res = submit(tmp_path / "repo" / "subdir", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "impossible",
                           "a directory inside the repository")


def test_empty_repository(tmp_path, populated):
    run("git", "init", "-q", str(tmp_path / "empty"))
    before = _state(populated)
    res = submit(tmp_path / "empty", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "error", "no commits")


def test_unsupported_scheme(populated):
    before = _state(populated)
    res = submit("ftp://example.org/x", dataset=populated)
    _assert_failed_cleanly(res, populated, before, "impossible",
                           "scheme 'ftp' is not supported")


def test_broken_gitmodules(tmp_path, populated):
    repo = make_git_repo(tmp_path / "broken")
    (repo / ".gitmodules").write_text('[submodule "x"\n\tpath = x\n')
    run("git", "add", ".gitmodules", cwd=repo)
    run("git", "commit", "-q", "-m", "broken", cwd=repo)
    before = _state(populated)
    res = submit(repo, dataset=populated)
    _assert_failed_cleanly(res, populated, before, "error",
                           ".gitmodules is broken")


def test_credentials_are_never_stored(tmp_path, registry):
    served = tmp_path / "srv"
    served.mkdir()
    make_git_repo(tmp_path / "w", bare_copy=served / "private.git")
    secret = "s3cr3tT0ken"
    with HTTPServer(served) as srv:
        host = srv.url.split("://", 1)[1]
        url = f"http://alice:{secret}@{host}/private.git"
        proc = subprocess.run(
            ["datalad", "-l", "debug", "-f", "json", "registry-submit", "-d",
             str(registry), url], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        # a failing one, so the error path is covered as well
        bad = subprocess.run(
            ["datalad", "-l", "debug", "-f", "json", "registry-submit", "-d",
             str(registry), f"http://alice:{secret}@{host}/absent.git"],
            capture_output=True, text=True)
        assert bad.returncode != 0
    # DataLad core echoes its own argv at debug level before any extension
    # code runs; every other line, ours included, must be clean
    core_argv_echo = ("Command line args 1st pass", "Parsing known args")
    logs = [ln for ln in (proc.stderr + bad.stderr).splitlines()
            if not any(m in ln for m in core_argv_echo)]
    assert len(logs) > 20  # debug logging was on
    assert not [ln for ln in logs if secret in ln]
    assert secret not in proc.stdout + bad.stdout
    assert "alice" not in proc.stdout + bad.stdout
    (res,) = [json.loads(line) for line in proc.stdout.splitlines()
              if json.loads(line)["action"] == "registry_submit"]
    assert res["status"] == "ok" and res["url"] == f"http://{host}/private.git"
    # not in the registry's files, history or index, nor the clone cache
    history = run("git", "log", "-p", "--all", cwd=registry)
    assert secret not in history and "alice" not in history
    assert secret not in (registry / ".gitmodules").read_text()
    assert secret not in local_index(registry).path.read_text()
    cache = tmp_path / "xdg-cache"
    for f in cache.rglob("*"):
        if f.is_file() and f.stat().st_size < 10_000_000:
            assert secret.encode() not in f.read_bytes(), f


def test_unreadable_and_malformed_from_files(tmp_path, populated):
    before = _state(populated)
    cases = {
        "a directory": tmp_path,
        "missing": tmp_path / "does-not-exist.txt",
        "binary": tmp_path / "bin.dat",
        "bad json": tmp_path / "bad.json",
        "other json": tmp_path / "other.json",
        "not urls": tmp_path / "prose.txt",
    }
    cases["binary"].write_bytes(b"\xff\xfe\x00garbage")
    cases["bad json"].write_text('{"github": [')
    cases["other json"].write_text('{"hello": "world"}')
    cases["not urls"].write_text("this is a sentence, not a list of URLs\n")
    for name, path in cases.items():
        res = submit(dataset=populated, from_file=str(path))
        assert len(res) == 1, name
        assert res[0]["status"] == "impossible", name
        assert str(path) in res[0]["message"], (name, res[0]["message"])
    assert _state(populated) == before


def test_cli_exits_nonzero_on_failure(tmp_path, repos, registry):
    ok = subprocess.run(["datalad", "registry-submit", "-d", str(registry),
                         str(repos["plain"])], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "registered" in ok.stdout and str(repos["plain"]) in ok.stdout
    bad = subprocess.run(["datalad", "registry-submit", "-d", str(registry),
                          str(repos["plain"]), str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    assert "unchanged" in bad.stdout and "no such path" in bad.stdout
    assert "Traceback" not in bad.stderr


# -- the index -----------------------------------------------------------------------

def test_corrupt_index_is_rebuilt_from_the_registry(repos, registry):
    submit(repos["ds2"], repos["plain"], dataset=registry)
    index = local_index(registry)
    before = sorted(index.records(), key=lambda r: r["url"])
    index.path.write_text('{"records": {"1": {"url": "trunc')
    res = submit(repos["plain"], dataset=registry)
    assert res[0]["status"] == "notneeded"
    after = sorted(index.records(), key=lambda r: r["url"])
    assert after == before


def test_rebuild_index_from_registry_alone(repos, registry):
    submit(repos["ds1"], repos["plain"], dataset=registry)
    index = local_index(registry)
    before = sorted(index.records(), key=lambda r: r["url"])
    index.path.unlink()
    assert index_sync.rebuild_index(registry) == 2
    assert sorted(index.records(), key=lambda r: r["url"]) == before
    # the records file in the registry is what carries the facts
    lines = (registry / RECORDS_FILE).read_text().splitlines()
    assert len(lines) == 2


def test_rebuild_from_a_clone_of_the_registry(repos, registry, tmp_path):
    # with extraction: the clone must carry the aggregated metadata too
    submit(repos["ds1"], repos["plain"], dataset=registry, extract=True)
    clone = tmp_path / "registry-clone"
    run("git", "clone", "-q", "-o", "origin", str(registry), str(clone))
    # aggregated metadata travels in refs/datalad/*
    run("git", "fetch", "-q", "origin", "refs/datalad/*:refs/datalad/*",
        cwd=clone)
    assert index_sync.rebuild_index(clone) == 2
    mine = {r["url"]: r for r in local_index(registry).records()}
    theirs = {r["url"]: r for r in local_index(clone).records()}
    assert mine == theirs


# -- processes ---------------------------------------------------------------------------

def _cli(registry, *items, **kw):
    return subprocess.Popen(
        ["datalad", "-f", "json", "registry-submit", "-d", str(registry),
         *map(str, items)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kw)


@pytest.fixture(scope="session")
def many_repos(tmp_path_factory):
    root = tmp_path_factory.mktemp("many")
    return [make_git_repo(root / f"r{i:02d}", {"f": str(i)}) for i in range(12)]


def test_two_processes_at_once_both_land(many_repos, registry):
    submit(many_repos[0], dataset=registry)  # the registry exists already
    a, b = many_repos[1:7], many_repos[7:12]
    pa, pb = _cli(registry, *a), _cli(registry, *b)
    outs = [p.communicate(timeout=300) for p in (pa, pb)]
    assert pa.returncode == 0 and pb.returncode == 0, outs
    urls = {str(p) for p in many_repos}
    assert {e["url"] for e in read_entries(registry).values()} == urls
    assert {r["url"] for r in local_index(registry).records()} == urls
    assert run("git", "status", "--porcelain", cwd=registry) == ""


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_sigkill_leaves_a_consistent_registry(many_repos, registry, delay):
    submit(many_repos[0], dataset=registry)
    proc = _cli(registry, *many_repos)
    time.sleep(delay)
    proc.kill()
    proc.wait()
    # the registry is a valid repository whose HEAD can be read
    fsck = subprocess.run(["git", "fsck", "--no-dangling", "--no-progress"],
                          cwd=registry, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    problems = [ln for ln in (fsck.stdout + fsck.stderr).splitlines()
                if ln.startswith(("error", "fatal", "missing", "broken"))]
    assert problems == [], fsck.stdout + fsck.stderr
    assert head_commit(registry) is not None
    entries = read_entries(registry)
    index_sync.reconcile_index(registry)
    assert {r["url"] for r in local_index(registry).records()} == {
        e["url"] for e in entries.values()}
    # a rerun completes the work
    rerun = _cli(registry, *many_repos)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    urls = {str(p) for p in many_repos}
    assert {e["url"] for e in read_entries(registry).values()} == urls
    assert {r["url"] for r in local_index(registry).records()} == urls
    assert local_index(registry).meta()["registry_head"] == head_commit(registry)
