"""Facts about one repository, computed with git and git-annex on its clone.

Facts are computed the way DataLad-Registry computes them (reference: its
``_update_dataset_url_info``), plus ``head_dt`` and the ``subdatasets``
listed in ``.gitmodules``. Plain functions over paths; failures raise
:class:`~datalad_registry_ext.gitcmd.RepositoryError` with a message a user
can act on.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

from datalad_registry_ext.clones import REMOTE, has_annex_branch
from datalad_registry_ext.gitcmd import (
    RepositoryError, annex, decode, git, read_gitmodules, run,
)
from datalad_registry_ext.records import strip_credentials

_DATALAD_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def local_repository_problem(path: Path) -> str | None:
    """Why a local directory cannot be registered, or None if it can."""
    path = Path(path)
    # one line each: a top-level path may contain spaces
    out = git(["rev-parse", "--is-bare-repository", "--show-toplevel"],
              cwd=path, check=False).splitlines()
    if not out:
        return f"{path} is not a git repository"
    if out[0] == "true":
        return None
    if len(out) > 1 and Path(out[1]).resolve() != path.resolve():
        return (f"{path} is not a git repository, but a directory inside "
                f"the repository {out[1]}")
    return None


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
        "annex_keys_known_count": None,
        "annexed_files_in_wt_count": None,
        "annexed_files_in_wt_size": None,
        "annexed_files_in_wt_unknown_size_count": None,
        "git_objects_kb": _git_objects_kb(clone),
        "subdatasets": subdatasets_of(clone, head),
    }
    if has_annex_branch(clone):
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

    size, unknown = annex_size(wt_info.get(
        "size of annexed files in working tree"))
    return {
        "annex_uuid": annex_uuid,
        "annex_key_count": number(remote_info, "remote annex keys"),
        "annex_keys_known_count": _known_keys(clone),
        "annexed_files_in_wt_count": number(
            wt_info, "annexed files in working tree"),
        "annexed_files_in_wt_size": size,
        "annexed_files_in_wt_unknown_size_count": unknown,
    }


# git-annex's size with --bytes: "77973871", or "77973871 (+ 1 unknown
# size)" when some files have keys without a size (URL keys added with
# addurl --relaxed/--fast): the number of those files follows the "+"
_ANNEX_SIZE = re.compile(r"^\s*(\d+)(?:\s*\(\+\s*(\d+)\s+unknown size\))?\s*$")


def annex_size(value) -> tuple[int | None, int | None]:
    """(bytes of the files of known size, number of files of unknown size)
    of git-annex's size text; (None, None) if it is not one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, 0
    m = _ANNEX_SIZE.match(value) if isinstance(value, str) else None
    if not m:
        return None, None
    return int(m[1]), int(m[2] or 0)


def _known_keys(clone: Path) -> int | None:
    """How many keys the remote's git-annex branch records as present in
    some repository (special remotes, the web included) that is not dead.

    ``git annex info <remote>`` counts one repository's keys; no git-annex
    command counts them all but ``whereis --all``, which takes seconds per
    ten thousand keys. The location logs are read directly instead (one
    ``ls-tree`` and one ``cat-file --batch``): ``<hash>/<hash>/<key>.log``,
    lines ``<timestamp>s <1|0|X> <uuid>``, the latest line of a UUID wins.
    None if the branch cannot be read.
    """
    branch = f"refs/remotes/{REMOTE}/git-annex"
    proc = run(["ls-tree", "-r", "-z", "--full-tree", branch], clone)
    if proc.returncode != 0:
        return None
    logs, trust = [], None
    for entry in proc.stdout.split(b"\0"):
        meta, _, path = entry.partition(b"\t")
        parts = meta.split()
        if len(parts) != 3 or parts[1] != b"blob":
            continue
        if path == b"trust.log":
            trust = parts[2]
        elif path.endswith(b".log") and path.count(b"/") == 2:
            logs.append(parts[2])
    blobs = _read_blobs(clone, ([trust] if trust else []) + logs)
    if blobs is None:
        return None
    dead = set()
    if trust:
        # "<uuid> <level> timestamp=<t>s"; the latest line of a UUID wins
        level = _latest(((f[2] if len(f) > 2 else "", f[0], f[1])
                         for f in (ln.split() for ln in blobs[0].splitlines())
                         if len(f) >= 2))
        dead = {u for u, lv in level.items() if lv == "X"}
        blobs = blobs[1:]
    return sum(
        any(st == "1" and u not in dead for u, st in _latest(
            (f[0], f[2], f[1]) for f in (ln.split() for ln in text.splitlines())
            if len(f) == 3).items())
        for text in blobs)


def _latest(lines) -> dict:
    """``{key: value}`` of (timestamp text, key, value) lines, the one with
    the latest timestamp winning (of equal ones, the later line)."""
    best = {}
    for stamp, key, value in lines:
        t = _timestamp(stamp)
        prev = best.get(key)
        if prev is None or t >= prev[0]:
            best[key] = (t, value)
    return {k: v for k, (_, v) in best.items()}


def _timestamp(text: str) -> float:
    text = text.removeprefix("timestamp=").removesuffix("s")
    try:
        return float(text)
    except ValueError:
        return 0.0


def _read_blobs(clone: Path, shas: list[bytes]) -> list[str] | None:
    """The texts of the blobs ``shas`` (one ``cat-file --batch``), or None."""
    if not shas:
        return []
    proc = run(["cat-file", "--batch"], clone, input=b"\n".join(shas) + b"\n")
    if proc.returncode != 0:
        return None
    out, pos, data = [], 0, proc.stdout
    for _ in shas:
        eol = data.find(b"\n", pos)
        header = data[pos:eol].split()
        if eol < 0 or len(header) != 3:
            return None
        size = int(header[2])
        out.append(decode(data[eol + 1:eol + 1 + size]))
        pos = eol + 1 + size + 1  # the content, and a newline after it
    return out


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
    """``[{path, url, ds_id}]`` from ``.gitmodules`` at ``commit``, ``url``
    as written there (the search adds its other spellings), and
    ``datalad_url`` where ``.gitmodules`` has a ``datalad-url``.

    A ``.gitmodules`` that git cannot parse raises RepositoryError.
    """
    subs = []
    for props in read_gitmodules(clone, commit).values():
        path = props.get("path")
        if not path:
            continue
        ds_id = props.get("datalad-id")
        sub = {
            "path": path,
            "url": strip_credentials(props["url"]) if props.get("url") else None,
            "ds_id": ds_id if ds_id and _DATALAD_ID.match(ds_id) else None,
        }
        # DataLad's own URL of the subdataset (e.g. a RIA URL git cannot
        # clone); only where there is one, so that records of subdatasets
        # without it keep their shape (and no change is reported)
        if props.get("datalad-url"):
            sub["datalad_url"] = strip_credentials(props["datalad-url"])
        subs.append(sub)
    return sorted(subs, key=lambda s: s["path"])
