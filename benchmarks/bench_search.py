#!/usr/bin/env python3
"""Benchmark warm in-process searches against a physical baseline.

The baseline is the least any substring search over the records must do:
a plain Python loop testing ``term in text`` over each record's
pre-lowercased whole-record JSON text, held in memory (one scan per query,
with the query's main word as ``term``). For each query this prints the
median warm time of the baseline and of ``SearchView.search`` (without the
leaf-result cache, i.e. every term is scanned again, and with it), their
ratio, plus the SearchView build time and peak memory.

    python benchmarks/bench_search.py [--data PATH] [--repeat N]
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import marshal
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datalad_registry_ext.query import SearchView  # noqa: E402

# query -> the word the baseline scans for
QUERIES = {
    "haxby": "haxby",
    "container": "container",
    "url:github": "github",
    'metadata[bids_dataset]:""': "bids_dataset",
    'metadata[bids_dataset]:"" AND NOT url:openneuro': "bids_dataset",
    "NOT haxby": "haxby",
    "(url:github OR url:gin) AND haxby": "haxby",
}


def load(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(
        Path(__file__).resolve().parents[2] / "shared" / "bench"
        / "registry-13k.jsonl.gz"))
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    records = load(args.data)
    print(f"records: {len(records)} from {args.data} "
          f"(loaded in {time.perf_counter() - t0:.2f} s)")
    rss_records = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc.collect()
    t0 = time.perf_counter()
    view = SearchView(records, cache_size=0)
    print(f"SearchView build: {time.perf_counter() - t0:.2f} s")
    rss_view = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS: {rss_records / 1024:.0f} MiB after loading the records, "
          f"{rss_view / 1024:.0f} MiB after building the view")

    tracemalloc.start()
    traced = SearchView(records, cache_size=0)
    size, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    print(f"SearchView data (tracemalloc): {size / 2**20:.0f} MiB, "
          f"{peak / 2**20:.0f} MiB peak while building")

    texts = [json.dumps(r).lower() for r in records]
    print(f"baseline texts: {sum(map(len, texts)) / 1e6:.1f} M characters")

    state = view.to_state()
    blob = marshal.dumps(state)
    t0 = time.perf_counter()
    restored = SearchView.from_state(marshal.loads(blob))
    print(f"state: {len(blob) / 2**20:.0f} MiB marshalled; marshal.loads + "
          f"from_state in {time.perf_counter() - t0:.3f} s")
    del blob
    cached = SearchView.from_state(state, records=records, cache_size=64)

    print()
    print(f"{'query':52} {'n':>6} {'baseline':>9} {'search':>9} {'ratio':>6}"
          f" {'cached':>9}")
    worst = 0.0
    for query, word in QUERIES.items():
        def baseline(word=word):
            return [i for i, t in enumerate(texts) if word in t]

        result = view.search(query)
        assert restored.search(query) == result
        base = median_time(baseline, args.repeat)
        ours = median_time(lambda: view.search(query), args.repeat)
        cached.search(query)
        warm = median_time(lambda: cached.search(query), args.repeat)
        ratio = ours / base
        worst = max(worst, ratio)
        print(f"{query:52} {len(result):6d} {base * 1e3:7.2f}ms "
              f"{ours * 1e3:7.2f}ms {ratio:6.2f} {warm * 1e3:7.2f}ms")
    print()
    print(f"worst ratio (uncached search / baseline): {worst:.2f} "
          f"(target <= 2)")


if __name__ == "__main__":
    main()
