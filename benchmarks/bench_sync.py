#!/usr/bin/env python3
"""registry-sync of a service: full, unchanged and 100 records changed.

A primary registry with generated records (13,000 by default, imported
from a JSON Lines file) is served by a real ``datalad registry-serve``
process; a mirror syncs it with the ``datalad registry-sync`` command line,
each sync a process of its own, whose wall time and peak RSS (``wait4``) are
measured. Medians of ``--repeat`` runs:

1. full sync into an empty mirror (targets: <= 15 s, <= 400 MB);
2. a second sync with nothing changed (target: <= 1 s): one conditional
   request answered 304; also timed through the Python API in this process
   (no interpreter start-up);
3. a sync after 100 records changed on the primary (target: <= 2 s): the
   digests, the 100 records, a patch of the mirror's search database. Each
   run syncs another mirror as its full sync left it (m0, m1, ...): the
   first patch of a mirror, what a user meets first; then, apart, as many
   runs that patch one mirror again and again (100 more records each).

Same-run baselines: importing the same records from the local JSON Lines
file (``registry-sync FILE``), a plain download of ``/all`` with
``requests``, and the start-up of ``datalad`` (``datalad --version``) that
every command-line run pays.

    python benchmarks/bench_sync.py [--records N | --data FILE] [--repeat N]
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time

from _common import add_data_arguments, data_file, workspace
from bench_serve import start_server

# Peak RSS through a small launcher process: a child's ru_maxrss starts at
# its parent's RSS at fork (the mm it replaces at exec counts), so a
# command forked from this process, which holds the records, would report
# this process's size. The launcher is small when it forks the command.
LAUNCHER = """
import os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE)
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - t0
if os.waitstatus_to_exitcode(status):
    sys.exit(proc.stderr.read().decode()[-2000:])
print(wall, usage.ru_maxrss / 1024)
"""


def run_process(cmd, env) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one command."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed: {proc.stderr}")
    wall, rss = proc.stdout.split()
    return float(wall), float(rss)


def read_records(path) -> list[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_records(path, records) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def change(records: list[dict], k: int, round_: int) -> list[dict]:
    """A copy with ``k`` records changed (a fact and a metadata record)."""
    out = copy.deepcopy(records)
    for rec in random.Random(round_).sample(out, k):
        rec["annex_key_count"] = (rec.get("annex_key_count") or 0) + 1
        rec["metadata"] = (rec.get("metadata") or []) + [
            {"extractor_name": "bench_changed",
             "extracted_metadata": {"round": round_}}]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_arguments(ap)
    ap.set_defaults(repeat=3)
    ap.add_argument("--changed", type=int, default=100)
    args = ap.parse_args(argv)

    import requests
    with workspace("bench-sync-") as (tmp, env):
        data = data_file(args, tmp)
        records = read_records(data)
        plain = tmp / "primary.jsonl"
        write_records(plain, records)
        n = len(records)
        primary = str(tmp / "primary")
        wall, rss = run_process(["datalad", "registry-sync", "-d", primary,
                                 str(plain), "--name", "data"], env)
        print(f"primary: {n} records imported in {wall:.1f} s")

        # -- baselines ---------------------------------------------------------
        startup = statistics.median(
            run_process(["datalad", "--version"], env)[0] for _ in range(3))
        local = [run_process(["datalad", "registry-sync", "-d",
                              str(tmp / f"local{i}"), str(plain)], env)
                 for i in range(args.repeat)]
        proc, url = start_server(primary, env)
        try:
            downloads = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                r = requests.get(url + "api/v2/dataset-urls/all",
                                 params={"return_metadata": "true"})
                size = len(r.content)
                downloads.append(time.perf_counter() - t0)

            # -- 1. full syncs ---------------------------------------------------
            full = []
            for i in range(args.repeat):
                full.append(run_process(
                    ["datalad", "registry-sync", "-d", str(tmp / f"m{i}"),
                     url, "--name", "primary"], env))
            mirror = str(tmp / "m0")

            # -- 2. nothing changed --------------------------------------------
            unchanged = [run_process(["datalad", "registry-sync", "-d",
                                      mirror, "primary"], env)
                         for _ in range(max(args.repeat, 5))]
            os.environ.update({k: env[k] for k in (
                "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME")})
            from datalad.api import registry_sync
            in_process = []
            for _ in range(max(args.repeat, 5)):
                t0 = time.perf_counter()
                (res,) = registry_sync("primary", dataset=mirror,
                                       result_renderer="disabled",
                                       return_type="list")
                in_process.append(time.perf_counter() - t0)
                assert res["status"] == "notneeded", res

            # -- 3. records changed --------------------------------------------
            def primary_becomes(state):
                write_records(plain, state)
                reimport.append(run_process(
                    ["datalad", "registry-sync", "-d", primary, "data"],
                    env)[0])

            changed, later, reimport = [], [], []
            for i in range(args.repeat):
                # m<i> as its full sync left it, 100 records changed since
                primary_becomes(change(records, args.changed, i + 1))
                changed.append(run_process(
                    ["datalad", "registry-sync", "-d", str(tmp / f"m{i}"),
                     "primary"], env))
            mirror = str(tmp / f"m{args.repeat - 1}")
            state = change(records, args.changed, args.repeat)
            for i in range(args.repeat):
                # the same mirror again: 100 more records changed each time
                state = change(state, args.changed, 1000 + i)
                primary_becomes(state)
                later.append(run_process(["datalad", "registry-sync",
                                          "-d", mirror, "primary"], env))
            (res,) = registry_sync("primary", dataset=mirror,
                                   result_renderer="disabled",
                                   return_type="list")
            assert res["status"] == "notneeded", res
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)

    def med(runs, k=0):
        return statistics.median(r[k] for r in runs)

    print(f"\n{n} records, medians of {args.repeat} runs "
          f"(command-line runs include the start-up of datalad)")
    print(f"{'baseline: datalad --version':<46} {startup:7.2f} s")
    print(f"{'baseline: registry-sync of the local file':<46} "
          f"{med(local):7.2f} s  {max(r[1] for r in local):6.0f} MiB")
    print(f"{'baseline: GET /all (requests)':<46} "
          f"{statistics.median(downloads):7.2f} s  ({size / 1e6:.1f} MB)")
    print(f"{'full sync (target <= 15 s, <= 400 MB)':<46} {med(full):7.2f} s"
          f"  {max(r[1] for r in full):6.0f} MiB")
    print(f"{'unchanged, command line (target <= 1 s)':<46} "
          f"{med(unchanged):7.2f} s  {max(r[1] for r in unchanged):6.0f} MiB")
    print(f"{'unchanged, Python API in process':<46} "
          f"{statistics.median(in_process):7.3f} s")
    print(f"{f'{args.changed} changed, command line (target <= 2 s)':<46} "
          f"{med(changed):7.2f} s  {max(r[1] for r in changed):6.0f} MiB"
          f"  ({', '.join(f'{r[0]:.2f}' for r in changed)})")
    print(f"{'  the same, a mirror patched before':<46} "
          f"{med(later):7.2f} s  {max(r[1] for r in later):6.0f} MiB"
          f"  ({', '.join(f'{r[0]:.2f}' for r in later)})")
    print(f"{'(re-import of the primary, not a sync)':<46} "
          f"{statistics.median(reimport):7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
