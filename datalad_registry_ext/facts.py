"""Facts about one repository, computed with git and git-annex on a clone.

The clone cache keeps one clone per registered repository, so re-submission
only fetches. Facts are computed the way DataLad-Registry computes them
(reference: its ``_update_dataset_url_info``), plus ``head_dt`` and the
``subdatasets`` listed in ``.gitmodules``.

Everything here is plain functions over paths; failures raise
:class:`RepositoryError` with a message a user can act on, with any
credentials scrubbed from it.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

from datalad_registry_ext.records import strip_credentials

REMOTE = "origin"
_DATALAD_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class RepositoryError(RuntimeError):
    """A repository cannot be cloned, updated or described."""


# -- running git ----------------------------------------------------------------

def _git_env() -> dict:
    env = dict(os.environ)
    # never block on a password prompt: an unreachable or private URL must
    # fail with a message, not hang
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env.pop("GIT_INDEX_FILE", None)
    return env


def git(args, cwd=None, *, check=True, secrets=(), input=None,
        env=None) -> str:
    """Run git, return stdout; on failure raise RepositoryError."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, input=input, capture_output=True,
            text=True, env=env or _git_env())
    except OSError as e:
        raise RepositoryError(f"cannot run git: {e}") from e
    if check and proc.returncode != 0:
        msg = proc.stderr.strip() or proc.stdout.strip() or (
            f"git {args[0]} exited with {proc.returncode}")
        raise RepositoryError(scrub(_last_lines(msg), secrets))
    return proc.stdout


@functools.lru_cache(maxsize=1)
def _annex_program() -> list[str]:
    """How to run git-annex: the binary itself when we can find it.

    The PyPI ``git-annex`` wheel runs the binary through a Python wrapper
    script (and pyenv adds a shell shim): ~80 ms per call that the binary
    alone does not need.
    """
    try:
        import git_annex
        binary = Path(git_annex.__file__).with_name("git-annex")
        if os.access(binary, os.X_OK):
            return [str(binary)]
    except ImportError:
        pass
    return ["git", "annex"]


def annex(args, cwd, *, check=True) -> str:
    """Run a git-annex command in ``cwd``."""
    program = _annex_program()
    if program[0] == "git":
        return git(["annex", *args], cwd=cwd, check=check)
    try:
        proc = subprocess.run([*program, *args], cwd=cwd, capture_output=True,
                              text=True, env=_git_env())
    except OSError as e:
        raise RepositoryError(f"cannot run git-annex: {e}") from e
    if check and proc.returncode != 0:
        raise RepositoryError(_last_lines(proc.stderr.strip()) or
                              f"git-annex {args[0]} exited with {proc.returncode}")
    return proc.stdout


def _last_lines(msg: str, n: int = 3) -> str:
    lines = [ln for ln in msg.splitlines() if ln.strip()
             and not ln.startswith(("hint:", "warning: You appear"))]
    return "; ".join(lines[-n:])


def scrub(text: str, secrets=()) -> str:
    """Remove credentials (``user:pass@`` in URLs, given secrets) from text."""
    for s in secrets:
        if s:
            text = text.replace(s, strip_credentials(s))
    return re.sub(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", r"\1", text)


def local_repository_problem(path: Path) -> str | None:
    """Why a local directory cannot be registered, or None if it can."""
    path = Path(path)
    out = git(["rev-parse", "--is-bare-repository", "--show-toplevel"],
              cwd=path, check=False).split()
    if not out:
        return f"{path} is not a git repository"
    if out[0] == "true":
        return None
    if len(out) > 1 and Path(out[1]).resolve() != path.resolve():
        return (f"{path} is not a git repository, but a directory inside "
                f"the repository {out[1]}")
    return None


# -- the clone cache ----------------------------------------------------------------

def clone_or_update(source: str, dest: Path) -> tuple[Path, bool]:
    """Make ``dest`` an up-to-date clone of ``source``; return (path, is_new).

    ``source`` may carry credentials; they are used for this transfer only
    and never written to the clone's configuration. A new clone is made in a
    temporary directory and renamed into place, so an interrupted clone never
    leaves a half-made one at ``dest``.
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
        _init_annex(tmp)
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
    if _has_annex_branch(clone):
        _init_annex(clone)
        annex(["merge", "--quiet"], cwd=clone, check=False)


def _remote_head_branch(clone: Path) -> str | None:
    out = git(["symbolic-ref", "--quiet", "--short",
               f"refs/remotes/{REMOTE}/HEAD"], cwd=clone, check=False).strip()
    return out.split("/", 1)[1] if "/" in out else None


def _has_annex_branch(clone: Path) -> bool:
    return bool(git(["rev-parse", "--verify", "--quiet",
                     f"refs/remotes/{REMOTE}/git-annex"],
                    cwd=clone, check=False).strip())


def _init_annex(clone: Path) -> None:
    """Initialise git-annex in a clone of an annex repository.

    The clone is private (``annex.private``): it never records itself in the
    git-annex branch, so it cannot leak into anything pushed from it.
    """
    if not _has_annex_branch(clone):
        return
    if git(["config", "--get", "annex.uuid"], cwd=clone, check=False).strip():
        return
    git(["config", "annex.private", "true"], cwd=clone)
    annex(["init", "--quiet", "registry-ext clone cache"], cwd=clone)


# -- facts ------------------------------------------------------------------------------

def repository_facts(clone: Path) -> dict:
    """The record facts of a clone (see :mod:`records` for their meaning)."""
    clone = Path(clone)
    head = git(["rev-parse", "--verify", "--quiet", f"{REMOTE}/HEAD^{{commit}}"],
               cwd=clone, check=False).strip()
    if not head:
        head = git(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
                   cwd=clone, check=False).strip()
    if not head:
        raise RepositoryError("the repository has no commits")
    facts = {
        "ds_id": _dataset_id(clone, head),
        "annex_uuid": None,
        "head": head,
        "head_describe": git(["describe", "--tags", "--always", head],
                             cwd=clone).strip(),
        "head_dt": git(["log", "-1", "--format=%aI", head], cwd=clone).strip(),
        "branches": _branches(clone),
        "tags": _tags(clone),
        "annex_key_count": None,
        "annexed_files_in_wt_count": None,
        "annexed_files_in_wt_size": None,
        "git_objects_kb": _git_objects_kb(clone),
        "subdatasets": subdatasets_of(clone, head),
    }
    if _has_annex_branch(clone):
        facts.update(_annex_facts(clone))
    return facts


def _dataset_id(clone: Path, head: str) -> str | None:
    out = git(["config", "--blob", f"{head}:.datalad/config", "--get",
               "datalad.dataset.id"], cwd=clone, check=False).strip()
    return out if _DATALAD_ID.match(out) else None


def _branches(clone: Path) -> dict:
    out = git(["for-each-ref", f"refs/remotes/{REMOTE}/",
               "--format=%(objectname) %(refname:strip=3) "
               "%(authordate:iso8601-strict)"], cwd=clone)
    branches = {}
    for line in out.splitlines():
        sha, name, date = (line.split(" ", 2) + ["", ""])[:3]
        if name and name != "HEAD":
            branches[name] = {"hexsha": sha, "last_commit_dt": date or None}
    return branches


def _tags(clone: Path) -> list[dict]:
    # as DataLad's GitRepo.get_tags: oldest first, annotated tags peeled
    out = git(["for-each-ref", "refs/tags", "--sort=creatordate",
               "--format=%(refname:strip=2) %(objectname) %(object)"],
              cwd=clone)
    tags = []
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) >= 2:
            peeled = parts[2] if len(parts) > 2 and parts[2] else parts[1]
            tags.append({"name": parts[0], "hexsha": peeled})
    return tags


def _git_objects_kb(clone: Path) -> int:
    counts = {}
    for line in git(["count-objects", "-v"], cwd=clone).splitlines():
        key, _, value = line.partition(":")
        counts[key.strip()] = value.strip()
    return int(counts.get("size", 0)) + int(counts.get("size-pack", 0))


def _annex_facts(clone: Path) -> dict:
    # one call for both: what the remote has, and what HEAD's tree holds
    infos = _annex_json(clone, ["info", "--bytes", "--json", REMOTE, "."])
    remote_info = infos.get(f"info {REMOTE}", {})
    wt_info = infos.get("info .", {})
    annex_uuid = git(["config", "--get", f"remote.{REMOTE}.annex-uuid"],
                     cwd=clone, check=False).strip() or None
    if annex_uuid:
        try:
            annex_uuid = str(uuid.UUID(annex_uuid))
        except ValueError:
            annex_uuid = None

    def number(info, key):
        value = info.get(key)
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    return {
        "annex_uuid": annex_uuid,
        "annex_key_count": number(remote_info, "remote annex keys"),
        "annexed_files_in_wt_count": number(
            wt_info, "annexed files in working tree"),
        "annexed_files_in_wt_size": number(
            wt_info, "size of annexed files in working tree"),
    }


def _annex_json(clone: Path, args) -> dict:
    """``{command: record}`` of git-annex's JSON lines."""
    out = annex(args, cwd=clone, check=False)
    records = {}
    for line in out.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        records[rec.get("command", "")] = rec
    return records


# -- subdatasets -------------------------------------------------------------------------

def subdatasets_of(clone: Path, commit: str) -> list[dict]:
    """``[{path, url, ds_id}]`` from ``.gitmodules`` at ``commit``.

    A ``.gitmodules`` that git cannot parse raises RepositoryError.
    """
    probe = subprocess.run(
        ["git", "cat-file", "-e", f"{commit}:.gitmodules"], cwd=clone,
        capture_output=True, env=_git_env())
    if probe.returncode != 0:
        return []
    proc = subprocess.run(
        ["git", "config", "--blob", f"{commit}:.gitmodules", "--list", "-z"],
        cwd=clone, capture_output=True, text=True, env=_git_env())
    if proc.returncode != 0:
        detail = _last_lines(proc.stderr.strip(), 1)
        raise RepositoryError(f"its .gitmodules is broken ({detail})")
    entries: dict[str, dict] = {}
    for item in proc.stdout.split("\0"):
        key, _, value = item.partition("\n")
        m = re.match(r"^submodule\.(.+)\.([^.]+)$", key)
        if m:
            entries.setdefault(m[1], {})[m[2].lower()] = value
    subs = []
    for name, props in entries.items():
        path = props.get("path")
        if not path:
            continue
        ds_id = props.get("datalad-id")
        subs.append({
            "path": path,
            "url": strip_credentials(props["url"]) if props.get("url") else None,
            "ds_id": ds_id if ds_id and _DATALAD_ID.match(ds_id) else None,
        })
    return sorted(subs, key=lambda s: s["path"])
