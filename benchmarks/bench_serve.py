#!/usr/bin/env python3
"""registry-serve over loopback HTTP, against the in-process Python API.

A registry with generated records (13,000 by default) is served by a real
``datalad registry-serve`` process. Measured in the same run:

1. for each query, the median of ``GET /api/v2/dataset-urls?search=Q&
   per_page=20`` (with collection statistics, as upstream always answers)
   over one keep-alive connection, and of the same search through the
   Python API in this process (``search.search(..., limit=20,
   stats=True)``); targets (issue 10): <= 20 ms and <= 3x the Python API;
   by default both keep answers between requests (as a deployed server
   does: datalad.registry.result-cache); ``--no-cache`` measures every
   request computed afresh;
2. the overview page ``/overview/?query=haxby`` (target <= 50 ms; skipped
   when the pages module is absent);
3. a load phase: 16 concurrent clients (threads, one requests.Session
   each) for a bounded time sending a mix of those queries with pages and
   orders: requests, errors, p50/p99 latency, and the server's resident
   memory (VmRSS of /proc/<pid>/status, sampled).

    python benchmarks/bench_serve.py [--records N | --data FILE]
                                     [--repeat N] [--seconds S] [--clients N]
"""
from __future__ import annotations

import argparse
import os
import random
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time

from _common import add_data_arguments, data_file, median_time, workspace

QUERIES = ["haxby", "container", "NOT haxby", "url:github",
           'metadata[bids_dataset]:""']
ORDER_KEYS = ["url", "annex_key_count", "annexed_files_in_wt_count",
              "annexed_files_in_wt_size", "git_objects_kb", "last_update_dt"]


def start_server(registry: str, env: dict) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        ["datalad", "registry-serve", "-d", registry, "--port", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    m = re.search(r"(http://[^ ]+/)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"registry-serve did not start: {line!r}")
    return proc, m.group(1)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_phase(api: str, seconds: float, clients: int, pid: int) -> dict:
    import requests
    latencies, errors, lock = [], [], threading.Lock()
    rss = [rss_mib(pid)]
    stop = time.monotonic() + seconds

    def client(k: int):
        rng = random.Random(k)
        mine, bad = [], []
        with requests.Session() as s:
            while time.monotonic() < stop:
                params = {"search": rng.choice(QUERIES), "per_page": 20}
                kind = rng.random()
                if kind < 0.3:
                    params["page"] = rng.randint(1, 5)
                elif kind < 0.6:
                    params["order_by"] = rng.choice(ORDER_KEYS)
                    params["order_dir"] = rng.choice(["asc", "desc"])
                t0 = time.perf_counter()
                try:
                    r = s.get(api + "/dataset-urls", params=params, timeout=60)
                    ok = r.status_code == 200 or (
                        r.status_code == 404 and params.get("page", 1) > 1)
                except requests.RequestException as e:
                    ok, r = False, e
                mine.append(time.perf_counter() - t0)
                if not ok:
                    bad.append(getattr(r, "status_code", repr(r)))
        with lock:
            latencies.extend(mine)
            errors.extend(bad)

    threads = [threading.Thread(target=client, args=(k,))
               for k in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        rss.append(rss_mib(pid))
    wall = time.monotonic() - t0
    latencies.sort()
    return {
        "requests": len(latencies), "errors": len(errors),
        "error_kinds": sorted(set(map(str, errors)))[:5],
        "per_second": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]
        if latencies else 0,
        "rss_start": rss[0], "rss_max": max(rss), "rss_end": rss[-1],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(ap)
    ap.add_argument("--seconds", type=float, default=60,
                    help="length of the load phase (default 60)")
    ap.add_argument("--clients", type=int, default=16,
                    help="concurrent clients of the load phase (default 16)")
    ap.add_argument("--no-cache", action="store_true",
                    help="keep no answers between requests, in the server "
                    "and in this process (datalad.registry.result-cache=0): "
                    "what each first request of a query costs")
    args = ap.parse_args(argv)
    with workspace("bench-serve-") as (tmp, env):
        if args.no_cache:
            env = dict(env, DATALAD_REGISTRY_RESULT__CACHE="0")
        os.environ.update(env)  # before DataLad reads its configuration
        import requests
        from datalad.api import registry_sync

        from datalad_registry_ext import search
        path = data_file(args, tmp)
        registry = str(tmp / "registry")
        t0 = time.perf_counter()
        registry_sync(str(path), dataset=registry, result_renderer="disabled")
        print(f"import: {time.perf_counter() - t0:.2f} s")
        proc, url = start_server(registry, env)
        api = url + "api/v2"
        try:
            session = requests.Session()
            print(f"server at {url} (pid {proc.pid}), "
                  f"RSS {rss_mib(proc.pid):.0f} MiB\n")
            print(f"{'query':<32} {'HTTP ms':>8} {'API ms':>8} {'ratio':>6}"
                  f"  {'total':>6}")
            for q in QUERIES:
                params = {"search": q, "per_page": 20}

                def http():
                    r = session.get(api + "/dataset-urls", params=params,
                                    timeout=60)
                    assert r.status_code == 200, r.text
                    return r

                def python():
                    return search.search(registry, q, limit=20, stats=True)
                total = http().json()["collection_stats"]["summary"]["ds_count"]
                assert python().total == total
                h = median_time(http, args.repeat)
                p = median_time(python, args.repeat)
                flag = "" if h <= 0.020 and h <= 3 * p else "  (over target)"
                print(f"{q:<32} {h * 1000:8.2f} {p * 1000:8.2f} {h / p:6.2f}"
                      f"  {total:>6}{flag}")

            overview = session.get(url + "overview/",
                                   params={"query": "haxby"}, timeout=60)
            if overview.status_code == 404:
                print("\noverview page: skipped (no pages module)")
            else:
                assert overview.status_code == 200, overview.status_code
                t = median_time(lambda: session.get(
                    url + "overview/", params={"query": "haxby"},
                    timeout=60), args.repeat)
                flag = "" if t <= 0.050 else "  (over target)"
                print(f"\noverview /overview/?query=haxby: {t * 1000:.2f} ms"
                      f"{flag}")

            print(f"\nload: {args.clients} clients for {args.seconds:g} s ...")
            res = load_phase(api, args.seconds, args.clients, proc.pid)
            print(f"  {res['requests']} requests ({res['per_second']:.0f}/s), "
                  f"{res['errors']} errors {res['error_kinds'] or ''}")
            print(f"  latency p50 {res['p50_ms']:.1f} ms, "
                  f"p99 {res['p99_ms']:.1f} ms")
            print(f"  server RSS {res['rss_start']:.0f} MiB at start, "
                  f"{res['rss_max']:.0f} MiB peak, {res['rss_end']:.0f} MiB "
                  "at end")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
