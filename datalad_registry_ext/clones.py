"""The clone cache: one clone per repository, shared by all registries of a
user.

Facts and metadata are computed on these clones, so re-submission and
re-extraction only fetch, and two registries that register one repository
clone it once. A clone lives at a readable, unique place below the user's
clone cache directory, keyed by the repository's canonical URL only
(:func:`clone_location`); it is made in a temporary directory and renamed
into place, so an interrupted clone never leaves a half-made one.

Beside each clone ``<name>`` lie two small files:

- ``<name>.lock``: whoever clones, fetches, computes facts or extracts
  metadata holds it (:func:`using`), so two registries (two processes)
  never change one clone at the same time. It is never removed: a process
  waiting on a removed lock file would hold a lock nobody else sees.
- ``<name>.refs.json``: which registries use the clone, and when each last
  did (:func:`references`); ``registry-update --prune`` drops clones that
  no registry lists any more.

A clone an earlier version made in its registry's own cache
(:func:`~datalad_registry_ext.locations.legacy_clone_cache_dir`) is moved
into the shared cache when that registry next uses it, instead of cloning
again. Clones of annex repositories are *private*
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
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from datalad_registry_ext.config import METADATA_MAX_BYTES
from datalad_registry_ext.errors import storage_error
from datalad_registry_ext.files import atomic_write, locked
from datalad_registry_ext.gitcmd import (
    RepositoryError,
    annex,
    git,
    last_lines,
)
from datalad_registry_ext.locations import (
    clone_cache_dir,
    legacy_clone_cache_dir,
)
from datalad_registry_ext.records import (
    now_iso,
    registry_path_for_url,
    strip_credentials,
)

REMOTE = "origin"
LOCK_SUFFIX = ".lock"
REFS_SUFFIX = ".refs.json"
#: a clone's name ends with @ and 10 hex digits of its canonical URL's hash
CLONE_NAME = re.compile(r"@[0-9a-f]{10}$")


def _name(key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{registry_path_for_url(key)}@{digest}"


def clone_location(key: str) -> Path:
    """Where the clone of the repository with canonical URL ``key`` lives.

    Readable (the registry path) and unique (a hash of the canonical URL), so
    no two repositories ever share or nest clones, and every registry that
    registers the repository finds the same clone.
    """
    return clone_cache_dir() / _name(key)


def lock_path(clone: Path) -> Path:
    return clone.with_name(clone.name + LOCK_SUFFIX)


def refs_path(clone: Path) -> Path:
    return clone.with_name(clone.name + REFS_SUFFIX)


@contextmanager
def using(registry: Path, key: str) -> Iterator[Path]:
    """Hold the lock of the clone of ``key`` while the block runs, having
    recorded that ``registry`` uses it; yield its path (there may be no
    clone there yet: :func:`clone_or_update` makes one).

    Hold it around everything that reads or changes the clone, and nothing
    else: another registry waits for it (up to
    ``datalad.registry.lock-timeout``). Never take a second clone's lock
    inside the block (the lock is the process's, so a nested one of the
    same clone would release it early, and two clones taken in different
    orders by two processes would wait for each other).
    """
    clone = clone_location(key)
    with locked(lock_path(clone), what=f"the clone of {key} ({clone})"):
        _adopt_legacy(registry, key, clone)
        _add_reference(clone, key, registry)
        yield clone


def _adopt_legacy(registry: Path, key: str, clone: Path) -> None:
    """Move the clone an earlier version made in ``registry``'s own cache
    into the shared cache, when the shared cache has none: a rename in one
    file system, where cloning again could take long. (A legacy clone of a
    repository the shared cache has already is left for ``--prune``.)"""
    if (clone / ".git").is_dir():
        return
    old = legacy_clone_cache_dir(registry) / _name(key)
    if not (old / ".git").is_dir():
        return
    try:
        clone.parent.mkdir(parents=True, exist_ok=True)
        if clone.exists():
            shutil.rmtree(clone, ignore_errors=True)  # not a clone: debris
        os.replace(old, clone)
    except OSError:
        pass  # then it is cloned again, as if there were no legacy clone


def references(clone: Path) -> dict:
    """``{"url": canonical URL, "registries": {registry path: ISO time of
    its last use}}`` of a clone; empty registries when there is no (valid)
    file."""
    try:
        data = json.loads(refs_path(clone).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"url": None, "registries": {}}
    if not isinstance(data, dict) or not isinstance(
            data.get("registries"), dict):
        return {"url": None, "registries": {}}
    return {"url": data.get("url"), "registries": dict(data["registries"])}


def write_references(clone: Path, key: str | None, registries: dict) -> None:
    """Replace the clone's references (call it with the clone's lock held)."""
    atomic_write(refs_path(clone), json.dumps(
        {"url": key, "registries": registries}, indent=1, sort_keys=True)
        + "\n")


#: a use of a clone is recorded again only when the last record of it is
#: older than this (seconds): a batch of extractions right after a batch
#: of registrations writes nothing, and pruning waits far longer (an hour)
REFRESH_SECONDS = 300


def _add_reference(clone: Path, key: str, registry: Path) -> None:
    refs = references(clone)["registries"]
    me = str(Path(registry).resolve())
    try:
        age = time.time() - datetime.fromisoformat(refs[me]).timestamp()
    except (KeyError, TypeError, ValueError):
        age = None
    if age is not None and 0 <= age < REFRESH_SECONDS:
        return
    refs[me] = now_iso()
    write_references(clone, key, refs)


def cached_clones() -> Iterator[Path]:
    """Every clone in the shared cache, and every place that has a
    references file but no clone (a clone that failed, or was deleted by
    hand): the paths :func:`clone_location` gives."""
    root = clone_cache_dir()
    for top, dirs, files in os.walk(root):
        here = Path(top)
        found = [d for d in dirs if CLONE_NAME.search(d)]
        # never into a clone, nor into one being made or removed
        dirs[:] = [d for d in dirs if d not in found and not (
            d.startswith(".") and d.endswith(".tmp"))]
        # as listed before the caller acts on them (it may remove clones)
        orphans = [f[:-len(REFS_SUFFIX)] for f in files
                   if f.endswith(REFS_SUFFIX)]
        orphans = [n for n in orphans if CLONE_NAME.search(n)
                   and n not in found]
        for name in sorted(found + orphans):
            yield here / name


def stale_temporaries(older_than: float) -> list[Path]:
    """Clones being made (``.<name>.<hex>.tmp``) that are older than
    ``older_than`` (a POSIX time): left by a killed process."""
    out = []
    for top, dirs, _ in os.walk(clone_cache_dir()):
        for d in list(dirs):
            if CLONE_NAME.search(d):
                dirs.remove(d)
            elif d.startswith(".") and d.endswith(".tmp"):
                dirs.remove(d)
                path = Path(top) / d
                try:
                    if path.stat().st_mtime < older_than:
                        out.append(path)
                except OSError:
                    pass
    return out


def disk_usage(path: Path) -> int:
    """Bytes of the files below ``path`` (symlinks not followed)."""
    total = 0
    for top, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(top, f)).st_size
            except OSError:
                pass
    return total


def remove_tree(path: Path) -> None:
    """Remove a clone (or any directory of the cache): renamed aside first,
    so that nothing ever finds a half-removed clone at its place."""
    path = Path(path)
    if not path.exists():
        return
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        os.replace(path, aside)
    except OSError as e:
        raise storage_error(e, path, "remove") from e
    _rmtree(aside)


def _rmtree(path: Path) -> None:
    # git makes its objects read-only, and git-annex its content and
    # directories: make them writable to remove them
    def writable_and_retry(func, p, _exc):
        try:
            os.chmod(p, 0o700)
            parent = os.path.dirname(p)
            os.chmod(parent, 0o700)
            func(p)
        except OSError:
            pass
    # onexc from Python 3.12 on (onerror is deprecated there); one handler
    # serves both, it ignores the third argument
    option = "onexc" if sys.version_info >= (3, 12) else "onerror"
    shutil.rmtree(path, **{option: writable_and_retry})


def clone_or_update(source: str, dest: Path) -> tuple[Path, bool]:
    """Make ``dest`` an up-to-date clone of ``source``; return (path, is_new).

    ``source`` may carry credentials; they are used for this transfer only
    and never written to the clone's configuration. For a clone of the
    cache, call it inside :func:`using` (other registries share it).
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
