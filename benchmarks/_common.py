"""What the benchmarks share: test data, isolated user dirs, timing."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.generate import write_jsonl  # noqa: E402

# the queries issue 7 sets targets for, and a few more
QUERIES = [
    "haxby", "container", "NOT haxby", "url:github",
    'metadata[bids_dataset]:""',
    'metadata[bids_dataset]:"" AND NOT url:openneuro',
    "(url:github OR url:gin) AND haxby",
]


def add_data_arguments(ap) -> None:
    ap.add_argument("--records", type=int, default=13_000,
                    help="how many records to generate (default 13,000)")
    ap.add_argument("--data", help="a JSON Lines file to use instead of "
                                   "generated records (e.g. a real export)")
    ap.add_argument("--repeat", type=int, default=7)


@contextmanager
def workspace(prefix: str):
    """A temporary directory and an environment whose XDG dirs point into
    it: a benchmark never touches your real index or registry."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        env = dict(os.environ, XDG_CACHE_HOME=f"{tmp}/cache",
                   XDG_DATA_HOME=f"{tmp}/data",
                   XDG_CONFIG_HOME=f"{tmp}/config")
        env.pop("DATALAD_REGISTRY_DATASET", None)
        yield Path(tmp), env


def data_file(args, tmp: Path) -> Path:
    if args.data:
        return Path(args.data)
    path = tmp / f"generated-{args.records}.jsonl.gz"
    t0 = time.perf_counter()
    write_jsonl(path, args.records)
    print(f"generated {args.records} records in "
          f"{time.perf_counter() - t0:.1f} s ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_process(cmd, env) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024
