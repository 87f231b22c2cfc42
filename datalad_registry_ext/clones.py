"""The clone cache: one clone per registered repository.

Facts and metadata are computed on these clones, so re-submission and
re-extraction only fetch. A clone lives at a readable, unique place below the
registry's clone cache directory (:func:`clone_location`); it is made in a
temporary directory and renamed into place, so an interrupted clone never
leaves a half-made one. Clones of annex repositories are *private*
(``annex.private``): they never record themselves in any git-annex branch.
Credentials in a source URL are used for the transfer only and never written
to a clone's configuration.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from pathlib import Path

from datalad_registry_ext.gitcmd import RepositoryError, annex, git
from datalad_registry_ext.locations import clone_cache_dir
from datalad_registry_ext.records import registry_path_for_url, strip_credentials

REMOTE = "origin"


def clone_location(registry: Path, key: str) -> Path:
    """Where the clone of the repository with canonical URL ``key`` lives.

    Readable (the registry path) and unique (a hash of the canonical URL), so
    no two repositories ever share or nest clones.
    """
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return clone_cache_dir(registry) / f"{registry_path_for_url(key)}@{digest}"


def clone_or_update(source: str, dest: Path) -> tuple[Path, bool]:
    """Make ``dest`` an up-to-date clone of ``source``; return (path, is_new).

    ``source`` may carry credentials; they are used for this transfer only
    and never written to the clone's configuration.
    """
    dest = Path(dest)
    public = strip_credentials(source)
    if (dest / ".git").is_dir():
        try:
            _update(source, dest)
            return dest, False
        except RepositoryError:
            # e.g. the default branch was rewritten or changed: start afresh,
            # as DataLad-Registry does; the old clone stays until the new
            # one is complete
            pass
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        git(["clone", "--quiet", "--origin", REMOTE, "--no-recurse-submodules",
             "--", source, str(tmp)], secrets=[source])
        if public != source:
            git(["remote", "set-url", REMOTE, public], cwd=tmp)
        init_annex(tmp)
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, True


def _update(source: str, clone: Path) -> None:
    fetch_from = source if strip_credentials(source) != source else REMOTE
    git(["fetch", "--quiet", "--prune", "--tags", "--force", fetch_from,
         f"+refs/heads/*:refs/remotes/{REMOTE}/*"],
        cwd=clone, secrets=[source])
    # follow a change of the remote's default branch
    if fetch_from == REMOTE:
        git(["remote", "set-head", REMOTE, "--auto"], cwd=clone, check=False)
    else:
        out = git(["ls-remote", "--symref", source, "HEAD"], cwd=clone,
                  secrets=[source], check=False)
        m = re.search(r"^ref: refs/heads/(\S+)\s+HEAD", out, re.M)
        if m:
            git(["symbolic-ref", f"refs/remotes/{REMOTE}/HEAD",
                 f"refs/remotes/{REMOTE}/{m[1]}"], cwd=clone)
    remote_head = _remote_head_branch(clone)
    if remote_head is None:
        raise RepositoryError("the remote has no default branch")
    local = git(["symbolic-ref", "--quiet", "--short", "HEAD"], cwd=clone,
                check=False).strip()
    if local != remote_head:
        raise RepositoryError("default branch changed")
    git(["merge", "--quiet", "--ff-only", f"{REMOTE}/{remote_head}"], cwd=clone)
    if has_annex_branch(clone):
        init_annex(clone)
        annex(["merge", "--quiet"], cwd=clone, check=False)


def _remote_head_branch(clone: Path) -> str | None:
    out = git(["symbolic-ref", "--quiet", "--short",
               f"refs/remotes/{REMOTE}/HEAD"], cwd=clone, check=False).strip()
    return out.split("/", 1)[1] if "/" in out else None


def has_annex_branch(clone: Path) -> bool:
    return bool(git(["rev-parse", "--verify", "--quiet",
                     f"refs/remotes/{REMOTE}/git-annex"],
                    cwd=clone, check=False).strip())


def init_annex(clone: Path) -> None:
    """Initialise git-annex, privately, in a clone of an annex repository."""
    if not has_annex_branch(clone):
        return
    if git(["config", "--get", "annex.uuid"], cwd=clone, check=False).strip():
        return
    git(["config", "annex.private", "true"], cwd=clone)
    annex(["init", "--quiet", "registry-ext clone cache"], cwd=clone)
