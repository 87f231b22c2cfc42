"""Federation: registry-sync from DataLad-Registry services, named sources,
registry-submit --to, registry-search --at and --source, tokens.

The happy paths talk to a real ``datalad registry-serve`` process on
127.0.0.1. Misbehaving services are small real HTTP servers of the test's
own (http.server in a thread) that answer the way a broken or hostile peer
would: invalid JSON, HTML error pages, 5xx and 429 before success, redirect
loops, oversized answers, repeated or skipped pages, a total that changes,
a stream cut short, a page that never comes (the client is killed).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import datalad
import pytest
import requests
from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext import remote
from datalad_registry_ext.index import source_index
from datalad_registry_ext.locations import index_dir

from .fixtures import call

N_SERVED = 250


# -- helpers -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok(results) -> list[dict]:
    return [r for r in results if r["status"] == "ok"]


def failures(results) -> list[dict]:
    return [r for r in results if r["status"] in ("error", "impossible")]


def hits(results) -> list[dict]:
    return [r for r in results
            if r.get("action") == "registry_search" and r["status"] == "ok"]


def config_of(registry: Path) -> str:
    return (registry / ".git" / "config").read_text()


def index_files(registry: Path) -> dict[str, bytes]:
    root = index_dir(registry)
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def downloads_left(registry: Path) -> list[Path]:
    return list(index_dir(registry).rglob("*.download.tmp"))


@pytest.fixture(autouse=True)
def full_syncs(monkeypatch):
    """Every sync here downloads in full, as a first sync does: the
    incremental ones are tested in test_sync_incremental.py."""
    monkeypatch.setenv("DATALAD_REGISTRY_INCREMENTAL__SYNC", "false")
    datalad.cfg.reload(force=True)
    yield
    monkeypatch.delenv("DATALAD_REGISTRY_INCREMENTAL__SYNC")
    datalad.cfg.reload(force=True)


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)


@pytest.fixture
def cap_env(monkeypatch):
    def set_cap(item_env, value):
        monkeypatch.setenv(item_env, str(value))
        datalad.cfg.reload(force=True)
    yield set_cap
    datalad.cfg.reload(force=True)


# -- a real registry-serve --------------------------------------------------------

class Served:
    def __init__(self, registry: Path, allow_submit: bool = False):
        self.registry = registry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["datalad", "registry-serve", "-d", str(registry),
                "--port", str(self.port)]
        if allow_submit:
            args.append("--allow-submit")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        while True:
            try:
                r = requests.get(self.url + "/api/v2/dataset-urls",
                                 params={"per_page": 1}, timeout=5)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("registry-serve did not start: "
                                   + self.proc.stderr.read().decode()[-2000:])
            time.sleep(0.3)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A read-only registry-serve of N_SERVED generated records (built and
    served under the session's user dirs)."""
    from benchmarks.generate import write_jsonl
    root = tmp_path_factory.mktemp("served")
    src = root / "records.jsonl.gz"
    write_jsonl(src, N_SERVED, seed=11)
    registry = root / "reg"
    res = call(registry_sync, str(src), dataset=str(registry))
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == N_SERVED
    server = Served(registry)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def served_submit(tmp_path_factory):
    """A registry-serve --allow-submit (its registry holds one record)."""
    root = tmp_path_factory.mktemp("served-submit")
    src = root / "one.jsonl"
    src.write_text(json.dumps({"url": "https://one.example.org/ds",
                               "processed": True}) + "\n")
    registry = root / "reg"
    assert call(registry_sync, str(src),
                dataset=str(registry))[-1]["status"] == "ok"
    server = Served(registry, allow_submit=True)
    yield server
    server.stop()


def sync(registry, source=None, **kw):
    return call(registry_sync, source, dataset=str(registry), **kw)


def search(registry, query=None, **kw):
    return call(registry_search, query, dataset=str(registry), **kw)


# == A + B: syncing from a service, named sources ===================================

def test_sync_a_service_by_any_spelling_search_it_and_drop_it(tmp_path,
                                                             served):
    reg = tmp_path / "reg"
    name = f"127.0.0.1:{served.port}"
    res = sync(reg, served.url + "/api/v2/")
    assert not failures(res), res
    (done,) = res
    assert (done["imported"], done["added"], done["source"]) == \
        (N_SERVED, N_SERVED, name)
    assert done["how"] == "stream" and done["url"] == served.url
    assert name in done["message"] and served.url in done["message"]
    assert f'url = {served.url}' in config_of(reg)

    # every record carries the source's name; all of them are searchable
    records = source_index(reg, served.url).records()
    assert len(records) == N_SERVED
    assert {r["source"] for r in records} == {name}
    found = hits(search(reg, source=name))
    assert len(found) == N_SERVED and {h["source"] for h in found} == {name}
    assert hits(search(reg, source="local")) == []

    # the same service under other spellings, or by name: the same source
    for spelling in (served.url + "/",
                     served.url.replace("http://", "HTTP://") + "/api/v2",
                     served.url + "/api/v2/dataset-urls", name):
        res = sync(reg, spelling)
        assert [r["status"] for r in res] == ["ok"], (spelling, res)
        assert res[0]["source"] == name
        assert res[0]["unchanged"] == N_SERVED and res[0]["added"] == 0
    assert len(list((index_dir(reg) / "sources").glob("*.json"))) == 1

    # --query mirrors what the service's search finds, and is remembered
    expected = requests.get(served.url + "/api/v2/dataset-urls", params={
        "search": "url:gin.g-node.org", "per_page": 1}).json()[
        "collection_stats"]["summary"]["ds_count"]
    assert 0 < expected < N_SERVED
    res = sync(reg, name, query="url:gin.g-node.org")
    assert res[-1]["status"] == "ok", res
    assert res[-1]["imported"] == expected
    assert res[-1]["removed"] == N_SERVED - expected
    assert "query = url:gin.g-node.org" in config_of(reg)
    res = sync(reg, all_sources=True)
    assert [r["status"] for r in res] == ["ok"] and \
        res[0]["unchanged"] == expected
    found = hits(search(reg, source=name))
    assert len(found) == expected and all(
        "gin.g-node.org" in h["url"] for h in found)

    # a name of one's own; a name that is taken; a URL known by another name
    res = sync(reg, served.url, name="other")
    assert res[0]["status"] == "impossible"
    assert f"already synced as '{name}'" in res[0]["message"]

    # --remove drops the records and the configuration
    res = sync(reg, remove=name)
    assert [r["status"] for r in res] == ["ok"], res
    assert not source_index(reg, served.url).exists()
    assert "registry.source" not in config_of(reg)
    assert hits(search(reg)) == []
    res = sync(reg, remove=name)
    assert res[0]["status"] == "impossible" and "no source named" in \
        res[0]["message"]
    res = sync(reg, all_sources=True)
    assert res[0]["status"] == "notneeded"


def test_name_moves_a_service_source_to_another_spelling(tmp_path, served):
    """Another host name for the same service is another location; --name
    says it is the same source: it moves, keeping its records' ids."""
    reg = tmp_path / "reg"
    assert sync(reg, served.url, name="srv")[-1]["status"] == "ok"
    other = served.url.replace("127.0.0.1", "localhost")
    res = sync(reg, other, name="srv")
    assert not failures(res), res
    (done,) = res
    assert (done["source"], done["url"], done["moved_from"]) == \
        ("srv", other, served.url)
    assert (done["unchanged"], done["added"], done["removed"]) == \
        (N_SERVED, 0, 0)
    assert f"moved here from {served.url}" in done["message"]
    assert f"url = {other}" in config_of(reg)
    assert not source_index(reg, served.url).exists()
    assert len(list((index_dir(reg) / "sources").glob("*.json"))) == 1
    # the records keep the source's name, which their ids derive from
    found = hits(search(reg))
    assert len(found) == N_SERVED and {h["source"] for h in found} == {"srv"}
    # unnamed, the other spelling would be a source of its own
    res = sync(reg, served.url)
    assert res[-1]["source"] == "127.0.0.1:" + str(served.port)
    assert "moved_from" not in res[-1]


def test_paging_gives_what_the_stream_gives(tmp_path, served, monkeypatch):
    """Where a service has no record stream, its pages are read (following
    next_pg), with the same records as a result."""
    streamed, paged = tmp_path / "streamed", tmp_path / "paged"
    assert sync(streamed, served.url, name="srv")[-1]["how"] == "stream"
    monkeypatch.setattr(remote, "STREAM", remote.LIST + "/no-such-stream")
    res = sync(paged, served.url, name="srv")
    assert res[-1]["status"] == "ok", res
    assert res[-1]["how"] == "pages" and "3 pages" in res[-1]["message"]
    assert res[-1]["imported"] == N_SERVED

    def stored(reg):
        return sorted(source_index(reg, served.url).records(),
                      key=lambda r: r["url"])
    assert stored(paged) == stored(streamed)
    assert all(r.get("metadata") is not None for r in stored(paged))


def test_named_json_lines_files_and_the_cli(tmp_path, served):
    reg = tmp_path / "reg"
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"url": "https://a.example.org/1"}) + "\n")
    # an unnamed file: its path names it, nothing is remembered
    res = sync(reg, str(a))
    assert res[-1]["source"] == str(a)
    assert "registry.source" not in config_of(reg)
    # named: remembered, records renamed, the same index file
    res = sync(reg, str(a), name="afile")
    assert res[-1]["status"] == "ok" and res[-1]["unchanged"] == 0
    assert {r["source"] for r in source_index(reg, str(a)).records()} == \
        {"afile"}
    assert f"url = {a}" in config_of(reg)
    for bad in ("local", "has space", "-dash", "x" * 101):
        res = sync(reg, str(a), name=bad)
        assert res[0]["status"] == "impossible", bad
    res = sync(reg, str(a), query="x")
    assert res[0]["status"] == "impossible" and "--query" in res[0]["message"]
    res = sync(reg, all_sources=True, name="x")
    assert res[0]["status"] == "impossible"

    # on the command line: a service and a file, --all, --remove
    proc = subprocess.run(
        ["datalad", "registry-sync", "-d", str(reg), served.url,
         "--name", "srv"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"imported {N_SERVED} records from srv" in proc.stdout
    proc = subprocess.run(["datalad", "registry-sync", "-d", str(reg),
                           "--all"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("synced") == 2
    proc = subprocess.run(["datalad", "registry-sync", "-d", str(reg),
                           "--remove", "afile"], capture_output=True, text=True)
    assert proc.returncode == 0 and "removed the source afile" in proc.stdout


# == C: registry-submit --to ======================================================

def test_submit_to_a_service(tmp_path, served, served_submit, fast_retries):
    reg = tmp_path / "reg"
    new = "https://submitted.example.invalid/ds1"
    res = call(registry_submit, [new], dataset=str(reg),
               to=served_submit.url + "/api/v2")
    assert [(r["status"], r["url"]) for r in res] == [("ok", new)], res
    assert "submitted" in res[0]["message"]
    res = call(registry_submit, [new], dataset=str(reg),
               to=served_submit.url)
    assert [r["status"] for r in res] == ["notneeded"], res
    assert "already registered" in res[0]["message"]

    # a read-only instance
    res = call(registry_submit, [new], dataset=str(reg), to=served.url)
    assert res[0]["status"] == "impossible"
    assert "read-only" in res[0]["message"]

    # what a remote service cannot clone, or must not learn
    local = tmp_path / "here"
    local.mkdir()
    res = call(registry_submit, [str(local), f"file://{local}",
                                 "https://user:s3cret@example.org/x"],
               dataset=str(reg), to=served_submit.url)
    assert [r["status"] for r in res] == ["impossible"] * 3, res
    assert "local path" in res[0]["message"]
    assert all("s3cret" not in json.dumps(r, default=str) for r in res)
    # nothing of this touched the local registry
    assert not (reg / ".git").exists()

    # the server's own message for a URL it refuses
    res = call(registry_submit, ["https:///no-host"], dataset=str(reg),
               to=served_submit.url)
    assert res[0]["status"] == "error" and "HTTP 422" in res[0]["message"]

    # a service that cannot be reached; an unknown name
    res = call(registry_submit, [new, new + "2"], dataset=str(reg),
               to=f"http://127.0.0.1:{free_port()}")
    assert [r["status"] for r in res] == ["error", "error"]
    assert "cannot reach" in res[0]["message"]
    res = call(registry_submit, [new], dataset=str(reg), to="nosuchname")
    assert res[0]["status"] == "impossible"


# == D + E: registry-search --at, --source ========================================

def test_search_at_a_service_matches_a_local_search_of_its_copy(tmp_path,
                                                                 served):
    reg = tmp_path / "reg"
    name = "srv"
    assert sync(reg, served.url, name=name)[-1]["status"] == "ok"
    query = "url:gin.g-node.org OR url:github.com"
    for kw in (dict(order_by="annexed_files_in_wt_size", limit=7),
               dict(order_by="url", order_dir="asc", limit=120, offset=3),
               dict(limit=5, metadata="content"),
               dict(limit=0, stats=True)):
        remote_res = search(reg, query, at=name, **kw)
        local_res = search(reg, query, source=name, **kw)
        assert not failures(remote_res), remote_res
        strip = lambda r: {k: v for k, v in r.items()  # noqa: E731
                           if k not in ("refds", "logger")}
        assert [strip(r) for r in remote_res] == \
            [strip(r) for r in local_res], kw
        assert remote_res[0]["total"] == local_res[0]["total"]
    # by URL, the same
    before = index_files(reg)
    by_url = search(reg, query, at=served.url + "/", limit=3)
    assert [h["url"] for h in hits(by_url)] == \
        [h["url"] for h in hits(search(reg, query, at=name, limit=3))]
    # nothing local was read or written
    assert index_files(reg) == before

    # a bad query: the service's message, with its caret
    res = search(reg, "url:(", at=name)
    (err,) = failures(res)
    assert err["status"] == "error" and "HTTP 400" in err["message"]
    assert "^" in err["message"] and served.url in err["message"]
    res = search(reg, "x", at=name, export=str(tmp_path / "x.jsonl"))
    assert res[0]["status"] == "impossible"
    res = search(reg, "x", source="nosuchsource")
    assert res[0]["status"] == "impossible"
    assert "sources: local, srv" in res[0]["message"]


# == F: tokens ===================================================================

def test_tokens_are_sent_and_never_kept(tmp_path, served, monkeypatch):
    token = "tok-3f9a1c55e0d2"
    reg = tmp_path / "reg"
    seen = []

    def answer(h, path, q):
        seen.append(h.headers.get("Authorization"))
        if path.endswith("/all"):
            return 404, {}, b""
        # a hostile service echoes what it was sent
        return 500, {"Content-Type": "application/json"}, json.dumps(
            {"code": 500, "description": f"bad {h.headers.get('Authorization')}"}
        ).encode()

    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    monkeypatch.setenv(remote.token_variable("echo"), token)
    with Double(answer) as double:
        res = sync(reg, double.url, name="echo")
        res += search(reg, "x", at=double.url)
        res += call(registry_submit, ["https://x.example.org/y"],
                    dataset=str(reg), to=double.url)
    assert f"Bearer {token}" in seen
    assert failures(res) and "***" in res[0]["message"]

    # a real service, with the generic token
    monkeypatch.setenv(remote.TOKEN_ENV, token)
    res += sync(reg, served.url, name="srv")
    assert res[-1]["status"] == "ok"
    res += search(reg, "x", at="srv", limit=2)
    text = json.dumps(res, default=str)
    assert token not in text
    assert token not in config_of(reg)
    assert all(token.encode() not in data
               for data in index_files(reg).values())


# == misbehaving services ============================================================

class Double:
    """A real HTTP server on 127.0.0.1 answering with ``respond(handler,
    path, query) -> (status, headers, body)``; ``hits`` counts requests by
    path."""

    def __init__(self, respond):
        self.respond = respond
        self.hits: dict[str, int] = {}
        double = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                parts = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                key = parts.path + (f"#{q['page']}" if "page" in q else "")
                double.hits[key] = double.hits.get(key, 0) + 1
                n = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(n) if n else b""
                status, headers, body = double.respond(self, parts.path, q)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and \
                        headers.get("Transfer-Encoding") != "chunked":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def rec(i: int, **kw) -> dict:
    return {"url": f"https://d.example.org/{i}", "processed": True,
            "metadata": [], **kw}


def page(records, number, total, last, **kw) -> bytes:
    body = {"cur_pg_num": number, "first_pg": "/api/v2/dataset-urls?page=1",
            "last_pg": f"/api/v2/dataset-urls?page={last}",
            "dataset_urls": records,
            "collection_stats": {"summary": {"ds_count": total,
                                             "unique_ds_count": total}}}
    if number < last:
        body["next_pg"] = f"/api/v2/dataset-urls?per_page=100&page={number + 1}"
    body.update(kw)
    return json.dumps(body).encode()


JSON = {"Content-Type": "application/json"}


def paged_service(pages: dict[int, list[dict]], overrides=None):
    """A respond function for a service without a stream whose page N holds
    ``pages[N]``; ``overrides(path, q) -> answer | None`` goes first."""
    total = sum(len(p) for p in pages.values())
    last = max(pages)

    def respond(h, path, q):
        if overrides:
            answer = overrides(path, q)
            if answer is not None:
                return answer
        if path == "/api/v2/dataset-urls/all":
            return 404, JSON, b'{"code": 404, "name": "Not Found"}'
        if path != "/api/v2/dataset-urls":
            return 404, {"Content-Type": "text/html"}, b"<html>404</html>"
        if q.get("per_page") == "1":
            return 200, JSON, page(pages[1][:1], 1, total, total)
        n = int(q.get("page", 1))
        return 200, JSON, page(pages.get(n, []), n, total, last)
    return respond


PAGES = {1: [rec(i) for i in range(3)], 2: [rec(i) for i in range(3, 6)]}


def test_failed_syncs_leave_the_previous_records_searchable(tmp_path,
                                                           fast_retries):
    reg = tmp_path / "reg"
    current = {"now": None}
    good = Double(paged_service(PAGES, lambda path, q: current["now"](
        path, q) if current["now"] else None))
    good.__enter__()
    res = sync(reg, good.url, name="d")
    assert res[-1]["status"] == "ok" and res[-1]["imported"] == 6, res
    index = source_index(reg, good.url)
    before = index.path.read_bytes()

    def again(overrides):
        """Sync the same service again, misbehaving as ``overrides`` says."""
        current["now"] = overrides
        good.hits.clear()
        try:
            return sync(reg, "d"), good
        finally:
            current["now"] = None

    def on_page2(answer):
        return lambda path, q: answer if q.get("page") == "2" and \
            q.get("per_page") != "1" else None

    cases = {
        "invalid JSON": (on_page2((200, JSON, b'{"cur_pg_num": 2,')),
                         "page 2: the answer (HTTP 200) is not valid JSON"),
        "HTML error page": (on_page2((502, {"Content-Type": "text/html"},
                                      b"<html><title>Bad Gateway</title>"
                                      b"</html>")),
                            "page 2: HTTP 502: an HTML page (Bad Gateway)"),
        "page repeated": (on_page2((200, JSON, page(PAGES[1], 2, 6, 2))),
                          "page 2: it repeats page 1"),
        "wrong page": (on_page2((200, JSON, page(PAGES[2], 3, 6, 3))),
                       "page 2: the service answered with page 3"),
        "page skipped": (lambda path, q: (200, JSON, page(
            PAGES[1], 1, 6, 3, next_pg="/api/v2/dataset-urls?page=3"))
            if q.get("page") == "1" else None,
            "does not point to page 2"),
        "a page missing": (on_page2((200, JSON, page(PAGES[2][:2], 2, 6, 2))),
                           "the pages held 5 records, but the service "
                           "announced 6"),
        "total changed": (on_page2((200, JSON, page(PAGES[2], 2, 7, 2))),
                          "page 2: the total changed from 6 to 7"),
        "not a page": (on_page2((200, JSON, b'{"records": []}')),
                       "page 2: not a page of records"),
    }
    for label, (override, expected) in cases.items():
        res, _ = again(override)
        assert [r["status"] for r in res] == ["error"], (label, res)
        message = res[0]["message"]
        assert expected in message, (label, message)
        assert message.startswith(good.url), (label, message)
        assert index.path.read_bytes() == before, label
        assert not downloads_left(reg), label
    urls = sorted(h["url"] for h in hits(search(reg, source="d")))
    assert urls == sorted(r["url"] for p in PAGES.values() for r in p)

    # 500s, then success; 429 with Retry-After (honoured)
    failing = {"n": 0}

    def flaky(path, q):
        if q.get("page") == "2" and failing["n"] < 2:
            failing["n"] += 1
            return 500, JSON, b'{"code": 500, "description": "busy"}'
        return None
    res, double = again(flaky)
    assert res[-1]["status"] == "ok" and res[-1]["unchanged"] == 6, res
    assert double.hits["/api/v2/dataset-urls#2"] == 3
    limited = {"n": 0}

    def too_many(path, q):
        if q.get("page") == "2" and not limited["n"]:
            limited["n"] += 1
            return 429, {"Retry-After": "1"}, b""
        return None
    start = time.monotonic()
    res, double = again(too_many)
    assert res[-1]["status"] == "ok", res
    assert time.monotonic() - start >= 1
    res, _ = again(lambda path, q: (429, {"Retry-After": "3600"}, b"")
                   if q.get("page") == "2" else None)
    assert "asks to wait 3600 s" in res[0]["message"]
    good.__exit__()


def test_answers_a_sync_must_refuse(tmp_path, fast_retries, cap_env):
    reg = tmp_path / "reg"

    def loop(h, path, q):
        return 302, {"Location": path + "?again=1"}, b""
    with Double(loop) as double:
        res = sync(reg, double.url)
        assert res[0]["status"] == "error"
        assert "redirects in a loop" in res[0]["message"]
        assert double.url in res[0]["message"]

    def html(h, path, q):
        return 200, {"Content-Type": "text/html"}, \
            b"<html><title>Welcome to nginx</title></html>"
    with Double(html) as double:
        res = sync(reg, double.url)
        assert res[0]["status"] == "impossible"
        assert "is not a DataLad-Registry API" in res[0]["message"]
        assert "an HTML page, not JSON (Welcome to nginx)" in res[0]["message"]
    with Double(lambda h, p, q: (200, JSON, b'{"hello": "world"}')) as double:
        res = sync(reg, double.url)
        assert res[0]["status"] == "impossible"
        assert "no 'dataset_urls'" in res[0]["message"]
    # nothing was created or remembered for a failed first sync
    assert not reg.exists()

    # an answer over the cap
    big = [rec(i, head_describe="x" * 2000) for i in range(50)]
    with Double(paged_service({1: big})) as double:
        cap_env("DATALAD_REGISTRY_RESPONSE__MAX__BYTES", 50_000)
        res = sync(reg, double.url)
        assert res[0]["status"] == "error", res
        assert "page 1: the answer is larger than 50000 bytes" in \
            res[0]["message"]
        assert "datalad.registry.response-max-bytes" in res[0]["message"]

    # bad records are reported with their page and position, and skipped
    pages = {1: [rec(0), rec(1, annex_key_count="lots"), rec(2)],
             2: [rec(3), ["not", "a", "record"]]}
    with Double(paged_service(pages)) as double:
        cap_env("DATALAD_REGISTRY_RESPONSE__MAX__BYTES", 10_000_000)
        res = sync(reg, double.url)
        bad = failures(res)
        assert [r["where"] for r in bad] == ["page 1, record 2",
                                             "page 2, record 2"], res
        assert "'annex_key_count' must be an integer" in bad[0]["message"]
        assert res[-1]["status"] == "ok" and res[-1]["imported"] == 3
        assert res[-1]["skipped"] == 2


def stream_service(lines: list[bytes], total: int):
    def respond(h, path, q):
        if path == "/api/v2/dataset-urls/all":
            return 200, {"Content-Type": "application/x-ndjson"}, \
                b"".join(lines)
        return 200, JSON, page([rec(0)], 1, total, total)
    return respond


def test_a_stream_cut_short_or_too_long_changes_nothing(tmp_path,
                                                       fast_retries):
    reg = tmp_path / "reg"
    lines = [json.dumps(rec(i)).encode() + b"\n" for i in range(5)]
    with Double(stream_service(lines, 5)) as double:
        res = sync(reg, double.url, name="s")
        assert res[-1]["status"] == "ok" and res[-1]["how"] == "stream"
        before = source_index(reg, double.url).path.read_bytes()
        double.respond = stream_service(lines[:3], 5)
        res = sync(reg, "s")
        assert res[0]["status"] == "error"
        assert "the stream ended after 3 of the 5 records" in \
            res[0]["message"]
        double.respond = stream_service(lines + lines[:1], 5)
        res = sync(reg, "s")
        assert "more records than the 5" in res[0]["message"]
        assert source_index(reg, double.url).path.read_bytes() == before
        assert not downloads_left(reg)


def test_a_killed_sync_leaves_the_previous_state(tmp_path):
    """SIGKILL while page 2 is being downloaded: the previous records stay,
    and the next sync removes the half-written download."""
    reg = tmp_path / "reg"
    asked = threading.Event()
    stall = {"on": False}

    def respond(h, path, q):
        if stall["on"] and q.get("page") == "2":
            asked.set()
            time.sleep(30)
        return paged_service(PAGES)(h, path, q)
    with Double(respond) as double:
        assert sync(reg, double.url, name="k")[-1]["status"] == "ok"
        before = source_index(reg, double.url).path.read_bytes()
        stall["on"] = True
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from datalad.api import registry_sync; "
             "registry_sync('k', dataset=sys.argv[1], "
             "result_renderer='disabled')", str(reg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert asked.wait(60)
            assert downloads_left(reg)   # page 1 is on disk
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        assert source_index(reg, double.url).path.read_bytes() == before
        assert len(hits(search(reg, source="k"))) == 6
        stall["on"] = False
        stale = downloads_left(reg)
        past = time.time() - 60
        for p in stale:
            os.utime(p, (past, past))
        assert sync(reg, "k")[-1]["status"] == "ok"
        assert not downloads_left(reg)
