"""Submissions to a server started with --allow-submit: only remote URLs,
registration in the background, a queue that survives a restart."""
from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.generate import write_jsonl
from datalad_registry_ext.locations import registry_key
from datalad_registry_ext.records import LOCAL_SOURCE, record_id

from .fixtures import make_git_repo
from .test_serve_api import ServerProcess, assert_422, serve_env, sync

pytest.importorskip("fastapi")


def _queue_file(registry: Path, env: dict) -> Path:
    from datalad_registry_ext.server.submissions import QUEUE_NAME
    # index_dir() as the server process computes it from its environment
    return (Path(env["XDG_CACHE_HOME"]) / "datalad-registry-ext" / "index"
            / registry_key(registry) / QUEUE_NAME)


def _queued(registry, env) -> list[str]:
    path = _queue_file(registry, env)
    return [i["url"] for i in json.loads(path.read_text())] \
        if path.exists() else []


@pytest.fixture
def setup(tmp_path):
    """(registry with 5 synced records, env, served directory with a bare
    repository r.git)."""
    env = serve_env(tmp_path)
    source = tmp_path / "five.jsonl"
    write_jsonl(source, 5, seed=9)
    registry = tmp_path / "registry"
    sync(registry, source, env)
    served = tmp_path / "srv"
    served.mkdir()
    make_git_repo(tmp_path / "work", bare_copy=served / "r.git")
    return registry, env, served


class _Static:
    """A static HTTP server on a given port (git's dumb HTTP)."""

    def __init__(self, root: Path, port: int):
        handler = functools.partial(_Quiet, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                                     handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _wait_processed(server, id_, timeout=180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = requests.get(f"{server.api}/dataset-urls/{id_}", timeout=60)
        if r.status_code == 200 and r.json()["processed"]:
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"not registered in {timeout} s: "
                         f"{server.log.read_text()[-3000:]}")


def test_only_well_formed_remote_urls(setup):
    registry, env, _ = setup
    with ServerProcess(registry, env, "--allow-submit") as server:
        assert "accepting submissions" in server.first_line
        post = functools.partial(requests.post, server.api + "/dataset-urls",
                                 timeout=60)
        for body in [{}, {"abc": "x"}, {"url": ""}, {"url": None},
                     {"url": 5}]:
            assert_422(post(json=body), "url")
        for body in [[], "x", 5]:
            assert_422(post(json=body))
        for url in ["hehe", "haha/hehe", "www.example.com", "/abs/path",
                    "file:///tmp/x", "FILE:///etc", "ftp://host/x",
                    "https://user:secret@host/x", "http:///nohost",
                    "https://x/" + "a" * 3000, "http://[::1/x",
                    "git@github.com:o/r"]:
            r = post(json={"url": url})
            assert_422(r, "url")
        assert_422(post(data=b"{not json", headers={
            "content-type": "application/json"}))
        assert_422(post())
        assert _queued(registry, env) == []
        options = requests.options(server.api + "/dataset-urls", timeout=60)
        assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"


def test_submission_is_registered_in_the_background(setup):
    registry, env, served = setup
    srv = _Static(served, 0)
    try:
        url = f"http://127.0.0.1:{srv.httpd.server_address[1]}/r.git"
        with ServerProcess(registry, env, "--allow-submit") as server:
            r = requests.post(server.api + "/dataset-urls",
                              json={"url": url}, timeout=60)
            assert r.status_code == 201, r.text
            assert r.json() == {"url": url,
                                "id": record_id(LOCAL_SOURCE, url),
                                "processed": False, "metadata": []}
            rec = _wait_processed(server, r.json()["id"])
            assert rec["url"] == url and rec["source"] == LOCAL_SOURCE
            assert rec["head"]
            # known now: 202 with the record
            again = requests.post(server.api + "/dataset-urls",
                                  json={"url": url}, timeout=60)
            assert again.status_code == 202
            assert again.json()["id"] == rec["id"] and again.json()["processed"]
            found = requests.get(server.api + "/dataset-urls", timeout=60,
                                 params={"search": "url:127.0.0.1"}).json()
            assert [u["url"] for u in found["dataset_urls"]] == [url]
        assert "Traceback" not in server.log.read_text()
    finally:
        srv.close()


def test_accepted_submission_survives_a_restart(setup):
    registry, env, served = setup
    # a port that accepts connections and never answers: the registration
    # hangs, and the server is stopped while it does
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen()
    port = hang.getsockname()[1]
    url = f"http://127.0.0.1:{port}/r.git"
    try:
        server = ServerProcess(registry, env, "--allow-submit")
        try:
            r = requests.post(server.api + "/dataset-urls", json={"url": url},
                              timeout=60)
            assert r.status_code == 201
            assert _queued(registry, env) == [url]
            # waiting: known by id, not processed
            pending = requests.get(f"{server.api}/dataset-urls/{r.json()['id']}",
                                   timeout=60)
            assert pending.json() == {"url": url, "id": r.json()["id"],
                                      "processed": False, "metadata": []}
            time.sleep(1)
        finally:
            code, _ = server.stop()
        assert code == 0
        assert _queued(registry, env) == [url]
    finally:
        hang.close()
    # the same address now serves the repository
    srv = _Static(served, port)
    try:
        with ServerProcess(registry, env, "--allow-submit") as server:
            rec = _wait_processed(server, record_id(LOCAL_SOURCE, url))
            assert rec["url"] == url
            deadline = time.monotonic() + 30
            while _queued(registry, env) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _queued(registry, env) == []
    finally:
        srv.close()
