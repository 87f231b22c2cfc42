"""Keeping the index's own records in step with the registry superdataset.

The index remembers which registry commit (``registry_head``) and which state
of the metalad store (``metadata_state``, a fingerprint of
``refs/datalad/*``) it reflects. :func:`reconcile_index` compares both with
the registry and rebuilds the index when they differ: after a process died
between committing and writing the index, after a ``git pull`` of the
registry, or when the index file is damaged (healed with a warning, since the
registry's own records are derived data).

:func:`rebuild_index` reads everything from the registry: the facts from its
committed records file (:mod:`registry`), the metadata from its aggregated
metalad store (:mod:`aggregate`) and, for plain git repositories (no dataset
id, so metalad cannot store theirs), from its committed
``.datalad/registry/plain-git-metadata.jsonl``.

Checking costs two git calls. A long-running process (the Python API, a
server) repeats the check only when the registry's refs have changed on disk
(a stat of a few files, see :func:`_refs_stamp`).
"""
from __future__ import annotations

import logging
import os
import shlex
import threading
from datetime import datetime, timezone
from pathlib import Path

from datalad_registry_ext import registry as reg
from datalad_registry_ext.aggregate import dump_aggregated
from datalad_registry_ext.gitcmd import git
from datalad_registry_ext.gitcmd import ok as git_ok
from datalad_registry_ext.index import Index, IndexCorrupt, local_index
from datalad_registry_ext.records import CHECK_FAILURE_FIELDS, new_record

lgr = logging.getLogger("datalad.registry_ext.index_sync")

# registry path -> the refs stamp at which the index was last found current
_checked: dict[str, tuple] = {}
_checked_lock = threading.Lock()


def _refs_stamp(registry: Path) -> tuple | None:
    """What changes on disk whenever a ref of the registry moves: HEAD, the
    branch it points to, ``packed-refs`` and the metalad refs. None if the
    layout is not the plain one (then the git check always runs)."""
    gitdir = registry / ".git"
    if not gitdir.is_dir():
        return None
    stamp = []
    try:
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    paths = [gitdir / "HEAD", gitdir / "packed-refs"]
    if head.startswith("ref: "):
        paths.append(gitdir / head[5:])
    for root, dirs, files in os.walk(gitdir / "refs" / "datalad"):
        dirs.sort()
        paths += [Path(root, f) for f in sorted(files)]
    for p in paths:
        try:
            st = p.stat()
            stamp.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            stamp.append((str(p), None))
        except OSError:
            return None
    return tuple(stamp)


def reconcile_index(registry: Path, index: Index | None = None) -> bool:
    """Bring the index's own records up to the registry's HEAD if needed.

    Returns True if the index had to be rebuilt.
    """
    registry = Path(registry)
    index = index or local_index(registry)
    stamp = _refs_stamp(registry)
    key = str(index.path)
    with _checked_lock:
        known = _checked.get(key)
    if stamp is not None and known == (stamp, index.fingerprint()):
        return False
    state = {"registry_head": reg.head_commit(registry),
             "metadata_state": reg.metadata_state(registry)}
    rebuilt = False
    try:
        current = index.exists() and all(
            index.meta().get(k) == v for k, v in state.items())
    except IndexCorrupt as e:
        # the registry's own records are derived data: heal, don't fail
        lgr.warning("%s; rebuilding it from the registry", e)
        current = False
    if not current:
        rebuild_index(registry, index)
        rebuilt = True
    with _checked_lock:
        _checked[key] = (stamp, index.fingerprint())
    return rebuilt


def own_records(registry: Path, index: Index | None = None) -> list[dict]:
    """The registry's own records from the index, rebuilt from the registry
    first if the index file is damaged in any way."""
    index = index or local_index(registry)
    try:
        return index.records()
    except IndexCorrupt as e:
        lgr.warning("%s; rebuilding it from the registry", e)
        rebuild_index(registry, index)
        return index.records()


def rebuild_index(registry: Path, index: Index | None = None) -> int:
    """Rewrite the index's own records from the registry superdataset.

    Metadata that only the index had is kept (of plain git repositories,
    extracted before such metadata was committed to the registry). Returns
    the record count.
    """
    registry = Path(registry)
    index = index or local_index(registry)
    with index.transaction(fresh=True) as txn:
        head = reg.head_commit(registry)
        entries = reg.read_entries(registry, head) if head else {}
        try:
            previous = {r["url"]: r for r in index.records()
                        if isinstance(r, dict) and "url" in r}
        except IndexCorrupt:  # exactly what a rebuild replaces
            previous = {}
        records = []
        for path, entry in sorted(entries.items()):
            rec = new_record(entry["url"])
            rec.update({k: v for k, v in entry.items() if v is not None})
            rec["registry_path"] = path
            old = previous.get(rec["url"])
            if old:
                rec["metadata"] = old.get("metadata") or []
                rec["extraction_failures"] = old.get("extraction_failures") or {}
                # registry-update's checks live in the index only: a rebuild
                # must not restart a back-off or re-check what was checked
                for f in CHECK_FAILURE_FIELDS:
                    rec[f] = old.get(f)
                if str(old.get("last_chk_dt") or "") > str(
                        rec.get("last_chk_dt") or ""):
                    rec["last_chk_dt"] = old["last_chk_dt"]
            records.append(rec)
        if head:
            metadata_from_registry(
                registry, {r["registry_path"]: r for r in records})
        txn.replace_all(records)
        state = reg.metadata_state(registry)
        txn.set_meta(registry_head=head, metadata_state=state)
    # the index changed because the registry did: the moment to notice
    # records that arrived without their metadata
    problem = metadata_refs_problem(registry, records) if head else None
    if problem:
        _warn_once(registry, (head, state), problem)
    return len(records)


# -- metadata refs of a cloned registry ----------------------------------------

# (registry, registry state) already warned about, and warnings a command has
# not yet reported in its results
_warned: set[tuple] = set()
_pending: dict[str, str] = {}

_TVL_REF = "refs/datalad/dataset-tree-version-list"


def metadata_refs_problem(registry: Path, records: list[dict]) -> str | None:
    """What is wrong with the metadata refs of a registry whose commits came
    from elsewhere (a clone, a pull), or None.

    ``git clone``/``datalad clone`` and ``git pull`` do not carry metalad's
    store (``refs/datalad/*``), so a clone can lack it or hold an older one
    than its records: search would show no metadata, or old metadata next to
    a new HEAD, without a word. A registry whose HEAD was last moved by this
    package (its reflog says so) wrote its own store and is not checked:
    there a dataset without metadata for its HEAD was not extracted
    (``--no-extract``, a failure), which ``registry-extract`` handles.
    ``records``: the registry's records with their metadata as read from
    the registry.
    """
    registry = Path(registry)
    last = git(["reflog", "-1", "--format=%gs", "HEAD"], cwd=registry,
               check=False).strip()
    if last.startswith("registry-ext:"):
        return None
    remote = _fetch_remote(registry)
    datasets = [r for r in records if r.get("ds_id")]
    if remote is None or not datasets:
        return None
    behind = [r for r in datasets
              if not any(e.get("dataset_version") == r.get("head")
                         for e in r.get("metadata") or [])]
    has_store = git_ok(["rev-parse", "--verify", "-q", _TVL_REF], registry)
    if has_store and not behind:
        return None
    fetch = (f"git -C {shlex.quote(str(registry))} fetch "
             f"{shlex.quote(remote)} 'refs/datalad/*:refs/datalad/*'")
    if not has_store:
        return (f"the registry {registry} has no metadata refs "
                f"(refs/datalad/*, which clone and pull do not fetch), so "
                f"the metadata of its {len(datasets)} registered datasets is "
                f"missing; fetch it with: {fetch}")
    return (f"the metadata refs of the registry {registry} are older than its "
            f"records: {len(behind)} of its {len(datasets)} registered "
            f"datasets have no metadata for their registered HEAD (e.g. "
            f"{behind[0]['url']}); fetch the current metadata with: {fetch} "
            f"(if the registry it came from has not extracted it either, "
            f"'datalad registry-extract -d {shlex.quote(str(registry))}' "
            f"does it here)")


def _fetch_remote(registry: Path) -> str | None:
    """The remote the registry's branch comes from: its upstream, else
    ``origin``, else the only remote; None if it has none."""
    branch = git(["symbolic-ref", "--short", "-q", "HEAD"], cwd=registry,
                 check=False).strip()
    if branch:
        upstream = git(["config", f"branch.{branch}.remote"], cwd=registry,
                       check=False).strip()
        if upstream and upstream != ".":
            return upstream
    remotes = git(["remote"], cwd=registry, check=False).split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None


def _warn_once(registry: Path, state: tuple, message: str) -> None:
    key = (str(registry), *state)
    with _checked_lock:
        if key in _warned:
            return
        _warned.add(key)
        _pending[str(registry)] = message
    lgr.warning("%s", message)


#: the action of the outcome that reports the warning
REFS_ACTION = "registry_metadata_refs"


def refs_warning_outcomes(registry: Path) -> list[dict]:
    """The metadata refs warning this process logged for ``registry`` and
    no command has reported yet, as a result-shaped outcome (status ``ok``:
    nothing failed; it is for ``-f json`` readers, who see no log), or
    nothing."""
    with _checked_lock:
        message = _pending.pop(str(Path(registry)), None)
    if not message:
        return []
    return [{"action": REFS_ACTION, "path": str(registry), "type": "dataset",
             "status": "ok", "message": message}]


def metadata_from_registry(registry: Path, records: dict[str, dict], *,
                           plain: dict | None = None,
                           aggregated: list[dict] | None = None) -> None:
    """Fill records' ``metadata`` from the registry: the entries committed
    for plain git repositories (:func:`registry.read_plain_metadata`), then
    the aggregated metalad store.

    ``records`` maps registry paths to records (changed in place). Entries
    read from the registry replace those of the same extractor; others stay.
    ``plain`` and ``aggregated``, when given, are used instead of reading
    the whole file and store (a superdataset source reads only what changed,
    :mod:`superdatasets`).
    """
    if plain is None:
        plain = reg.read_plain_metadata(registry)
    if aggregated is None:
        aggregated = dump_aggregated(registry)
    for path, by_extractor in plain.items():
        rec = records.get(path)
        if rec is None:
            continue
        entries = {e["extractor_name"]: e for e in rec.get("metadata") or []}
        entries.update(by_extractor)
        rec["metadata"] = sorted(entries.values(),
                                 key=lambda e: e["extractor_name"])
    for item in aggregated:
        rec = records.get(item["dataset_path"])
        if rec is None:
            continue
        m = item["record"]
        when = m.get("extraction_time")
        try:
            when = datetime.fromtimestamp(float(when), timezone.utc).replace(
                microsecond=0).isoformat()
        except (TypeError, ValueError, OverflowError, OSError):
            pass
        entry = {
            "extractor_name": m.get("extractor_name"),
            "extractor_version": m.get("extractor_version"),
            "extraction_parameter": m.get("extraction_parameter") or {},
            "extracted_metadata": m.get("extracted_metadata"),
            "dataset_version": m.get("dataset_version"),
            "dataset_describe": (rec.get("head_describe")
                                 if m.get("dataset_version") == rec.get("head")
                                 else None),
            "extraction_time": when,
        }
        entries = {e["extractor_name"]: e for e in rec.get("metadata") or []}
        entries[entry["extractor_name"]] = entry
        rec["metadata"] = sorted(entries.values(),
                                 key=lambda e: e["extractor_name"])
