#!/usr/bin/env python3
"""Warm in-process searches through the Python API, against a plain scan.

For each query, the median time of ``datalad.api.registry_search(q,
limit=20)`` on a registry whose index holds the records (the engine stays
open between calls, as in any long-running process), and of the baseline
measured in the same run: a plain Python loop testing ``word in text`` over
every record's lowercased JSON text held in memory (the least any substring
search over the records must do without an index). Targets (issue 7): each
query <= 10 ms median at 13k records, <= 50 ms at 130k, and faster than the
baseline.

    python benchmarks/bench_search.py [--records N | --data FILE] [--repeat N]
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
import time

from _common import QUERIES, add_data_arguments, data_file, median_time, workspace

# query -> the word the baseline scans for
BASELINE_WORD = {q: w for q, w in zip(QUERIES, [
    "haxby", "container", "haxby", "github", "bids_dataset", "bids_dataset",
    "haxby"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(ap)
    args = ap.parse_args(argv)
    with workspace("bench-search-") as (tmp, env):
        os.environ.update(env)  # before DataLad reads its configuration
        from datalad.api import registry_search, registry_sync

        from datalad_registry_ext import search
        # the engine's own work: no answer is kept between the repeats
        search.RESULT_CACHE_SIZE = 0
        path = data_file(args, tmp)
        registry = str(tmp / "registry")
        t0 = time.perf_counter()
        registry_sync(str(path), dataset=registry, result_renderer="disabled")
        print(f"import: {time.perf_counter() - t0:.2f} s")
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            texts = [line.lower() for line in f if line.strip()]
        print(f"{len(texts)} records\n")
        print(f"{'query':<50} {'scan ms':>8} {'API ms':>8} {'ratio':>6}")
        for q in QUERIES:
            word = BASELINE_WORD[q]

            def call():
                return registry_search(q, dataset=registry, limit=20,
                                       result_renderer="disabled",
                                       return_type="list")
            call()  # warm: the engine is opened once per process
            api = median_time(call, args.repeat)
            scan = median_time(lambda: [t for t in texts if word in t],
                               args.repeat)
            print(f"{q:<50} {scan * 1000:8.2f} {api * 1000:8.2f} "
                  f"{api / scan:6.2f}")


if __name__ == "__main__":
    sys.exit(main())
