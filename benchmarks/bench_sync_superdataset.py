"""Benchmark registry-sync of a registry superdataset (issue 11).

A primary registry of N (2,000) entries is built from generated records
(benchmarks/generate.py) with the extension's own code paths: the entries
and their facts with ``registry.commit_entries`` (gitlinks to generated
commits, which a registry never needs to have), the metadata of DataLad
datasets in metalad's store with ``aggregate.add_aggregated`` and that of
plain git repositories with ``registry.commit_plain_metadata``. It is
published to a bare repository (``+refs/datalad/*`` included) and synced
from it by ``file://`` URL:

1. first sync into a new replica: target <= 10 s; baseline: ``git clone
   --mirror`` of the same bare repository (all refs, metadata included);
2. a sync with nothing changed: target <= 1 s; baseline: ``git fetch`` of
   the mirror (nothing to fetch);
3. a sync after one new entry with metadata (for information): the
   incremental path.

Medians of --repeat runs, through the Python API in one process (as a
long-running caller would; the command line adds DataLad's start-up).

Run:  python benchmarks/bench_sync_superdataset.py [--n 2000] [--repeat 5]

Everything happens in a temporary directory with its own HOME, XDG dirs and
git identity; nothing touches your real registry or caches.
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_submit import isolate  # noqa: E402


def git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _metalad_record(rec: dict, entry: dict) -> dict:
    return {
        "type": "dataset", "extractor_name": entry["extractor_name"],
        "extractor_version": entry.get("extractor_version") or "0",
        "extraction_parameter": {}, "extraction_time": time.time(),
        "agent_name": "Bench", "agent_email": "bench@example.com",
        "dataset_id": rec["ds_id"], "dataset_version": rec["head"],
        "extracted_metadata": entry.get("extracted_metadata") or {},
    }


def add_entries(primary: Path, generated: list[dict]) -> None:
    """Register generated records in the registry ``primary``, with their
    metadata, as registry-submit would store them."""
    from datalad_registry_ext import aggregate
    from datalad_registry_ext import registry as reg
    from datalad_registry_ext.records import registry_path_for_url
    head = reg.head_commit(primary)
    entries = reg.read_entries(primary, head) if head else {}
    records = []
    for rec in generated:
        path = reg.allocate_path(registry_path_for_url(rec["url"]),
                                 rec["url"], entries)
        entry = {k: v for k, v in rec.items() if k not in ("metadata", "id")}
        entry["registry_path"] = path
        # a gitlink needs a commit; a registry never needs to have it
        entry["head"] = entry.get("head") or hashlib.sha1(
            rec["url"].encode()).hexdigest()
        entries[path] = entry
        records.append((path, rec, entry))
    with reg.locked(primary):
        reg.commit_entries(primary, [e for _, _, e in records],
                           f"[registry] Register {len(records)}")
        plain = {path: {m["extractor_name"]: dict(m) for m in rec["metadata"]}
                 for path, rec, _ in records
                 if not rec.get("ds_id") and rec.get("metadata")}
        if plain:
            reg.commit_plain_metadata(primary, plain)
    metalad = [{"dataset_path": path, "record": _metalad_record(entry, m)}
               for path, rec, entry in records if rec.get("ds_id")
               for m in rec["metadata"]]
    if metalad:
        bad = [r for r in aggregate.add_aggregated(primary, metalad)
               if r["status"] != "ok"]
        if bad:
            raise SystemExit(f"add_aggregated failed: {bad[:3]}")


def publish(primary: Path, bare: Path) -> None:
    if not bare.exists():
        git("init", "-q", "--bare", str(bare))
        git("symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)
    git("push", "-q", "--force", str(bare), "HEAD:refs/heads/main",
        "+refs/datalad/*:refs/datalad/*", cwd=primary)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sync-sd-") as tmp:
        root = Path(tmp)
        isolate(root)
        from datalad.api import registry_sync

        from benchmarks.generate import generate_records
        from datalad_registry_ext.registry import ensure_registry

        generated = list(generate_records(args.n + 1))
        primary = ensure_registry(root / "primary")
        t0 = time.perf_counter()
        add_entries(primary, generated[:args.n])
        print(f"built a primary of {args.n} entries in "
              f"{time.perf_counter() - t0:.1f} s")
        bare = root / "primary.git"
        publish(primary, bare)
        url = bare.as_uri()

        def sync(replica, source):
            res = registry_sync(source, dataset=str(replica),
                                result_renderer="disabled",
                                return_type="list", on_failure="stop")
            return [r for r in res if r["action"] == "registry_sync"][-1]

        # 1. first sync, each into a new (already created) replica
        replicas = [ensure_registry(root / f"replica{i}")
                    for i in range(args.repeat)]
        first, clone = [], []
        for i, replica in enumerate(replicas):
            res = {}
            first.append(timed(lambda: res.update(sync(replica, url))))
            assert res["status"] == "ok" and res["imported"] == args.n, res
            clone.append(timed(lambda: git(
                "clone", "-q", "--mirror", url, str(root / f"mirror{i}"))))
        # 2. nothing changed
        unchanged, fetch = [], []
        for _ in range(args.repeat):
            res = {}
            unchanged.append(timed(lambda: res.update(
                sync(replicas[0], url))))
            assert res["status"] == "notneeded", res
            fetch.append(timed(lambda: git("fetch", "-q", "origin",
                                           cwd=root / "mirror0")))
        # 3. one new entry with metadata
        add_entries(primary, generated[args.n:])
        publish(primary, bare)
        res = {}
        changed = timed(lambda: res.update(sync(replicas[0], url)))
        assert res["status"] == "ok" and res["added"] == 1, res

    med = statistics.median
    print(f"first sync of {args.n} entries:   {med(first):6.2f} s "
          f"(target <= 10 s)   baseline git clone --mirror: "
          f"{med(clone):5.2f} s")
    print(f"unchanged sync:              {med(unchanged):6.2f} s "
          f"(target <= 1 s)    baseline git fetch (nothing new): "
          f"{med(fetch):5.2f} s")
    print(f"sync after 1 new entry:      {changed:6.2f} s "
          f"({res['how']}, {res['read']} record read, "
          f"{res['unchanged']} unchanged)")


if __name__ == "__main__":
    main()
