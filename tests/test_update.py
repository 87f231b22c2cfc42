"""registry-update: real repositories that change between checks.

Repositories are plain git repositories (fast) and one DataLad dataset,
reached as paths, ``file://`` URLs and over git's dumb HTTP from a server in
a thread on 127.0.0.1; a silent server (accepts, never answers) stands for a
network timeout. Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import datalad
import pytest
from datalad.api import registry_search, registry_submit, registry_update

from datalad_registry_ext import updates
from datalad_registry_ext.index import local_index
from datalad_registry_ext.index_sync import rebuild_index
from datalad_registry_ext.registry import head_commit, read_entries

from .fixtures import HTTPServer, call, make_dataset, make_git_repo, record, run


def update(registry, *urls, **kw):
    return call(registry_update, list(urls) or None, dataset=str(registry),
                **kw)


def summary(results):
    (s,) = [r for r in results if r.get("summary")]
    return s


def by_url(results):
    return {r["url"]: r for r in results
            if r.get("action") == "registry_update" and r.get("url")}


def commit(repo, message="change"):
    run("git", "commit", "-q", "--allow-empty", "-m", message, cwd=repo)
    return run("git", "rev-parse", "HEAD", cwd=repo).strip()


@pytest.fixture
def config(monkeypatch):
    """Set datalad.registry.* items through the environment."""
    def set_items(**items):
        for name, value in items.items():
            # DATALAD_<section>_<name>: '_' -> '.', '__' -> '-'
            monkeypatch.setenv(
                "DATALAD_REGISTRY_" + name.upper().replace("-", "__"),
                str(value))
        datalad.cfg.reload(force=True)
    yield set_items
    for k in list(os.environ):
        if k.startswith("DATALAD_REGISTRY_UPDATE"):
            monkeypatch.delenv(k)
    datalad.cfg.reload(force=True)


def registered(tmp_path, n=3):
    repos = [make_git_repo(tmp_path / f"r{i}", {"README": f"repo {i}"})
             for i in range(n)]
    registry = tmp_path / "registry"
    res = call(registry_submit, [str(r) for r in repos],
               dataset=str(registry), extract=False)
    assert [r["status"] for r in res] == ["ok"] * n
    return repos, registry


def test_nothing_changed_touches_only_last_chk_dt(tmp_path):
    repos, registry = registered(tmp_path)
    head = head_commit(registry)
    before = {str(r): record(registry, str(r)) for r in repos}
    time.sleep(1.1)   # last_chk_dt has a resolution of one second
    res = update(registry, jobs=2)
    s = summary(res)
    assert (s["checked"], s["unchanged"], s["changed"], s["failed"],
            s["skipped"]) == (3, 3, 0, 0, 0)
    assert s["status"] == "notneeded"
    assert head_commit(registry) == head, "nothing to commit"
    for url, old in before.items():
        new = record(registry, url)
        assert new["last_chk_dt"] > old["last_chk_dt"]
        assert {k: v for k, v in new.items() if k != "last_chk_dt"} == \
            {k: v for k, v in old.items() if k != "last_chk_dt"}


def test_changes_are_one_commit_and_reported(tmp_path):
    repos, registry = registered(tmp_path, 4)
    head = head_commit(registry)
    new_head = commit(repos[0])
    run("git", "tag", "-a", "-m", "v1", "v1", cwd=repos[1])
    run("git", "branch", "feature", cwd=repos[2])
    res = update(registry, jobs=3)
    s = summary(res)
    assert (s["checked"], s["changed"], s["unchanged"]) == (4, 3, 1)
    assert s["status"] == "ok"
    got = by_url(res)
    assert "HEAD" in got[str(repos[0])]["message"]
    assert got[str(repos[0])]["record"]["head"] == new_head
    # the tag object fetched also grows .git/objects
    assert set(got[str(repos[1])]["changed"]) - {"git_objects_kb"} == \
        {"head_describe", "tags"}
    assert "new branches feature" in got[str(repos[2])]["message"]
    assert got[str(repos[3])]["status"] == "notneeded"
    # one commit for the whole run, naming the three
    log = run("git", "log", "--format=%s", f"{head}..HEAD", cwd=registry)
    assert log.splitlines() == ["[registry] Update 3 repositories"]
    entries = {e["url"]: e for e in read_entries(registry).values()}
    assert entries[str(repos[0])]["head"] == new_head
    assert [t["name"] for t in entries[str(repos[1])]["tags"]] == ["v1"]
    # search sees it
    hits = call(registry_search, "tags:v1", dataset=str(registry))
    assert [h["url"] for h in hits if h.get("url")] == [str(repos[1])]
    # a second run finds nothing to do
    s2 = summary(update(registry))
    assert (s2["changed"], s2["unchanged"]) == (0, 4)


def test_force_push_and_default_branch_flip_dataset(tmp_path):
    """A DataLad dataset served over file:// whose history is rewritten
    and whose default branch changes: both re-clone, re-extract."""
    ds = make_dataset(tmp_path / "ds", {"dataset_description.json": json.dumps(
        {"Name": "first", "BIDSVersion": "1.8.0"})}, to_git=True)
    bare = tmp_path / "served" / "ds.git"
    run("git", "clone", "-q", "--bare", ds.path, str(bare))
    url = bare.as_uri()
    registry = tmp_path / "registry"
    res = call(registry_submit, [url], dataset=str(registry))
    assert all(r["status"] in ("ok", "notneeded") for r in res), res
    old = record(registry, url)

    # rewrite: amend the last commit and force-push it
    work = tmp_path / "work"
    run("git", "clone", "-q", "--origin", "origin", url, str(work))
    (work / "dataset_description.json").write_text(json.dumps(
        {"Name": "rewritten", "BIDSVersion": "1.8.0"}))
    run("git", "commit", "-q", "-a", "--amend", "-m", "rewritten", cwd=work)
    run("git", "push", "-q", "--force", "origin", "HEAD", cwd=work)
    rewritten = run("git", "rev-parse", "HEAD", cwd=work).strip()
    res = update(registry)
    got = by_url(res)[url]
    assert got["status"] == "ok" and got["record"]["head"] == rewritten
    rec = record(registry, url)
    assert rec["head"] == rewritten
    bids = [m for m in rec["metadata"] if m["extractor_name"] == "bids_dataset"]
    assert bids and bids[0]["dataset_version"] == rewritten
    assert bids[0]["extracted_metadata"]["Name"] == "rewritten"
    assert old["head"] != rewritten

    # default branch flip to a branch with another commit
    run("git", "checkout", "-q", "-b", "trunk", cwd=work)
    trunk = commit(work, "trunk only")
    run("git", "push", "-q", "origin", "trunk", cwd=work)
    run("git", "symbolic-ref", "HEAD", "refs/heads/trunk", cwd=bare)
    res = update(registry)
    got = by_url(res)[url]
    assert got["status"] == "ok", got
    assert "HEAD" in got["message"]
    assert record(registry, url)["head"] == trunk
    s = summary(update(registry))
    assert (s["unchanged"], s["changed"]) == (1, 0)


def test_failures_back_off_unreachable_and_reset(tmp_path, config):
    repos, registry = registered(tmp_path, 3)
    gone, broken, fine = (str(r) for r in repos)
    moved = tmp_path / "moved-away"
    os.rename(gone, moved)
    # stopped being a git repository: its .git is gone, files stay
    import shutil
    shutil.rmtree(Path(broken) / ".git")
    config(**{"update-backoff-base": "1s", "update-backoff-cap": "1s",
              "update-max-failures": 3})

    res = update(registry)
    got = by_url(res)
    assert got[gone]["status"] == "error" and got[broken]["status"] == "error"
    assert got[gone]["n_failed_chks"] == 1
    assert summary(res)["failed"] == 2 and summary(res)["unchanged"] == 1
    rec = record(registry, gone)
    assert rec["n_failed_chks"] == 1 and rec["last_chk_error"]
    assert rec["last_failed_chk_dt"]
    # backing off: skipped within the second, checked after it
    res = update(registry)
    assert by_url(res)[gone]["check"] == "backing-off"
    assert summary(res)["skipped"] == 2
    time.sleep(1.1)
    update(registry)
    time.sleep(1.1)
    res = update(registry)
    assert by_url(res)[gone]["n_failed_chks"] == 3
    assert "unreachable" in by_url(res)[gone]["message"]
    # unreachable: skipped even when due, unless --force
    time.sleep(1.1)
    res = update(registry)
    assert by_url(res)[gone]["check"] == "unreachable"
    assert by_url(res)[gone]["status"] == "notneeded"
    hits = call(registry_search, "n_failed_chks:>2", dataset=str(registry))
    assert sorted(h["url"] for h in hits if h.get("url")) == \
        sorted([gone, broken])
    assert hits[0]["n_failed_chks"] == 3
    res = update(registry, force=True)
    assert by_url(res)[gone]["n_failed_chks"] == 4

    # the repository is back: a check succeeds and resets it
    os.rename(moved, gone)
    res = update(registry, gone, force=True)
    assert by_url(res)[gone]["check"] == "unchanged"
    rec = record(registry, gone)
    assert rec["n_failed_chks"] is None and rec["last_chk_error"] is None
    # a re-submission resets it as well (after the repair of broken)
    run("git", "init", "-q", cwd=broken)
    run("git", "add", ".", cwd=broken)
    run("git", "commit", "-q", "-m", "again", cwd=broken)
    call(registry_submit, [broken], dataset=str(registry), extract=False)
    assert record(registry, broken)["n_failed_chks"] is None
    # the failure state survives an index rebuild (it lives in the index)
    time.sleep(1.1)
    shutil.rmtree(gone)
    update(registry, gone, force=True)
    rebuild_index(registry)
    assert record(registry, gone)["n_failed_chks"] == 1
    assert fine  # checked all along
    assert record(registry, fine)["n_failed_chks"] is None


def test_failed_checks_in_collection_stats(tmp_path, config):
    """Failed checks of a real registry-update show in the collection
    statistics: registry-search --stats (Python and CLI, with the table's
    FAILED column), the API's collection_stats and the overview page of a
    real registry-serve."""
    repos, registry = registered(tmp_path, 3)
    gone, broken, fine = (str(r) for r in repos)
    os.rename(gone, tmp_path / "moved-away")
    import shutil
    shutil.rmtree(Path(broken) / ".git")
    config(**{"update-max-failures": 2})
    assert summary(update(registry))["failed"] == 2
    # --force checks it again at once (no back-off): 2 failures, unreachable
    assert by_url(update(registry, gone, force=True))[gone][
        "n_failed_chks"] == 2
    # all three checked (registry-submit's look), two failing, one of them
    # unreachable at update-max-failures 2
    expected = {"checked_count": 3, "failing_count": 2,
                "unreachable_count": 1}

    def stats_of(query=None):
        (s,) = [r for r in call(registry_search, query, dataset=str(registry),
                                stats=True, limit=0)
                if r.get("action") == "registry_search_stats"]
        return s["collection_stats"]
    assert stats_of()["check_stats"] == expected
    assert stats_of(f"url:{Path(fine).name}").get("check_stats") is None
    assert stats_of(f"url:={gone}")["check_stats"] == {
        "checked_count": 1, "failing_count": 1, "unreachable_count": 1}

    # a search database of an older schema (without the check columns) is
    # rebuilt from the index by the next search
    import sqlite3
    from datalad_registry_ext.engine import SCHEMA_VERSION
    db = local_index(registry).engine_path
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                    (SCHEMA_VERSION - 1,))
    con.close()
    out = subprocess.run(["datalad", "registry-search", "-d", str(registry),
                          "--stats"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta WHERE key = 'schema'"
                           ).fetchone()[0] == SCHEMA_VERSION
    con.close()
    assert "failed checks (registry-update): 2 failing records " \
           "(1 unreachable), of 3 checked records" in out.stdout
    header, *rows = out.stdout.splitlines()
    assert "FAILED" in header.split()
    failed_at = header.index("FAILED")
    marks = {row.split()[0]: row[failed_at:failed_at + 6].strip()
             for row in rows[:3]}
    assert marks == {gone: "2", broken: "1", fine: "-"}  # "-": empty

    pytest.importorskip("fastapi")
    import requests
    from .test_serve_api import ServerProcess
    with ServerProcess(registry, dict(os.environ)) as server:
        body = requests.get(server.api + "/dataset-urls", timeout=60).json()
        assert body["collection_stats"]["check_stats"] == expected
        assert body["collection_stats"]["summary"]["ds_count"] == 3
        # the processed filter takes the Python path (stats.collection_stats)
        body = requests.get(server.api + "/dataset-urls", timeout=60,
                            params={"processed": "true"}).json()
        assert body["collection_stats"]["check_stats"] == expected
        page = requests.get(server.url + "overview/", timeout=60).text
        assert "failed checks: 2" in page
        assert "n_failed_chks%3A%3E0" in page   # links to the failing ones
        table = page[page.index('id="check-stats"'):]
        table = table[:table.index("</table>")]
        assert re.findall(r'<td class="num">(\d+)</td>', table) == \
            ["3", "2", "1"]
        assert "Unreachable (2 or more failed checks" in table
        # a query without failing records: no check statistics
        page = requests.get(server.url + "overview/", timeout=60,
                            params={"query": Path(fine).name}).text
        assert "check-stats" not in page and "failed checks:" not in page


def _silent_server():
    """A TCP server on 127.0.0.1 that accepts and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held = []
    done = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()

    def close():
        done.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    return srv.getsockname()[1], close


def test_dumb_http_and_a_timeout(tmp_path, config):
    served = tmp_path / "served"
    make_git_repo(tmp_path / "src", bare_copy=served / "r.git")
    registry = tmp_path / "registry"
    with HTTPServer(served) as srv:
        url = f"{srv.url}/r.git"
        res = call(registry_submit, [url], dataset=str(registry),
                   extract=False)
        assert res[0]["status"] == "ok"
        s = summary(update(registry))
        assert (s["checked"], s["unchanged"]) == (1, 1)
        # a change on the server, published for dumb HTTP
        work = tmp_path / "work"
        run("git", "clone", "-q", "--origin", "origin", str(served / "r.git"),
            str(work))
        new = commit(work)
        run("git", "push", "-q", "origin", "HEAD", cwd=work)
        run("git", "update-server-info", cwd=served / "r.git")
        res = update(registry)
        assert summary(res)["changed"] == 1
        assert record(registry, url)["head"] == new

    # the same kind of URL, on a server that never answers
    port, close = _silent_server()
    try:
        silent = f"http://127.0.0.1:{port}/r.git"
        t0 = time.monotonic()
        with pytest.raises(updates.RepositoryError, match="no answer within"):
            updates.remote_refs(silent, timeout=1.5)
        assert time.monotonic() - t0 < 10
    finally:
        close()


def _hanging_registry(tmp_path, config, n_fast=4):
    """A registry of ``n_fast`` local repositories and one over HTTP whose
    server then turns silent (checks of it hang until the timeout)."""
    served = tmp_path / "served"
    make_git_repo(tmp_path / "src", bare_copy=served / "slow.git")
    repos = [make_git_repo(tmp_path / f"r{i}") for i in range(n_fast)]
    registry = tmp_path / "registry"
    with HTTPServer(served) as srv:
        slow = f"{srv.url}/slow.git"
        res = call(registry_submit, [slow] + [str(r) for r in repos],
                   dataset=str(registry), extract=False)
        assert [r["status"] for r in res] == ["ok"] * (n_fast + 1)
    # the port is free now: a silent server takes its place
    port = int(slow.rsplit(":", 1)[1].split("/")[0])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    return repos, registry, slow, srv


def test_two_updates_at_once(tmp_path, config):
    repos, registry, slow, srv = _hanging_registry(tmp_path, config, 2)
    config(**{"update-timeout": 4})
    try:
        first = {}
        t = threading.Thread(target=lambda: first.setdefault(
            "res", update(registry, jobs=2)))
        t.start()
        time.sleep(1.5)   # the first one is waiting for the silent server
        t0 = time.monotonic()
        second = update(registry)
        assert time.monotonic() - t0 < 2, "the second must not wait"
        assert [r["status"] for r in second] == ["notneeded"]
        assert "another registry-update" in second[0]["message"]
        # searching goes on meanwhile
        hits = call(registry_search, "r0", dataset=str(registry))
        assert any(h.get("url") == str(repos[0]) for h in hits)
        # --wait runs after it
        third = update(registry, wait=True, force=True)
        t.join()
        assert summary(first["res"])["failed"] == 1
        assert "no answer within 4 s" in by_url(first["res"])[slow]["message"]
        assert summary(third)["checked"] == 3
        assert record(registry, slow)["n_failed_chks"] == 2
    finally:
        srv.close()


def test_killed_run_is_resumed(tmp_path, config):
    """SIGKILL while a check hangs: what was checked is stored, the rerun
    checks only the rest and commits the change found before the kill."""
    repos, registry, slow, srv = _hanging_registry(tmp_path, config, 4)
    try:
        new_head = commit(repos[1])
        head = head_commit(registry)
        before = record(registry, str(repos[0]))["last_chk_dt"]
        time.sleep(1.1)
        env = dict(os.environ, DATALAD_REGISTRY_UPDATE__TIMEOUT="300")
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from datalad.api import registry_update as u; "
             "u(dataset=sys.argv[1], jobs=2, result_renderer='disabled', "
             "on_failure='ignore')", str(registry)], env=env)
        journal = updates.Journal(
            local_index(registry).path.with_name(updates.JOURNAL_NAME))
        deadline = time.monotonic() + 60
        # wait for a checkpoint holding the fast ones (the slow one hangs)
        while time.monotonic() < deadline:
            data = journal.load()
            if data and data["changed"] and record(
                    registry, str(repos[0]))["last_chk_dt"] != before:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint was written")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert head_commit(registry) == head, "killed before its commit"
        assert journal.load()["changed"] == [str(repos[1])]

        config(**{"update-timeout": 2})
        res = update(registry)
        s = summary(res)
        # the fast ones were checked by the killed run: not again
        assert s["resumed"] == 3, s
        assert s["checked"] == 1 and s["failed"] == 1   # the silent one
        assert s["changed"] == 1
        assert by_url(res)[str(repos[1])]["record"]["head"] == new_head
        assert journal.load() is None
        # registry and index agree
        entries = {e["url"]: e for e in read_entries(registry).values()}
        for url, e in entries.items():
            assert record(registry, url)["head"] == e["head"]
        assert run("git", "status", "--porcelain", cwd=registry) == ""
        run("git", "fsck", "--no-progress", cwd=registry)
    finally:
        srv.close()


def test_named_repositories_and_unknown_ones(tmp_path):
    repos, registry = registered(tmp_path, 2)
    res = update(registry, str(repos[0]), str(tmp_path / "nope"))
    s = summary(res)
    assert s["checked"] == 1
    (refusal,) = [r for r in res if r["status"] == "impossible"]
    assert "not registered" in refusal["message"]
    res = update(tmp_path / "no-registry")
    assert [r["status"] for r in res] == ["impossible"]


def test_durations():
    assert updates.parse_duration("30m") == 1800
    assert updates.parse_duration("6h") == 21600
    assert updates.parse_duration("90") == 90
    for bad in ("", "x", "-1h", "0", "5y"):
        with pytest.raises(ValueError):
            updates.parse_duration(bad)
    assert updates.backoff(1, 60, 3600) == 60
    assert updates.backoff(3, 60, 3600) == 240
    assert updates.backoff(30, 60, 3600) == 3600


def test_serve_updates_in_the_background(tmp_path):
    pytest.importorskip("fastapi")
    import warnings
    with warnings.catch_warnings():
        # starlette's TestClient warns about the httpx it runs on
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from datalad_registry_ext.server import create_app
    repos, registry = registered(tmp_path, 2)
    new = commit(repos[0])
    app = create_app(registry, update_every=0.5)
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        while app.state.updater.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.state.updater.runs >= 1
        assert app.state.updater.last["changed"] == 1
        r = client.get("/api/v2/dataset-urls", params={"search": "r0"})
        assert r.status_code == 200
        assert [h["head"] for h in r.json()["dataset_urls"]] == [new]
    # the thread ended with the server
    assert not app.state.updater._thread.is_alive()


def test_cli(tmp_path):
    repos, registry = registered(tmp_path, 2)
    commit(repos[1])
    out = subprocess.run(["datalad", "registry-update", "-d", str(registry),
                          "-J", "2"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(ln.startswith(f"updated {repos[1]}: HEAD") for ln in lines), \
        lines
    assert any(ln.endswith("2 checked, 1 unchanged, 1 changed, 0 failed, "
                           "0 skipped") for ln in lines), lines
