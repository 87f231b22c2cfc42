"""The clone cache: one clone per registered repository.

Facts and metadata are computed on these clones, so re-submission and
re-extraction only fetch. A clone lives at a readable, unique place below the
registry's clone cache directory (:func:`clone_location`); it is made in a
temporary directory and renamed into place, so an interrupted clone never
leaves a half-made one. Clones of annex repositories are *private*
(``annex.private``): they never record themselves in any git-annex branch.
Credentials in a source URL are used for the transfer only and never written
to a clone's configuration.

A clone holds no annexed content, except the content of the few metadata
files extractors read (:func:`fetch_annexed`), each bounded by the metadata
size cap.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from datalad_registry_ext.config import METADATA_MAX_BYTES
from datalad_registry_ext.gitcmd import (
    RepositoryError,
    annex,
    git,
    last_lines,
)
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


def head_of(clone: Path) -> str | None:
    """The commit checked out in ``clone`` (None when it has none)."""
    out = git(["rev-parse", "--verify", "--quiet", "HEAD"], cwd=clone,
              check=False).strip()
    return out or None


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


# -- annexed content of a few files ------------------------------------------------

# what an annexed file without content looks like in the work tree: a
# symlink into the annex, or (unlocked) a pointer file of one short line
_POINTER_PREFIX = b"/annex/objects/"


def _lacks_content(path: Path) -> bool:
    """Whether ``path`` looks like an annexed file whose content is not here
    (git-annex has the final say: this only spares it being asked about
    files in git, or in repositories without an annex)."""
    try:
        if path.is_symlink():
            return "annex/objects" in os.readlink(path) and not path.exists()
        if path.is_file() and path.stat().st_size < 1024:
            with open(path, "rb") as f:
                return f.read(len(_POINTER_PREFIX)) == _POINTER_PREFIX
    except OSError:
        pass
    return False


def _annex_json(args, clone: Path) -> dict[str, dict]:
    """``{file: record}`` of a git-annex command's JSON lines (no check: a
    failure is in the records' ``success`` and ``error-messages``)."""
    out = annex(args, cwd=clone, check=False)
    records = {}
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("file"):
            records[rec["file"]] = rec
    return records


def _why(rec: dict | None, nothing: str) -> str:
    """git-annex's reason a get failed; ``nothing`` when it gives none (it
    reports nothing at all when the location log says a remote lacks the
    key, and just "not available" when no remote has it)."""
    if rec is None:
        return nothing
    reasons = [str(m).strip() for m in rec.get("error-messages") or ()]
    note = str(rec.get("note") or "").strip()
    if note and not note.endswith("...") and note != "not available":
        reasons.append(note)
    return last_lines("\n".join(r for r in reasons if r)) or nothing


def fetch_annexed(clone: Path, relpaths, limit: int) -> dict[str, str]:
    """Get the content of those ``relpaths`` that are annexed files without
    local content, and nothing else.

    A file is fetched only when its annex key records a size of at most
    ``limit`` bytes: metadata files are small, and a key without a size
    could be anything. Tried from ``origin`` (the location the repository was
    registered from) first, then from any remote git-annex knows of (other
    clones, special remotes such as the web). Returns ``{relpath: reason}``
    for each annexed file whose content is still missing. Files in git, and
    paths that are not inside the clone, are left alone (the safe loader
    reports those).
    """
    clone = Path(clone)
    wanted = []
    for rel in dict.fromkeys(relpaths):
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            continue
        if _lacks_content(clone.joinpath(*parts)):
            wanted.append(rel)
    if not wanted:
        return {}
    missing = _annex_json(["find", "--not", "--in=here", "--json", "--",
                           *wanted], clone)
    problems, fetch = {}, []
    for rel in wanted:
        rec = missing.get(rel)
        if rec is None:
            continue  # not annexed after all, or its content is here
        size = rec.get("bytesize")
        if not str(size).isdigit():
            problems[rel] = (
                f"its annex key {rec.get('key')} records no size, so it might "
                f"exceed the limit of {limit} bytes (configuration "
                f"{METADATA_MAX_BYTES}); not fetched")
        elif int(size) > limit:
            problems[rel] = (
                f"too large to fetch ({size} bytes; the limit is {limit} "
                f"bytes, configuration {METADATA_MAX_BYTES}); not "
                f"fetched")
        else:
            fetch.append(rel)
    if not fetch:
        return problems
    options = ["--json", "--json-error-messages", "--"]
    first = _annex_json(["get", "--from", REMOTE, *options, *fetch], clone)
    rest = [r for r in fetch if not (first.get(r) or {}).get("success")]
    if rest:
        second = _annex_json(["get", *options, *rest], clone)
        for rel in rest:
            if not (second.get(rel) or {}).get("success"):
                problems[rel] = (
                    f"content not available: from {REMOTE}: "
                    f"{_why(first.get(rel), 'it does not have it')}; from "
                    f"the dataset's other remotes: "
                    f"{_why(second.get(rel), 'none is known to have it')}")
    return problems
