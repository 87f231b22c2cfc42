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
from datalad_registry_ext.gitcmd import RepositoryError, annex, git, read_gitmodules
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
        "annexed_files_in_wt_count": None,
        "annexed_files_in_wt_size": None,
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
    subs = []
    for props in read_gitmodules(clone, commit).values():
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
