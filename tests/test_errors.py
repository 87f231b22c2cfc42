"""Domain failures reach the user as result records, never as tracebacks.

Real processes throughout: a lock held by another process, a full disk and a
read-only disk (small tmpfs file systems mounted in a private mount
namespace with ``unshare``, so nothing on the machine is touched).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datalad_registry_ext.errors import os_error_message

from .fixtures import make_git_repo


def _records_file(path: Path, n: int, pad: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({
                "url": f"https://example.org/repo{i}", "ds_id": None,
                "metadata": [{"extractor_name": "bids_dataset",
                              "extracted_metadata": {"Name": "x" * pad}}],
            }) + "\n")
    return path


def _cli(*args, env=None, cwd=None) -> tuple[int, list[dict], str]:
    proc = subprocess.run(["datalad", "-f", "json", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    results = [json.loads(line) for line in proc.stdout.splitlines()
               if line.startswith("{")]
    return proc.returncode, results, proc.stderr


def _hold_lock(lock_path: Path) -> subprocess.Popen:
    """Another process holding a fasteners lock until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from fasteners import InterProcessLock
            lock = InterProcessLock({str(lock_path)!r})
            lock.acquire()
            print("held", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_registry_lock_timeout_is_an_error_result(tmp_path):
    registry = tmp_path / "registry"
    repo = make_git_repo(tmp_path / "repo")
    rc, res, err = _cli("registry-submit", "--no-extract", "-d",
                        str(registry), str(repo))
    assert rc == 0, err
    lock = registry / ".git" / "datalad-registry-ext.lock"
    holder = _hold_lock(lock)
    try:
        other = make_git_repo(tmp_path / "other")
        rc, res, err = _cli("-c", "datalad.registry.lock-timeout=1",
                            "registry-submit", "--no-extract", "-d",
                            str(registry), str(other))
    finally:
        holder.stdin.close()
        holder.wait()
    assert rc == 1
    assert "Traceback" not in err
    failed = [r for r in res if r["status"] == "error"]
    assert failed and str(lock) in failed[0]["message"]
    assert "more than 1 s" in failed[0]["message"]
    # nothing was registered meanwhile, and a retry works
    rc, res, err = _cli("registry-submit", "--no-extract", "-d",
                        str(registry), str(other))
    assert rc == 0 and res[0]["status"] == "ok", err


def test_index_lock_timeout_is_an_error_result(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    source = _records_file(tmp_path / "records.jsonl", 3)
    registry = tmp_path / "registry"
    rc, res, err = _cli("registry-sync", "-d", str(registry), str(source),
                        env=env)
    assert rc == 0, err
    index_file = next((tmp_path / "cache").rglob("records.jsonl-*.json"))
    holder = _hold_lock(index_file.with_name(index_file.name + ".lock"))
    try:
        rc, res, err = _cli("-c", "datalad.registry.lock-timeout=1",
                            "registry-sync", "-d", str(registry), str(source),
                            env=env)
    finally:
        holder.stdin.close()
        holder.wait()
    assert rc == 1 and "Traceback" not in err
    assert str(index_file) in res[-1]["message"]


def test_os_error_messages_name_the_path_and_the_cause():
    import errno
    full = os_error_message(OSError(errno.ENOSPC, "No space left on device"),
                            "/x/y.json")
    assert full.startswith("cannot write /x/y.json: No space left on device")
    assert "disk is full" in full
    ro = os_error_message(OSError(errno.EROFS, "Read-only file system"),
                          "/x/y.json")
    assert "/x/y.json" in ro and "read-only" in ro


def _unshare_ok() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(
    not _unshare_ok(),
    reason="needs 'unshare -rm' (user and mount namespaces) to mount a small "
           "file system privately")


def _in_namespace(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace (mounts vanish with
    it)."""
    return subprocess.run(["unshare", "-rm", "bash", "-euc", script],
                          capture_output=True, text=True, cwd=tmp_path,
                          env=dict(os.environ, CACHE=str(tmp_path / "cache")))


@needs_mounts
def test_full_disk_is_an_error_result_naming_the_file(tmp_path):
    # ~600 kB of index for a 256 kB file system
    source = _records_file(tmp_path / "records.jsonl", 150, pad=4000)
    registry = tmp_path / "registry"
    proc = _in_namespace(f"""
        mkdir -p "$CACHE"
        mount -t tmpfs -o size=256k tmpfs "$CACHE"
        set +e
        XDG_CACHE_HOME="$CACHE" datalad -f json registry-sync \
            -d {registry} {source} > out.json 2> err.txt
        echo "rc=$?"
        find "$CACHE" -name '*.tmp' | wc -l
        find "$CACHE" -name "records.jsonl-*.json" | wc -l
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    rc, temporaries, index_files = proc.stdout.split()
    assert rc == "rc=1"
    err = (tmp_path / "err.txt").read_text()
    assert "Traceback" not in err
    res = [json.loads(x) for x in (tmp_path / "out.json").read_text().splitlines()]
    assert res[-1]["status"] == "error"
    assert "No space left on device" in res[-1]["message"]
    assert str(tmp_path / "cache") in res[-1]["message"]
    # nothing half-written is left behind
    assert temporaries == "0" and index_files == "0"


@needs_mounts
def test_read_only_disk_is_an_error_result_and_keeps_the_index(tmp_path):
    first = _records_file(tmp_path / "records.jsonl", 3)
    registry = tmp_path / "registry"
    proc = _in_namespace(f"""
        mkdir -p "$CACHE"
        mount -t tmpfs -o size=8m tmpfs "$CACHE"
        export XDG_CACHE_HOME="$CACHE"
        datalad registry-sync -d {registry} {first} > /dev/null
        cp "$(find "$CACHE" -name "records.jsonl-*.json")" before.json
        python -c 'import json,sys; \
            recs=[json.loads(l) for l in open(sys.argv[1])]; \
            recs.append(dict(recs[0], url="https://example.org/new")); \
            open(sys.argv[1],"w").write("".join(json.dumps(r)+"\\n" for r in recs))' \
            {first}
        mount -o remount,ro "$CACHE"
        set +e
        datalad -f json registry-sync -d {registry} {first} > out.json 2> err.txt
        echo "rc=$?"
        cmp before.json "$(find "$CACHE" -name "records.jsonl-*.json")" && echo same
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["rc=1", "same"]
    assert "Traceback" not in (tmp_path / "err.txt").read_text()
    res = [json.loads(x) for x in (tmp_path / "out.json").read_text().splitlines()]
    assert res[-1]["status"] == "error"
    assert "Read-only file system" in res[-1]["message"]
    assert str(tmp_path / "cache") in res[-1]["message"]
