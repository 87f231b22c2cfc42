"""The registry superdataset.

A registry is a DataLad dataset (without an annex). Each registered
repository is an *uninstalled* subdataset entry: a gitlink recording the
repository's HEAD commit at a readable path (``github.com/o/r``) and a
``.gitmodules`` section with its URL and, for DataLad datasets, its
``datalad-id``. ``datalad subdatasets -d REGISTRY`` lists them.

The facts of every entry (annex counts, branches, tags, ...) are committed in
``.datalad/registry/records.jsonl``, one JSON record per line, sorted by
path, so a clone of the registry carries everything needed to rebuild its
index. Extracted metadata lives in metalad's store (see :mod:`aggregate`),
except that of repositories without a DataLad dataset id (plain git), which
metalad cannot store: it is committed in
``.datalad/registry/plain-git-metadata.jsonl``.

Writing is crash-safe: a batch of entries becomes one commit built with git
plumbing in a temporary index and published with a compare-and-swap
``update-ref``. A process killed at any point leaves either the old commit or
the new one. The work tree is brought up to date afterwards (and at the start
of the next write, should that have been interrupted).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from datalad_registry_ext.errors import RegistryExtError, storage_error
from datalad_registry_ext.files import atomic_write
from datalad_registry_ext.files import locked as file_locked
from datalad_registry_ext.gitcmd import RepositoryError, git, gitlinks, read_gitmodules
from datalad_registry_ext.locations import creation_lock_path
from datalad_registry_ext.records import NOT_COMMITTED, canonical_url, fit_component

RECORDS_FILE = ".datalad/registry/records.jsonl"
# metadata of repositories without a DataLad dataset id (plain git), which
# metalad's store cannot hold: {"registry_path", <index entry>} per line
PLAIN_METADATA_FILE = ".datalad/registry/plain-git-metadata.jsonl"
LOCK_NAME = "datalad-registry-ext.lock"


class RegistryError(RegistryExtError):
    """The registry superdataset cannot be created, read or written."""


# -- locating and creating ---------------------------------------------------------

def ensure_registry(path: Path | str) -> Path:
    """Return the registry at ``path``, creating it if nothing is there.

    Creating happens under a lock of its own (in the user cache dir, keyed
    by the registry's path: the registry's lock lives in its ``.git``, which
    does not exist yet), and inside the lock it is checked again whether
    another process created the registry meanwhile, so two commands that
    both find no registry do not both try to create it.
    """
    path = Path(path).absolute()
    if is_registry(path):
        return path
    with file_locked(creation_lock_path(path),
                     what=f"the new registry {path}"):
        _check_location(path)
        if is_registry(path):
            return path  # another process created it while we waited
        from datalad.api import create  # heavy: only when creating
        try:
            create(path=str(path), annex=False, result_renderer="disabled",
                   on_failure="stop")
        except Exception as e:  # datalad raises several kinds
            raise RegistryError(
                f"cannot create a registry at {path}: "
                f"{_short_reason(e)}") from e
        if not is_registry(path):
            raise RegistryError(f"cannot create a registry at {path}")
    return path


def _check_location(path: Path) -> None:
    """Refuse a location that holds something other than a registry."""
    if (path / ".git").exists():
        if not (path / ".datalad" / "config").exists():
            raise RegistryError(
                f"{path} is a git repository but not a DataLad dataset; "
                "choose another registry location with -d or "
                "datalad.registry.dataset")
        return
    try:
        occupied = path.exists() and (not path.is_dir() or any(path.iterdir()))
    except OSError as e:
        raise storage_error(e, path, "read") from e
    if occupied:
        raise RegistryError(
            f"{path} exists and is not a dataset; choose another registry "
            "location with -d or datalad.registry.dataset")


def _message_text(message) -> str:
    """A result record's message: a string, or a (format, *args) tuple."""
    if isinstance(message, (tuple, list)) and message:
        try:
            return str(message[0]) % tuple(message[1:])
        except (TypeError, ValueError):
            return " ".join(str(m) for m in message)
    return str(message or "")


def _short_reason(e: BaseException) -> str:
    """The first line of DataLad's message (its IncompleteResultsError
    carries whole result records)."""
    failed = getattr(e, "failed", None)
    if failed:
        messages = [_message_text(r.get("message")) for r in failed
                    if isinstance(r, dict)]
        text = "; ".join(m for m in messages if m)
        if text:
            return text
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def is_registry(path: Path | str) -> bool:
    path = Path(path)
    return (path / ".git").exists() and (path / ".datalad" / "config").exists()


def head_commit(registry: Path) -> str | None:
    out = git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
              cwd=registry, check=False).strip()
    return out or None


def metadata_state(registry: Path) -> str:
    """A fingerprint of the registry's metalad store (``refs/datalad/*``).

    Aggregated metadata lives in refs, not commits: the index remembers this
    fingerprint next to the HEAD it reflects.
    """
    out = git(["for-each-ref", "--format=%(objectname) %(refname)",
               "refs/datalad/"], cwd=registry, check=False)
    return hashlib.sha1(out.encode()).hexdigest()


def registry_id(registry: Path) -> str | None:
    return git(["config", "-f", ".datalad/config", "--get",
                "datalad.dataset.id"], cwd=registry, check=False).strip() or None


# -- reading -----------------------------------------------------------------------------

def read_entries(registry: Path, commit: str | None = None) -> dict[str, dict]:
    """``{registry_path: record}`` as committed (HEAD unless ``commit``).

    Entries found in ``.gitmodules`` but missing from the records file (e.g.
    added by hand with ``git submodule add``) are returned with the facts
    that ``.gitmodules`` and the gitlink give.
    """
    commit = commit or head_commit(registry)
    if commit is None:
        return {}
    entries = {}
    text = _blob(registry, commit, RECORDS_FILE)
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise RegistryError(
                f"{RECORDS_FILE} line {n} in {registry} is not valid JSON "
                f"({e})") from e
        entries[rec["registry_path"]] = rec
    links = gitlinks(registry, commit)
    for name, props in _read_gitmodules(registry, commit).items():
        path = props.get("path")
        if not path or path in entries or path not in links:
            continue
        entries[path] = {
            "url": props.get("url"), "ds_id": props.get("datalad-id"),
            "head": links[path], "registry_path": path, "processed": False,
        }
    # a gitlink moved by hand wins over the records file
    for path, rec in entries.items():
        if path in links:
            rec["head"] = links[path]
    return {p: r for p, r in entries.items() if p in links}


def _blob(registry: Path, commit: str, path: str) -> str | None:
    try:
        return git(["cat-file", "blob", f"{commit}:{path}"], cwd=registry)
    except RepositoryError:
        return None


def _read_gitmodules(registry: Path, commit: str) -> dict[str, dict]:
    try:
        return read_gitmodules(registry, commit)
    except RepositoryError as e:
        raise RegistryError(f"the registry {registry}: {e}; repair or revert "
                            "the commit that changed it") from e


# -- allocating paths ----------------------------------------------------------------

def allocate_path(preferred: str, url: str, entries: dict[str, dict]) -> str:
    """A path for ``url`` that clashes with no other entry.

    A clash is the same path for another repository, or a path below or
    above another entry (a gitlink cannot contain anything).
    """
    key = canonical_url(url)

    def clashes(candidate):
        for path, rec in entries.items():
            same_repo = canonical_url(rec.get("url") or "") == key
            if path == candidate and not same_repo:
                return True
            if path.startswith(candidate + "/") or candidate.startswith(path + "/"):
                return True
        return False

    if not clashes(preferred):
        return preferred
    first, _, rest = preferred.partition("/")
    flat = f"{first}/{fit_component(rest.replace('/', '__'))}" if rest \
        else preferred
    if not clashes(flat):
        return flat
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{flat}-{digest}"


# -- writing ---------------------------------------------------------------------------

@contextmanager
def locked(registry: Path):
    """Serialise writers of one registry across processes."""
    gitdir = Path(git(["rev-parse", "--absolute-git-dir"], cwd=registry).strip())
    with file_locked(gitdir / LOCK_NAME, what=f"the registry {registry}"):
        yield


def commit_entries(registry: Path, records: list[dict], message: str,
                   expected_head: str | None = None) -> str:
    """Add or update subdataset entries for ``records`` in one commit.

    Each record must carry ``registry_path``, ``url`` and ``head``. Call
    with the registry :func:`locked`. Returns the new commit.
    """
    for rec in records:
        _check_entry(rec)
    head = head_commit(registry)
    if expected_head is not None and head != expected_head:
        raise RegistryError("the registry changed while it was being written")
    entries = read_entries(registry, head) if head else {}
    modules = _read_gitmodules(registry, head) if head else {}
    for rec in records:
        path = rec["registry_path"]
        entries[path] = {k: v for k, v in rec.items() if k not in NOT_COMMITTED}
        section = {"path": path, "url": rec["url"]}
        if rec.get("ds_id"):
            section["datalad-id"] = rec["ds_id"]
        modules[path] = section
    gitmodules_text = _format_gitmodules(modules)
    records_text = "".join(
        json.dumps(entries[p], sort_keys=True, ensure_ascii=False) + "\n"
        for p in sorted(entries))
    blob_modules = git(["hash-object", "-w", "--stdin"], cwd=registry,
                       input=gitmodules_text).strip()
    blob_records = git(["hash-object", "-w", "--stdin"], cwd=registry,
                       input=records_text).strip()
    index_lines = [f"100644 {blob_modules}\t.gitmodules",
                   f"100644 {blob_records}\t{RECORDS_FILE}"]
    index_lines += [f"160000 {rec['head']}\t{rec['registry_path']}"
                    for rec in records]
    return _commit(registry, head, index_lines, message)


def _commit(registry: Path, head: str | None, index_lines: list[str],
            message: str, reflog: str = "registry-ext: register") -> str:
    """Commit HEAD's tree changed by ``index_lines`` (``git update-index
    --index-info`` lines), built in a temporary index, and move HEAD to it
    only if it is still ``head``; then update the work tree."""
    gitdir = Path(git(["rev-parse", "--absolute-git-dir"], cwd=registry).strip())
    fd, tmp_index = tempfile.mkstemp(prefix="registry-ext-index.", dir=gitdir)
    os.close(fd)
    os.unlink(tmp_index)
    env = {"GIT_INDEX_FILE": tmp_index}
    try:
        if head:
            git(["read-tree", head], cwd=registry, extra_env=env)
        git(["update-index", "--index-info"], cwd=registry, extra_env=env,
            input="\n".join(index_lines) + "\n")
        tree = git(["write-tree"], cwd=registry, extra_env=env).strip()
        parent = ["-p", head] if head else []
        commit = git(["commit-tree", tree, *parent, "-F", "-"], cwd=registry,
                     extra_env=env, input=message).strip()
        # compare-and-swap: fails if anybody moved HEAD meanwhile
        git(["update-ref", "-m", reflog, "HEAD", commit,
             head or "0" * 40], cwd=registry)
    except RepositoryError as e:
        raise RegistryError(f"cannot commit to the registry {registry}: {e}") from e
    finally:
        if os.path.exists(tmp_index):
            os.unlink(tmp_index)
    sync_worktree(registry)
    return commit


def _check_entry(rec: dict) -> None:
    """Refuse, before anything is written, an entry git or the file system
    could not read back: control characters (a newline would end the
    ``.gitmodules`` line) and path components over 255 bytes."""
    path, url = rec["registry_path"], rec["url"]
    for what, value in (("path", path), ("URL", url)):
        if any(ord(c) < 32 or c == "\x7f" for c in value):
            raise RegistryError(f"the {what} {value!r} contains a control "
                                "character")
    long = [c for c in path.split("/") if len(c.encode("utf-8")) > 255]
    if long:
        raise RegistryError(f"the registry path {path} has a component "
                            "longer than 255 bytes")


def sync_worktree(registry: Path) -> None:
    """Bring the registry's own files in the work tree up to HEAD."""
    head = head_commit(registry)
    if head is None:
        return
    for path in (".gitmodules", RECORDS_FILE, PLAIN_METADATA_FILE):
        text = _blob(registry, head, path)
        if text is None:
            continue
        target = registry / path
        try:
            if target.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        atomic_write(target, text)
    # an uninstalled subdataset is an empty directory, as DataLad leaves it
    for path in gitlinks(registry, head):
        (registry / path).mkdir(parents=True, exist_ok=True)
    # refresh the index to HEAD (mixed reset); the work tree keeps the rest
    git(["reset", "--quiet", "--no-refresh"], cwd=registry, check=False)
    git(["update-index", "-q", "--refresh"], cwd=registry, check=False)


def _format_gitmodules(modules: dict[str, dict]) -> str:
    out = []
    for name, props in modules.items():
        out.append(f'[submodule "{_quote_subsection(name)}"]\n')
        for key, value in props.items():
            out.append(f"\t{key} = {_quote_value(value)}\n")
    return "".join(out)


def _quote_subsection(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _quote_value(value: str) -> str:
    value = str(value)
    if re.search(r'[\s#;"\\]', value) or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


# -- metadata of plain git repositories ---------------------------------------------

def read_plain_metadata(registry: Path, commit: str | None = None
                        ) -> dict[str, dict[str, dict]]:
    """``{registry_path: {extractor_name: index entry}}`` as committed in
    :data:`PLAIN_METADATA_FILE` (HEAD unless ``commit``); empty without it."""
    commit = commit or head_commit(registry)
    text = _blob(registry, commit, PLAIN_METADATA_FILE) if commit else None
    out: dict[str, dict[str, dict]] = {}
    for n, line in enumerate((text or "").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            path = entry.pop("registry_path")
            out.setdefault(path, {})[entry["extractor_name"]] = entry
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise RegistryError(
                f"{PLAIN_METADATA_FILE} line {n} in {registry} is not a "
                f"metadata entry ({type(e).__name__}: {e})") from e
    return out


def commit_plain_metadata(registry: Path,
                          changes: dict[str, dict[str, dict | None]]
                          ) -> str | None:
    """Set (or, for None, remove) entries of :data:`PLAIN_METADATA_FILE` in
    one commit. Call with the registry :func:`locked`. Returns the new
    commit, or None if nothing changed."""
    head = head_commit(registry)
    if head is None:
        raise RegistryError(f"the registry {registry} has no commit yet")
    current = read_plain_metadata(registry, head)
    wanted = {p: dict(e) for p, e in current.items()}
    for path, by_extractor in changes.items():
        for name, entry in by_extractor.items():
            if entry is None:
                wanted.get(path, {}).pop(name, None)
            else:
                wanted.setdefault(path, {})[name] = entry
    wanted = {p: e for p, e in wanted.items() if e}
    if wanted == current:
        return None
    changed = sorted(p for p in set(wanted) | set(current)
                     if wanted.get(p) != current.get(p))
    noun = "repository" if len(changed) == 1 else "repositories"
    message = "".join(
        [f"[registry] Metadata of {len(changed)} plain git {noun}\n\n"]
        + [f"{p}: {', '.join(sorted(wanted.get(p, {}))) or 'none'}\n"
           for p in changed])
    text = "".join(
        json.dumps({"registry_path": p, **wanted[p][n]}, sort_keys=True,
                   ensure_ascii=False) + "\n"
        for p in sorted(wanted) for n in sorted(wanted[p]))
    blob = git(["hash-object", "-w", "--stdin"], cwd=registry,
               input=text).strip()
    return _commit(registry, head, [f"100644 {blob}\t{PLAIN_METADATA_FILE}"],
                   message, reflog="registry-ext: plain git metadata")
