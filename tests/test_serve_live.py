"""A running server follows its registry: records synced by another process
show in the next response, without a restart; and while the index changes
under load, every response is of one state (its count, its statistics and
its page agree)."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from benchmarks.generate import write_jsonl

from .test_serve_api import ServerProcess, serve_env, sync

pytest.importorskip("fastapi")


def _check(body: dict, per_page: int) -> int:
    """The total of a response, after checking that its parts agree."""
    stats = body["collection_stats"]
    total = stats["summary"]["ds_count"]
    assert len(body["dataset_urls"]) == min(per_page, total)
    assert stats["datalad_ds_stats"]["stats"]["ds_count"] <= total
    pages = -(-total // per_page) or 1
    assert body["last_pg"].endswith(f"page={pages}")
    return total


def test_syncs_show_without_restart(tmp_path, bench_file, bench_records):
    env = serve_env(tmp_path)
    registry = tmp_path / "registry"
    sync(registry, bench_file, env)
    extra = tmp_path / "extra.jsonl"
    write_jsonl(extra, 300, seed=11)
    n = len(bench_records)

    with ServerProcess(registry, env) as server:
        seen, errors, stop = set(), [], threading.Event()

        def hammer(params):
            with requests.Session() as s:
                while not stop.is_set():
                    try:
                        r = s.get(server.api + "/dataset-urls", params=params,
                                  timeout=60)
                        assert r.status_code == 200, r.text
                        seen.add(_check(r.json(), 20))
                    except Exception as e:  # reported below
                        errors.append(repr(e))
                        return

        threads = [threading.Thread(target=hammer, args=(p,)) for p in
                   ({"per_page": 20},
                    {"per_page": 20, "order_by": "url", "order_dir": "asc"})]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            sync(registry, extra, env)
            # the very next request sees the new source
            body = requests.get(server.api + "/dataset-urls",
                                timeout=60).json()
            assert _check(body, 20) == n + 300
            # importing the source again with fewer records replaces them
            write_jsonl(extra, 120, seed=11)
            sync(registry, extra, env)
            body = requests.get(server.api + "/dataset-urls",
                                timeout=60).json()
            assert _check(body, 20) == n + 120
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[:3]
        # every response was one of the three states
        assert seen <= {n, n + 300, n + 120} and n in seen and n + 120 in seen
        assert server.proc.poll() is None
    assert "Traceback" not in server.log.read_text()
