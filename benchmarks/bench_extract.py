"""Benchmark: in-process extraction vs. one ``datalad meta-extract`` per call.

Creates N small DataLad datasets (each with .datalad/meta.rfc822,
dataset_description.json, datacite.yml, datapackage.json, dandiset.yaml and
a small .studyminimeta.yaml) in a temporary directory, then measures for the
7 default extractors (``datalad_registry_ext.config.DEFAULT_EXTRACTORS``):

- ``extract_dataset`` per dataset, in this process (1 worker);
- ``extract_many(..., jobs=2)`` (2 threads);
- the baseline: ``datalad meta-extract -d DS NAME`` as a separate process
  per dataset and extractor (the shell-script way).

Usage: python benchmarks/bench_extract.py [--n 50] [--baseline-n N]

Runs with an isolated git identity (GIT_AUTHOR_NAME etc.) and HOME in the
temporary directory; nothing outside it is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = {
    ".datalad/meta.rfc822": "Name: bench-{i}\nLicense: CC0-1.0\n"
                            "DOI: 10.5281/zenodo.{i}\n",
    "dataset_description.json": json.dumps(
        {"Name": "bench {i}", "BIDSVersion": "1.6.0",
         "Authors": ["A B"]}),
    "participants.tsv": "participant_id\tage\nsub-01\t30\n",
    "sub-01/anat/sub-01_T1w.nii.gz": "x",
    "datacite.yml": "title: bench {i}\ndescription: d\nauthors:\n"
                    "  - firstname: A\n    lastname: B\n",
    "datapackage.json": json.dumps({"name": "bench-{i}", "title": "t"}),
    "dandiset.yaml": "name: bench-{i}\nidentifier: DANDI:{i}\n",
    ".studyminimeta.yaml": "study:\n  name: s{i}\n  principal_investigator: "
                           "a@example.com\ndataset:\n  name: d{i}\n"
                           "  location: http://example.com\n  author: "
                           "[a@example.com]\nperson:\n  a@example.com:\n"
                           "    given_name: A\n    last_name: B\n",
}


def isolate(tmp: Path) -> None:
    home = tmp / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Bench Mark\n\temail = bench@example.com\n")
    os.environ.update(
        HOME=str(home), GIT_CONFIG_GLOBAL=str(home / ".gitconfig"),
        GIT_AUTHOR_NAME="Bench Mark", GIT_AUTHOR_EMAIL="bench@example.com",
        GIT_COMMITTER_NAME="Bench Mark",
        GIT_COMMITTER_EMAIL="bench@example.com",
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_DATA_HOME=str(home / ".local/share"),
        DATALAD_LOG_LEVEL="WARNING")


def make_datasets(root: Path, n: int) -> list[str]:
    from datalad.api import create
    paths = []
    for i in range(n):
        path = root / f"ds{i:03d}"
        ds = create(str(path), cfg_proc="text2git",
                    result_renderer="disabled")
        for rel, content in FILES.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content.replace("{i}", str(i)))
        ds.save(result_renderer="disabled", message="metadata")
        paths.append(str(path))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50,
                        help="number of datasets (default 50)")
    parser.add_argument("--baseline-n", type=int, default=None,
                        help="datasets for the subprocess baseline "
                             "(default: all)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary datasets")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    isolate(tmp)
    try:
        return run(args, tmp)
    finally:
        if not args.keep:
            from datalad.utils import rmtree
            rmtree(str(tmp))


def run(args, tmp: Path) -> int:
    from datalad_registry_ext.config import DEFAULT_EXTRACTORS
    from datalad_registry_ext.extraction import extract_dataset, extract_many

    names = list(DEFAULT_EXTRACTORS)
    t0 = time.perf_counter()
    paths = make_datasets(tmp / "datasets", args.n)
    print(f"{args.n} datasets created in {time.perf_counter() - t0:.1f} s "
          f"({tmp})")

    # warm up imports and caches (not timed)
    warm = extract_dataset(paths[0], names)
    bad = [o for o in warm if o["status"] != "ok"]
    if bad:
        print("unexpected outcomes:", bad, file=sys.stderr)
        return 1

    per_ds = []
    t0 = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        outcomes = extract_dataset(p, names)
        per_ds.append(time.perf_counter() - t)
        assert all(o["status"] == "ok" for o in outcomes), outcomes
    total1 = time.perf_counter() - t0

    t0 = time.perf_counter()
    results = extract_many(paths, names, jobs=2)
    total2 = time.perf_counter() - t0
    assert all(o["status"] == "ok" for r in results for o in r)

    base_paths = paths[:args.baseline_n or len(paths)]
    base = []
    for p in base_paths:
        t = time.perf_counter()
        for name in names:
            proc = subprocess.run(
                ["datalad", "meta-extract", "-d", p, name],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if proc.returncode:
                print(f"baseline failed: {name} on {p}", file=sys.stderr)
                return 1
        base.append(time.perf_counter() - t)

    med1 = statistics.median(per_ds)
    med_base = statistics.median(base)
    eff2 = total2 / len(paths)
    print(f"extractors: {' '.join(names)}")
    print(f"in process, 1 worker : median {med1 * 1000:7.1f} ms/dataset, "
          f"total {total1:6.2f} s for {len(paths)}")
    print(f"in process, 2 workers: mean   {eff2 * 1000:7.1f} ms/dataset, "
          f"total {total2:6.2f} s for {len(paths)}")
    print(f"baseline (1 process per dataset x extractor): median "
          f"{med_base * 1000:7.1f} ms/dataset, total {sum(base):6.2f} s for "
          f"{len(base)}")
    print(f"speed-up vs baseline: 1 worker {med_base / med1:5.1f}x, "
          f"2 workers {med_base / eff2:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
