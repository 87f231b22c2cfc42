"""Benchmark registry-submit.

1. Submitting N (100) small local DataLad datasets: seconds per dataset,
   against ``datalad clone`` of the same datasets, measured in the same run.
   Target: our total <= 1.5 x clone alone.
2. Registering M (2,000) repositories in batches of B (200) into one
   registry: the time per batch must not grow with the registry's size.

Run:  python benchmarks/bench_submit.py [--n 100] [--m 2000] [--batch 200]

Everything happens in a temporary directory with its own HOME, XDG dirs and
git identity; nothing touches your real registry or caches.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def isolate(root: Path) -> None:
    home = root / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench\n\temail = bench@example.com\n"
        "[init]\n\tdefaultBranch = main\n")
    os.environ.update(
        HOME=str(home), GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        XDG_DATA_HOME=str(root / "data"), XDG_CACHE_HOME=str(root / "cache"),
        XDG_CONFIG_HOME=str(root / "config"))


def make_datasets(root: Path, n: int, annex: bool) -> list[Path]:
    """n small datasets: one made with DataLad, the others copies of it."""
    from datalad.api import create
    template = root / "template"
    ds = create(str(template), annex=annex, result_renderer="disabled")
    (template / "data.bin").write_bytes(os.urandom(2048))
    (template / "notes.txt").write_text("notes\n")
    ds.save(message="content", result_renderer="disabled")
    paths = []
    for i in range(n):
        p = root / f"ds{i:04d}"
        shutil.copytree(template, p, symlinks=True)
        paths.append(p)
    return paths


def bench_vs_clone(root: Path, n: int, rounds: int) -> None:
    from datalad.api import clone
    from datalad_registry_ext.registration import register, resolve_input
    from datalad_registry_ext.registry import ensure_registry

    datasets = make_datasets(root / "src", n, annex=True)
    clone_totals, ours_totals, ours_per_ds = [], [], []
    for r in range(rounds):
        dest = root / f"clones{r}"
        t0 = time.perf_counter()
        for p in datasets:
            clone(source=str(p), path=str(dest / p.name),
                  result_renderer="disabled")
        clone_totals.append(time.perf_counter() - t0)
        shutil.rmtree(dest)

        registry = ensure_registry(root / f"registry{r}")
        stamps = []
        t0 = time.perf_counter()
        outcomes = list(register(
            registry, [resolve_input(str(p)) for p in datasets],
            progress=lambda done, total: stamps.append(time.perf_counter())))
        ours_totals.append(time.perf_counter() - t0)
        assert all(o["status"] == "ok" for o in outcomes), outcomes[:3]
        ours_per_ds += [b - a for a, b in zip([t0] + stamps, stamps)]
        shutil.rmtree(Path(os.environ["XDG_CACHE_HOME"]), ignore_errors=True)

    clone_med = statistics.median(clone_totals)
    ours_med = statistics.median(ours_totals)
    print(f"\n== registry-submit of {n} small local datasets "
          f"({rounds} rounds, medians)")
    print(f"datalad clone, total      {clone_med:8.2f} s   "
          f"{clone_med / n * 1000:7.1f} ms/dataset")
    print(f"registry-submit, total    {ours_med:8.2f} s   "
          f"{ours_med / n * 1000:7.1f} ms/dataset "
          f"(median per dataset {statistics.median(ours_per_ds) * 1000:.1f} ms)")
    print(f"ratio submit/clone        {ours_med / clone_med:8.2f}   (target <= 1.5)")


def bench_batches(root: Path, m: int, batch: int, jobs: int) -> None:
    from datalad_registry_ext.registration import register, resolve_input
    from datalad_registry_ext.registry import ensure_registry

    src = root / "plain"
    src.mkdir()
    template = src / "template"
    template.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=template, check=True)
    (template / "README").write_text("x\n")
    subprocess.run(["git", "add", "."], cwd=template, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "init"], cwd=template,
                   check=True)
    repos = []
    for i in range(m):
        p = src / f"org{i // 100:03d}" / f"repo{i:05d}"
        shutil.copytree(template, p, symlinks=True)
        repos.append(p)
    registry = ensure_registry(root / "big-registry")
    times = []
    print(f"\n== registering {m} repositories in batches of {batch} "
          f"(-J {jobs})")
    for b in range(0, m, batch):
        chunk = [resolve_input(str(p)) for p in repos[b:b + batch]]
        t0 = time.perf_counter()
        outcomes = list(register(registry, chunk, jobs=jobs))
        times.append(time.perf_counter() - t0)
        assert all(o["status"] == "ok" for o in outcomes)
        print(f"batch {b // batch + 1:3d}: registry size {b:5d} -> "
              f"{b + len(chunk):5d}: {times[-1]:7.2f} s "
              f"({times[-1] / len(chunk) * 1000:.1f} ms/repo)")
    print(f"last/first batch ratio    {times[-1] / times[0]:8.2f}   "
          "(target: ~1, no growth with registry size)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--m", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("-J", "--jobs", type=int, default=2)
    ap.add_argument("--skip-batches", action="store_true")
    ap.add_argument("--skip-clone", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        root = Path(tmp)
        isolate(root)
        if not args.skip_clone:
            bench_vs_clone(root, args.n, args.rounds)
        if not args.skip_batches:
            bench_batches(root, args.m, args.batch, args.jobs)


if __name__ == "__main__":
    sys.exit(main())
