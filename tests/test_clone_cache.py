"""The clone cache: one per user, shared by registries, locked, pruned.

Real repositories (plain git, and one DataLad dataset with a metadata file)
and real processes: two registries registering one repository, two
``registry-update`` processes at once, a second process holding a clone's
lock. Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from datalad.api import registry_submit, registry_update

from datalad_registry_ext import clones, updates
from datalad_registry_ext.files import locked
from datalad_registry_ext.locations import (
    clone_cache_dir,
    legacy_clone_cache_dir,
)
from datalad_registry_ext.records import canonical_url

from .fixtures import (
    DATASET_DESCRIPTION,
    call,
    make_dataset,
    make_git_repo,
    record,
    run,
)


def submit(registry, *repos, **kw):
    kw.setdefault("extract", False)
    res = call(registry_submit, [str(r) for r in repos],
               dataset=str(registry), **kw)
    errors = [r for r in res if r["status"] in ("error", "impossible")]
    assert not errors, errors
    return res


def clone_of(repo) -> Path:
    return clones.clone_location(canonical_url(str(repo)))


def all_clones() -> list[Path]:
    return sorted(clones.cached_clones())


def test_two_registries_share_one_clone(tmp_path):
    repo = make_git_repo(tmp_path / "repo", {"README": "one repository, two registries"})
    a, b = tmp_path / "reg-a", tmp_path / "reg-b"
    submit(a, repo)
    clone = clone_of(repo)
    assert (clone / ".git").is_dir()
    assert clone.parent.is_relative_to(clone_cache_dir())
    # a re-clone is made elsewhere and renamed over the old one: neither
    # the directory's inode nor a file of ours inside it would survive
    marker = clone / ".git" / "test-marker"
    marker.write_text("first clone")
    inode = clone.stat().st_ino

    submit(b, repo)
    assert marker.read_text() == "first clone"
    assert clone.stat().st_ino == inode
    assert all_clones() == [clone]
    # the per-registry caches of earlier versions are not made any more
    assert not legacy_clone_cache_dir(a).exists()
    assert not legacy_clone_cache_dir(b).exists()
    refs = clones.references(clone)
    assert refs["url"] == canonical_url(str(repo))
    assert sorted(refs["registries"]) == sorted(
        [str(a.resolve()), str(b.resolve())])
    # both registries have the same facts, read from the one clone
    assert record(a, str(repo))["head"] == record(b, str(repo))["head"]


def test_legacy_clone_is_adopted(tmp_path):
    """A clone an earlier version made in the registry's own cache is moved
    into the shared cache, not cloned again."""
    repo = make_git_repo(tmp_path / "repo")
    registry = tmp_path / "registry"
    submit(registry, repo)
    shared = clone_of(repo)
    legacy = legacy_clone_cache_dir(registry) / shared.relative_to(
        clone_cache_dir())
    legacy.parent.mkdir(parents=True)
    os.replace(shared, legacy)   # where the earlier version had it
    (legacy / ".git" / "test-marker").write_text("legacy")
    run("git", "commit", "-q", "--allow-empty", "-m", "more", cwd=repo)

    res = call(registry_update, dataset=str(registry), extract=False)
    assert [r for r in res if r.get("summary")][0]["changed"] == 1
    assert not legacy.exists()
    assert (shared / ".git" / "test-marker").read_text() == "legacy"
    assert run("git", "rev-parse", "HEAD", cwd=shared) == \
        run("git", "rev-parse", "HEAD", cwd=repo)


def test_registration_waits_for_the_clone_lock(tmp_path):
    """Another process holding a clone's lock keeps a registration of that
    repository off the clone (here, until the lock timeout)."""
    repo = make_git_repo(tmp_path / "repo")
    registry = tmp_path / "registry"
    submit(registry, repo)
    lock = clones.lock_path(clone_of(repo))
    env = dict(os.environ, DATALAD_REGISTRY_LOCK__TIMEOUT="1")
    with locked(lock):
        out = subprocess.run(
            ["datalad", "-f", "json", "registry-submit", "--no-extract",
             "-d", str(tmp_path / "other"), str(repo)],
            capture_output=True, text=True, env=env)
    assert out.returncode != 0
    (res,) = [json.loads(ln) for ln in out.stdout.splitlines()
              if '"registry_submit"' in ln]
    assert res["status"] == "error"
    assert str(lock) in res["message"], res["message"]
    # free again: the same registration goes through
    submit(tmp_path / "other", repo)


def test_concurrent_updates_of_one_clone(tmp_path):
    """Two registry-update processes, two registries, one repository that
    changed: both fetch, compute facts and extract on the one clone, each
    holding its lock, and both succeed."""
    ds = make_dataset(tmp_path / "ds", {
        "dataset_description.json": json.dumps(DATASET_DESCRIPTION)},
        to_git=True)
    regs = [tmp_path / "reg-a", tmp_path / "reg-b"]
    for r in regs:
        submit(r, ds.path)
    (Path(ds.path) / "README").write_text("changed\n")
    ds.save(message="change", result_renderer="disabled")
    head = ds.repo.get_hexsha()

    # one cheap extractor: the point is the clone, not the extractors
    env = dict(os.environ, DATALAD_REGISTRY_EXTRACTORS="bids_dataset")
    procs = [subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from datalad.api import registry_update as u; "
         "res = u(dataset=sys.argv[1], result_renderer='disabled', "
         "on_failure='ignore', return_type='list'); "
         "bad = [r for r in res if r['status'] in ('error', 'impossible')]; "
         "print(bad); sys.exit(1 if bad else 0)", str(r)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in regs]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (out, err)
    for r in regs:
        rec = record(r, ds.path)
        assert rec["head"] == head
        (entry,) = rec["metadata"]
        assert entry["extractor_name"] == "bids_dataset"
        assert entry["dataset_version"] == head
    clone = clone_of(ds.path)
    assert all_clones() == [clone]
    assert run("git", "rev-parse", "HEAD", cwd=clone).strip() == head
    run("git", "fsck", "--no-progress", cwd=clone)


def _unregister(registry: Path, repo) -> None:
    """Remove a repository's entry from the registry by hand (a commit
    without its gitlink): what the registry lists is what is committed."""
    path = record(registry, str(repo))["registry_path"]
    run("git", "rm", "-q", "-r", "--cached", path, cwd=registry)
    run("git", "commit", "-q", "-m", "unregister", cwd=registry)


def test_prune(tmp_path):
    r1, r2, r3 = (make_git_repo(tmp_path / f"r{i}", {"README": str(i)})
                  for i in (1, 2, 3))
    a, b = tmp_path / "reg-a", tmp_path / "reg-b"
    submit(a, r1, r2)
    submit(b, r2, r3)
    assert len(all_clones()) == 3
    # what an earlier version left: one registry's own cache
    legacy = legacy_clone_cache_dir(tmp_path / "old-registry")
    make_git_repo(legacy / "local" / "x@0123456789")

    # B is deleted: r3's clone goes, r2's stays (A lists it)
    shutil.rmtree(b)
    out = subprocess.run(["datalad", "registry-update", "--prune"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(ln.startswith(f"dropped the clone of {r3} ") and
               "its registries are gone" in ln for ln in lines), lines
    assert any(ln.startswith(f"dropped {legacy} ") for ln in lines), lines
    assert any("1 clones dropped, 2 kept" in ln for ln in lines), "\n".join(lines)
    assert all_clones() == sorted([clone_of(r1), clone_of(r2)])
    assert not legacy.exists()
    assert not clones.refs_path(clone_of(r3)).exists()

    # r1 is no longer listed by A: it was used just now, so a registration
    # of it may be under way and it stays ...
    _unregister(a, r1)
    res = call(registry_update, dataset=str(a), prune=True)
    (s,) = res
    assert s["summary"] and s["status"] == "notneeded"
    assert (s["dropped"], s["kept"]) == (0, 2)
    # ... until that grace period is over
    res = list(updates.prune(grace=0))
    (dropped,) = [r for r in res if not r.get("summary")]
    assert dropped["url"] == canonical_url(str(r1))
    assert "no registry lists it any more" in dropped["message"]
    assert dropped["registries"] == [str(a.resolve())]
    assert all_clones() == [clone_of(r2)]
    # A still works: its other repository is where it was
    res = call(registry_update, dataset=str(a), extract=False)
    assert [r for r in res if r.get("summary")][0]["failed"] == 0


def test_prune_keeps_a_clone_in_use(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    registry = tmp_path / "registry"
    submit(registry, repo)
    shutil.rmtree(registry)
    lock = clones.lock_path(clone_of(repo))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from fasteners import InterProcessLock; "
         "lock = InterProcessLock(sys.argv[1]); lock.acquire(); "
         "print('held', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (s,) = updates.prune(grace=0)
        assert (s["dropped"], s["busy"]) == (0, 1)
        assert all_clones() == [clone_of(repo)]
    finally:
        holder.communicate("", timeout=30)
    (dropped, s) = updates.prune(grace=0)
    assert dropped["path"] == str(clone_of(repo))
    assert all_clones() == []


def test_prune_refuses_urls(tmp_path):
    res = call(registry_update, [str(tmp_path)], dataset=str(tmp_path),
               prune=True)
    assert [r["status"] for r in res] == ["impossible"]
    assert "--prune only cleans the clone cache" in res[0]["message"]
