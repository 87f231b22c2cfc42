"""Benchmark registry-update.

N (1,000) real repositories (``git init`` + one commit each), registered in
one batch with ``registry-submit --no-extract``, reached over ``file://``
(or git's dumb HTTP on 127.0.0.1 with ``--http``). Measured in one run:

1. setup: making and registering the repositories (no target);
2. a plain parallel loop of ``git ls-remote`` over the same URLs, -J 8:
   the floor for any check;
3. ``registry-update -J 8`` with nothing changed. Targets: <= 60 s, and
   <= 1.5 x (2);
4. ``registry-update -J 8`` after new commits in 50 of them. Target:
   <= 120 s.

Run:  python benchmarks/bench_update.py [--repos 1000] [--changed 50]
      [--jobs 8] [--http]

Everything happens in a temporary directory with its own HOME, XDG dirs and
git identity; nothing touches your real registry or caches.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


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
    os.environ.pop("GIT_CONFIG_PARAMETERS", None)


def git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(path: Path) -> None:
    git("init", "-q", str(path))
    (path / "README").write_text(f"{path.name}\n")
    git("add", "README", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)


def bench(n: int, n_changed: int, jobs: int, http: bool) -> dict:
    from datalad_registry_ext import registration, updates
    figures = {"repos": n, "changed": n_changed, "jobs": jobs,
               "transport": "dumb HTTP" if http else "file://"}
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        root = Path(tmp)
        isolate(root)
        src = root / "repos"
        src.mkdir()
        t0 = time.perf_counter()
        paths = [src / f"r{i:05d}.git" if http else src / f"r{i:05d}"
                 for i in range(n)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(make_repo, paths))
        if http:
            for p in paths:
                git("update-server-info", cwd=p)
        figures["make_repos_s"] = round(time.perf_counter() - t0, 1)

        server = None
        if http:
            import functools
            import http.server
            import threading

            class Quiet(http.server.SimpleHTTPRequestHandler):
                def log_message(self, *a):
                    pass
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", 0),
                functools.partial(Quiet, directory=str(src)))
            threading.Thread(target=server.serve_forever, daemon=True).start()
            base = f"http://127.0.0.1:{server.server_address[1]}"
            # dumb HTTP reads the work tree's .git: serve it as <name>.git
            for p in paths:
                os.symlink(p / ".git", src / (p.name + ".dumb"))
            urls = [f"{base}/{p.name}.dumb" for p in paths]
        else:
            urls = [p.as_uri() for p in paths]

        registry = root / "registry"
        t0 = time.perf_counter()
        res = list(registration.submit(registry, urls, jobs=jobs,
                                       extract=False))
        bad = [r for r in res if r["status"] not in ("ok", "notneeded")]
        assert not bad, bad[:3]
        figures["register_s"] = round(time.perf_counter() - t0, 1)

        def ls_remote(url):
            return subprocess.run(["git", "ls-remote", "--symref", url,
                                   "HEAD", "refs/heads/*", "refs/tags/*"],
                                  capture_output=True).returncode

        def ls_remote_loop():
            t = time.perf_counter()
            with ThreadPoolExecutor(jobs) as pool:
                codes = list(pool.map(ls_remote, urls))
            assert not any(codes)
            return time.perf_counter() - t

        def run_update():
            t = time.perf_counter()
            out = list(updates.update(registry, jobs=jobs))
            return time.perf_counter() - t, [o for o in out
                                             if o.get("summary")][0]

        # the loop before and after the update, the faster counts: the
        # first pass over 1,000 repositories warms the page cache for both
        loop = ls_remote_loop()
        took, s = run_update()
        loop = min(loop, ls_remote_loop())
        assert (s["checked"], s["unchanged"]) == (n, n), s
        figures["ls_remote_loop_s"] = round(loop, 2)
        figures["update_unchanged_s"] = round(took, 2)
        figures["ratio_to_ls_remote"] = round(took / loop, 2)

        step = max(1, n // max(1, n_changed))
        for p in paths[::step][:n_changed]:
            git("commit", "-q", "--allow-empty", "-m", "more", cwd=p)
            if http:
                git("update-server-info", cwd=p)
        took, s = run_update()
        assert s["changed"] == n_changed, s
        figures["update_changed_s"] = round(took, 2)
        if server:
            server.shutdown()
    figures["targets_met"] = {
        "unchanged<=60s": figures["update_unchanged_s"] <= 60,
        "unchanged<=1.5x ls-remote": figures["ratio_to_ls_remote"] <= 1.5,
        "changed<=120s": figures["update_changed_s"] <= 120,
    }
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=1000)
    ap.add_argument("--changed", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--http", action="store_true",
                    help="reach the repositories over git's dumb HTTP on "
                         "127.0.0.1 instead of file://")
    args = ap.parse_args(argv)
    figures = bench(args.repos, min(args.changed, args.repos), args.jobs,
                    args.http)
    print(json.dumps(figures, indent=2))
    return 0 if all(figures["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
