#!/usr/bin/env python3
"""Benchmark the search path as a user meets it, on the 13k-record registry.

- import: ``datalad registry-sync FILE`` of the JSON Lines file (target <= 20 s);
- cold search: ``datalad registry-search QUERY`` wall time, a new process each
  time, against ``datalad --version`` measured in the same run (target for
  ``haxby``: <= 1.0 s);
- peak memory (max RSS) of those processes (target <= 600 MB).

Warm in-process query times are in ``bench_search.py``.

    python benchmarks/bench_search_cli.py [--data PATH] [--repeat N]

Runs with its own temporary XDG dirs: your real index is not touched.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "bench" / "registry-13k.jsonl.gz"
QUERIES = [
    "haxby", "container", "url:github", 'metadata[bids_dataset]:""',
    'metadata[bids_dataset]:"" AND NOT url:openneuro', "NOT haxby",
    "(url:github OR url:gin) AND haxby",
]


PEAKS = {}


def timed(cmd, env, label=None):
    """Wall time of one process; its max RSS (MiB) goes to PEAKS[label]."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed")
    label = label or cmd[1]
    PEAKS[label] = max(PEAKS.get(label, 0), usage.ru_maxrss / 1024)
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=f"{tmp}/cache",
                   XDG_DATA_HOME=f"{tmp}/data", XDG_CONFIG_HOME=f"{tmp}/config")
        registry = f"{tmp}/registry"
        t_import = timed(["datalad", "registry-sync", "-d", registry,
                          args.data], env)
        print(f"import of {Path(args.data).name}: {t_import:.2f} s "
              "(target <= 20 s; includes building the search cache)")
        version = [timed(["datalad", "--version"], env)
                   for _ in range(args.repeat)]
        base = statistics.median(version)
        print(f"\n`datalad --version`: median {base:.3f} s")
        print(f"{'query':<50} {'median s':>9} {'ratio':>7}")
        for q in QUERIES:
            times = [timed(["datalad", "registry-search", "-d", registry, q],
                           env, "registry-search") for _ in range(args.repeat)]
            med = statistics.median(times)
            print(f"{q:<50} {med:9.3f} {med / base:7.2f}")
        print("\npeak memory (max RSS) per command (target <= 600 MB):")
        for label, mib in PEAKS.items():
            print(f"  {label:<16} {mib:6.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())
