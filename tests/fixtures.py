"""Real repositories for the tests: DataLad datasets, plain git, HTTP."""
from __future__ import annotations

import functools
import http.server
import subprocess
import threading
from pathlib import Path

from datalad.api import create

# the shared benchmark data lives beside the checkout (../shared/bench)
BENCH_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench"


def run(*args, cwd=None, check=True) -> str:
    return subprocess.run(args, cwd=cwd, check=check, capture_output=True,
                          text=True).stdout


def make_dataset(path: Path, files: dict[str, str] | None = None,
                 annex: bool = True, subdatasets=(), tag=None):
    """A real DataLad dataset with (annexed) files, saved."""
    ds = create(path=str(path), annex=annex, result_renderer="disabled")
    for name, content in (files or {}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for sub in subdatasets:
        ds.create(sub, result_renderer="disabled")
    ds.save(message="add content", result_renderer="disabled")
    if tag:
        run("git", "tag", "-a", "-m", tag, tag, cwd=path)
    return ds


def make_git_repo(path: Path, files: dict[str, str] | None = None,
                  bare_copy: Path | None = None) -> Path:
    """A plain git repository (no annex, no DataLad id) with one commit."""
    path.mkdir(parents=True)
    run("git", "init", "-q", cwd=path)
    for name, content in (files or {"README": "plain"}).items():
        (path / name).write_text(content)
    run("git", "add", ".", cwd=path)
    run("git", "commit", "-q", "-m", "initial", cwd=path)
    if bare_copy:
        run("git", "clone", "-q", "--bare", str(path), str(bare_copy))
        run("git", "update-server-info", cwd=bare_copy)
    return path


def annex_info(path: Path) -> dict:
    import json
    out = run("git", "annex", "info", "--bytes", "--json", ".", cwd=path)
    return json.loads(out.splitlines()[0])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class HTTPServer:
    """Serve a directory on 127.0.0.1 (git's dumb HTTP protocol works)."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
