#!/usr/bin/env python3
"""The search path as a user meets it: import, then cold command-line searches.

- import: ``datalad registry-sync FILE``: wall time and peak RSS (targets,
  issue 7: <= 10 s and <= 400 MB at 13k records; <= 120 s at 130k);
- cold search: ``datalad registry-search QUERY``, a new process each time,
  against ``datalad --version`` measured in the same run (targets: ``haxby``
  <= 2.5x the baseline and <= 100 MB at 13k; <= 1 s and <= 150 MB at 130k).

    python benchmarks/bench_search_cli.py [--records N | --data FILE] [--repeat N]

Runs with its own temporary XDG dirs: your real index is not touched.
"""
from __future__ import annotations

import argparse
import statistics
import sys

from _common import QUERIES, add_data_arguments, data_file, run_process, workspace


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(ap)
    args = ap.parse_args(argv)
    with workspace("bench-search-cli-") as (tmp, env):
        path = data_file(args, tmp)
        registry = str(tmp / "registry")
        wall, rss = run_process(["datalad", "registry-sync", "-d", registry,
                                 str(path)], env)
        print(f"import: {wall:.2f} s, peak RSS {rss:.0f} MiB")
        runs = [run_process(["datalad", "--version"], env)
                for _ in range(args.repeat)]
        base = statistics.median(w for w, _ in runs)
        print(f"`datalad --version`: median {base:.3f} s, "
              f"peak RSS {max(r for _, r in runs):.0f} MiB\n")
        print(f"{'query':<50} {'median s':>9} {'ratio':>6} {'RSS MiB':>8}")
        for q in QUERIES:
            runs = [run_process(["datalad", "registry-search", "-d", registry,
                                 q], env) for _ in range(args.repeat)]
            med = statistics.median(w for w, _ in runs)
            print(f"{q:<50} {med:9.3f} {med / base:6.2f} "
                  f"{max(r for _, r in runs):8.0f}")


if __name__ == "__main__":
    sys.exit(main())
