"""The registry-serve command: URL, signals, errors as results, stable ids."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest
import requests

from benchmarks.generate import write_jsonl
from datalad_registry_ext.records import record_id

from .test_serve_api import ServerProcess, serve_env, sync

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(registry, env): 30 generated records, synced in their own process."""
    root = tmp_path_factory.mktemp("serve-cmd")
    env = serve_env(root)
    source = root / "small.jsonl"
    write_jsonl(source, 30, seed=5)
    registry = root / "registry"
    sync(registry, source, env)
    return registry, env


def _run(args, env, timeout=120):
    return subprocess.run(["datalad", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_url_and_stops_cleanly(small, sig):
    registry, env = small
    server = ServerProcess(registry, env)
    try:
        # loopback by default; read-only by default
        assert server.url.startswith("http://127.0.0.1:")
        assert "read-only" in server.first_line
        assert requests.get(server.api + "/dataset-urls",
                            timeout=60).status_code == 200
    finally:
        code, rest = server.stop(sig)
    assert code == 0, server.log.read_text()
    assert f"stopped serving {registry} at {server.url} ({sig.name})" in rest
    assert "Traceback" not in server.log.read_text()


def test_no_registry_is_impossible(tmp_path):
    out = _run(["registry-serve", "-d", str(tmp_path / "none"), "--port",
                "0"], serve_env(tmp_path))
    assert out.returncode != 0
    assert "impossible" in out.stdout
    assert f"there is no registry at {tmp_path / 'none'}" in out.stdout
    assert "Traceback" not in out.stderr


def test_port_in_use_names_the_port(small):
    registry, env = small
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run(["registry-serve", "-d", str(registry), "--port",
                    str(port)], env)
    assert out.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in out.stdout
    assert "Traceback" not in out.stderr


def test_without_the_serve_extra(small):
    registry, env = small
    # an interpreter in which fastapi cannot be imported (None in
    # sys.modules makes "import fastapi" fail, as when it is not installed)
    code = (
        "import sys, json\n"
        "sys.modules['fastapi'] = None\n"
        "from datalad.api import registry_serve\n"
        f"res = registry_serve(dataset={str(registry)!r}, port=0,\n"
        "    on_failure='ignore', return_type='list',\n"
        "    result_renderer='disabled')\n"
        "print(json.dumps([[r['status'], r['message']] for r in res]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    [[status, message]] = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "impossible"
    assert "pip install datalad-registry-ext[serve]" in message
    assert "fastapi" in message


def test_ids_are_stable_across_restarts(small):
    registry, env = small
    with ServerProcess(registry, env) as first:
        before = requests.get(first.api + "/dataset-urls", timeout=60,
                              params={"per_page": 100}).json()["dataset_urls"]
    with ServerProcess(registry, env) as second:
        for rec in before:
            assert rec["id"] == record_id(rec["source"], rec["url"])
            again = requests.get(f"{second.api}/dataset-urls/{rec['id']}",
                                 timeout=60)
            assert again.status_code == 200
            assert again.json()["url"] == rec["url"]
    assert len(before) == 30
