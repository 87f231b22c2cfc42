"""Aggregated metalad metadata in the registry superdataset.

Each registered dataset's metadata records are stored in the registry's own
metalad store (``refs/datalad/*`` of the registry repository) as
*aggregated* records: ``dataset_path`` is the dataset's subdataset path in
the registry, ``root_dataset_id`` the registry's dataset id and
``root_dataset_version`` the registry's HEAD commit at the time of adding.
So ``datalad meta-dump -d REGISTRY -r`` lists every registered dataset's
records at its path, and a clone of the registry that fetches
``refs/datalad/*`` (``git fetch origin 'refs/datalad/*:refs/datalad/*'``)
carries them.

What metalad 0.4.22 does with ``root_dataset_version`` (and what we do):

- Each root version gets its own dataset tree in the store, created empty,
  and ``meta-dump`` without ``@VERSION`` reports *all* stored root versions:
  records added at registry commit A would still be listed after records of
  the same dataset were added at B, C, ... So :func:`add_aggregated` keeps
  one record per ``(dataset_path, extractor_name)`` in the whole store: it
  removes the dataset's records from every root version's tree, adds the new
  records at the registry's HEAD and adds back the latest stored record of
  each extractor the batch did not run (next to the new ones when they
  describe the same dataset version, else at the root version they were
  at). A root version left without datasets is dropped from the tree
  version list, and the UUID set loses the entries of what was removed. A
  path holding several records of one extractor (a store written before
  this rule) is cleaned up the same way by the next addition.
- Adding a record whose ``dataset_version`` differs from the one already
  stored at the same path for the same root version would be silently
  attached to the old dataset version (metalad reuses the existing metadata
  root record and only checks the dataset id); removing the path first
  avoids that too.

So ``datalad meta-dump -d REGISTRY -r`` lists exactly the current records.
:func:`dump_aggregated` still keeps the latest record per ``(dataset_path,
extractor_name)`` (by extraction time), for stores written otherwise.

:func:`add_aggregated` adds all records with one in-process ``meta_add``
call, under one lock; when records are replaced the store is written twice
(the removal, then ``meta_add``), and its refs are put back as they were if
either fails. :func:`dump_aggregated` reads
the store directly through one ``git cat-file --batch`` process (metalad's
own reader spawns a git process per object); with ``use_metalad=True`` it
goes through ``datalad.api.meta_dump`` instead (the fallback whenever the
store has a layout the direct reader does not know). Only dataset-level
records are read; file-level records in the registry are not ours.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Iterable

from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.gitcmd import git
from datalad_registry_ext.gitcmd import ok as git_ok
from datalad_registry_ext.gitcmd import popen

lgr = logging.getLogger("datalad.registry_ext.aggregate")

_RECORD_KEYS = (
    "type", "extractor_name", "extractor_version", "extraction_parameter",
    "extraction_time", "agent_name", "agent_email", "dataset_id",
    "dataset_version", "extracted_metadata",
)
_MRR_NAME = ".datalad_metadata_root_record"
_TVL_REF = "refs/datalad/dataset-tree-version-list"
_STORE_VERSION = "2.0"


# -- adding ---------------------------------------------------------------------

def _entry_result(entry, status, message, record=None) -> dict:
    rec = record or (entry.get("record") if isinstance(entry, dict) else None)
    return {
        "dataset_path": entry.get("dataset_path") if isinstance(entry, dict)
        else None,
        "extractor_name": rec.get("extractor_name")
        if isinstance(rec, dict) else None,
        "status": status,
        "message": message,
    }


def _clean_path(path) -> str | None:
    if path is None:
        return None
    p = PurePosixPath(str(path))
    if p.is_absolute() or ".." in p.parts or str(p) in ("", "."):
        return None
    return str(p)


def add_aggregated(registry_path, entries: Iterable[dict]) -> list[dict]:
    """Add metalad records to the registry as aggregated metadata.

    ``entries``: ``[{"dataset_path": "github.com/o/r", "record": <metalad
    record>}, ...]`` where the record is a (dataset-level) record as
    :func:`datalad_registry_ext.extraction.extract_dataset` returns it
    (``metalad_record``). Returns one result per entry, in order:
    ``{"dataset_path", "extractor_name", "status": "ok"|"error",
    "message"}``. Does not raise for a bad entry.
    """
    # DataLad's API and metalad's model load on first use: reading the store
    # (every search's rebuild check) needs neither
    from datalad.api import meta_add
    from datalad.distribution.dataset import Dataset
    from dataladmetadatamodel.mapper.gitmapper.utils import locked_backend

    entries = list(entries)
    results: list[dict | None] = [None] * len(entries)
    registry = Dataset(str(registry_path))
    if registry.repo is None or registry.id is None:
        return [_entry_result(e, "error",
                              f"{registry_path} is not a DataLad dataset")
                for e in entries]
    root_id = registry.id
    root_version = registry.repo.get_hexsha()

    # validate, and build the aggregated records
    records, positions = [], []
    for i, entry in enumerate(entries):
        problem, record = _aggregated_record(entry, root_id, root_version)
        if problem:
            results[i] = _entry_result(entry, "error", problem)
            continue
        records.append(record)
        positions.append(i)

    # one dataset version per path in this batch: the latest extraction wins
    latest: dict[str, tuple] = {}
    for record in records:
        key = record["dataset_path"]
        cand = (record["extraction_time"], record["dataset_id"],
                record["dataset_version"])
        if key not in latest or cand[0] > latest[key][0]:
            latest[key] = cand
    keep_records, keep_positions = [], []
    for record, i in zip(records, positions):
        _, ds_id, ds_version = latest[record["dataset_path"]]
        if (record["dataset_id"], record["dataset_version"]) != (ds_id,
                                                               ds_version):
            results[i] = _entry_result(
                entries[i], "error",
                f"{record['dataset_path']}: record of dataset version "
                f"{record['dataset_version']} not added, the same batch adds "
                f"the newer version {ds_version}", record)
            continue
        keep_records.append(record)
        keep_positions.append(i)

    if keep_records:
        realm = registry.pathobj
        saved = None
        try:
            with locked_backend(realm):
                saved = _store_refs(realm)
                existing = _stored_records(realm)
                clear, carried = _supersede(existing, keep_records,
                                            root_id, root_version)
                _clear_paths(realm, root_id, existing, clear,
                             keep_records + carried)
                added = meta_add(
                    keep_records + carried, dataset=registry,
                    result_renderer="disabled", return_type="list",
                    on_failure="ignore")
                extra = added[len(keep_records):]
                added = added[:len(keep_records)]
                bad = [r for r in extra if r.get("status") != "ok"]
                if len(extra) != len(carried) or bad:
                    # the cleared paths lost records: put the store back
                    raise RuntimeError(
                        f"re-adding {len(carried)} kept records failed: "
                        f"{bad[0].get('message') if bad else 'no result'}")
        except Exception as e:
            if saved is not None:
                _restore_refs(realm, saved)
            for i in keep_positions:
                results[i] = _entry_result(
                    entries[i], "error",
                    f"adding metadata to {registry_path} failed: "
                    f"{type(e).__name__}: {e}")
        else:
            if len(added) != len(keep_records):
                lgr.warning("meta_add gave %d results for %d records",
                            len(added), len(keep_records))
            for n, i in enumerate(keep_positions):
                res = added[n] if n < len(added) else None
                status = res.get("status") if res else "error"
                message = (res.get("message") if res else
                           "no result from meta_add")
                if isinstance(message, tuple):
                    message = message[0] % message[1:]
                results[i] = _entry_result(
                    entries[i], "ok" if status == "ok" else "error",
                    str(message), keep_records[n])
    return results


def _aggregated_record(entry, root_id: str, root_version: str):
    if not isinstance(entry, dict):
        return "not an entry dict", None
    path = _clean_path(entry.get("dataset_path"))
    if path is None:
        return (f"invalid dataset_path {entry.get('dataset_path')!r} "
                f"(a relative path inside the registry)"), None
    record = entry.get("record")
    if not isinstance(record, dict):
        return f"{path}: no metalad record", None
    missing = [k for k in _RECORD_KEYS if k not in record]
    if missing:
        return f"{path}: record lacks {', '.join(missing)}", None
    if record.get("dataset_id") in (None, ""):
        return (f"{path}: record has no dataset_id (plain git repository?); "
                f"metalad cannot store it"), None
    if record.get("type") != "dataset":
        return f"{path}: only dataset-level records are aggregated", None
    out = {k: record[k] for k in _RECORD_KEYS}
    out["dataset_id"] = str(out["dataset_id"])
    out["extraction_time"] = float(out["extraction_time"])
    out.update(dataset_path=path, root_dataset_id=str(root_id),
               root_dataset_version=root_version)
    return None, out


def _store_refs(realm: Path) -> dict[str, str]:
    """``{ref: object}`` of the metalad store, to put back on failure."""
    out = git(["for-each-ref", "--format=%(objectname) %(refname)",
               "refs/datalad/"], cwd=realm, check=False)
    return dict(reversed(line.split(" ", 1)) for line in out.splitlines()
                if " " in line)


def _restore_refs(realm: Path, saved: dict[str, str]) -> None:
    """Point the store's refs back at ``saved`` (their objects are still in
    the repository: nothing prunes them within one call)."""
    try:
        for ref in _store_refs(realm):
            if ref not in saved:
                git(["update-ref", "-d", ref], cwd=realm)
        for ref, sha in saved.items():
            git(["update-ref", ref, sha], cwd=realm)
    except RegistryExtError as e:
        lgr.warning("cannot restore the metadata store of %s: %s", realm, e)


def _stored_records(realm: Path) -> list[dict]:
    """Every record of the store (all root versions, duplicates included)
    that sits in a root version's dataset tree."""
    try:
        records = records_direct(realm)
    except UnknownLayout:
        records = _records_via_metalad(realm)
    return [r for r in records
            if r.get("dataset_path") and r.get("root_dataset_version")]


def _supersede(existing: list[dict], new: list[dict], root_id: str,
               root_version: str) -> tuple[dict, list[dict]]:
    """What adding ``new`` at ``root_version`` replaces.

    metalad keeps one dataset tree per root (registry) version, and
    ``meta-dump`` lists them all; left alone, every registry commit would
    add another copy of a dataset's records. So a dataset's path keeps one
    record per extractor, in the whole store: the new one, else the latest
    stored one. Returns ``(clear, carried)``: ``{path: {root versions}}``
    whose records at that path are removed, and the stored records to add
    back (each at one root version, grouped by dataset version: a path holds
    one dataset version per root version). Paths the batch does not touch
    are cleared too when they hold more than one record of an extractor
    (stores written before this rule).
    """
    batch: dict[str, tuple] = {}
    for r in new:
        _, _, names = batch.get(r["dataset_path"], (None, None, set()))
        names.add(r["extractor_name"])
        batch[r["dataset_path"]] = (r["dataset_id"], r["dataset_version"],
                                    names)
    by_path: dict[str, list[dict]] = {}
    for r in existing:
        by_path.setdefault(r["dataset_path"], []).append(r)
    dirty = set(batch) | {
        p for p, rs in by_path.items()
        if len(rs) != len({r.get("extractor_name") for r in rs})}
    clear, carried = {}, []
    for path in sorted(dirty):
        stored = by_path.get(path, [])
        if not stored:
            continue
        clear[path] = {r["root_dataset_version"] for r in stored}
        ds_id, ds_version, names = batch.get(path, (None, None, set()))
        newest: dict[str, dict] = {}
        for r in stored:
            name = r.get("extractor_name")
            if name in names:
                continue  # replaced by the batch
            if name not in newest or float(r["extraction_time"]) > float(
                    newest[name]["extraction_time"]):
                newest[name] = r
        groups: dict[tuple, list[dict]] = {}
        for r in newest.values():
            groups.setdefault((str(r["dataset_id"]), r["dataset_version"]),
                              []).append(r)
        for (gid, gversion), rs in groups.items():
            if path in batch and (gid, gversion) == (str(ds_id), ds_version):
                target = root_version  # next to the new records
            else:
                # the root version of the group's latest record, unless the
                # new records take that one (one dataset version per path)
                roots = [r["root_dataset_version"] for r in sorted(
                    (r for r in stored if (str(r["dataset_id"]),
                                          r["dataset_version"])
                     == (gid, gversion)),
                    key=lambda r: float(r["extraction_time"]), reverse=True)]
                taken = {root_version} if path in batch else set()
                target = next((v for v in roots if v not in taken), None)
                if target is None:
                    lgr.debug("dropping %s metadata of %s@%s: the dataset "
                              "is now at %s", [r["extractor_name"] for r in rs],
                              path, gversion, ds_version)
                    continue
            for r in rs:
                carried.append({
                    **{k: r[k] for k in _RECORD_KEYS},
                    "dataset_id": gid,
                    "extraction_time": float(r["extraction_time"]),
                    "dataset_path": path, "root_dataset_id": str(root_id),
                    "root_dataset_version": target})
    return clear, carried


def _clear_paths(realm: Path, root_id: str, existing: list[dict],
                 clear: dict[str, set], to_add: list[dict]) -> None:
    """Remove the metadata root records at ``clear``'s paths from those
    root versions' dataset trees; drop a root version whose tree holds no
    dataset any more, and the UUID set's entries of what was removed
    (``meta_add`` then points them at the records it adds)."""
    if not clear:
        return
    # metalad's model: heavy, needed only when records are replaced
    from dataladmetadatamodel.common import get_top_level_metadata_objects
    from dataladmetadatamodel.mapper.gitmapper.objectreference import (
        flush_object_references,
    )
    from dataladmetadatamodel.metadatapath import MetadataPath

    tvl, uuid_set = get_top_level_metadata_objects("git", str(realm))
    if tvl is None or uuid_set is None:
        return
    present = set(tvl.versions_and_prefix_paths())
    by_root: dict[str, set] = {}
    for path, roots in clear.items():
        for root in roots:
            by_root.setdefault(root, set()).add(path)
    removed: set[tuple] = set()  # (dataset id, dataset version)
    dropped_roots = []
    for root, paths in sorted(by_root.items()):
        if (root, MetadataPath("")) not in present:
            continue
        _, _, tree = tvl.get_dataset_tree(root, MetadataPath(""))
        for path in sorted(paths):
            mpath = MetadataPath(path)
            if mpath not in tree:
                continue
            mrr = tree.get_metadata_root_record(mpath)
            removed.add((str(mrr.dataset_identifier), mrr.dataset_version))
            tree.mtree.remove_child_at(mpath / _MRR_NAME)
            # the git mapper cannot write empty tree nodes: prune them
            parts = mpath.parts
            while parts:
                node = tree.mtree.get_object_at_path(MetadataPath(*parts))
                if node is None:
                    break
                node.ensure_mapped()
                if getattr(node, "child_nodes", None):
                    break
                tree.mtree.remove_child_at(MetadataPath(*parts))
                parts = parts[:-1]
        tree.mtree.ensure_mapped()
        if set(tree.mtree.child_nodes) <= {_MRR_NAME}:
            # nothing but the registry's own (empty) record is left
            del tvl.version_set[root][MetadataPath("")]
            if not tvl.version_set[root]:
                del tvl.version_set[root]
            tvl.touch()
            dropped_roots.append(root)
    # UUID set: each dataset version's entry names one metadata root record
    cleared = {(p, v) for p, roots in clear.items() for v in roots}
    remaining = {(str(r["dataset_id"]), r["dataset_version"])
                 for r in existing
                 if (r["dataset_path"], r["root_dataset_version"])
                 not in cleared}
    readded = {(str(r["dataset_id"]), r["dataset_version"]) for r in to_add}
    stale = {k for k in removed if k in readded or k not in remaining}
    uuids = {str(u): u for u in uuid_set.uuids()}
    for ds_id, ds_version in sorted(stale):
        _drop_version(uuid_set, uuids.get(ds_id), ds_version)
    for root in dropped_roots:
        _drop_version(uuid_set, uuids.get(str(root_id)), root)
    tvl.write_out(str(realm))
    uuid_set.write_out(str(realm))
    flush_object_references(realm)


def _drop_version(uuid_set, uuid, version: str) -> None:
    from dataladmetadatamodel.metadatapath import MetadataPath
    if uuid is None:
        return
    versions = uuid_set.get_version_list(uuid)
    if (version, MetadataPath("")) not in set(
            versions.versions_and_prefix_paths()):
        return
    del versions.version_set[version][MetadataPath("")]
    if not versions.version_set[version]:
        del versions.version_set[version]
    versions.touch()
    if not len(versions) and len(uuid_set.uuid_set) > 1:
        # (the set is a git tree, and git cannot write an empty one)
        del uuid_set.uuid_set[uuid]
    uuid_set.touch()


# -- reading --------------------------------------------------------------------

def dump_aggregated(registry_path, *, use_metalad: bool = False
                    ) -> list[dict]:
    """The latest aggregated record per (dataset_path, extractor_name).

    Returns ``[{"dataset_path": ..., "record": <meta-dump record>}, ...]``
    sorted by dataset path and extractor name. Records of the registry
    dataset itself (dataset path "") are not included. Reads the local
    store (``refs/datalad/*``); an empty list if there is none.
    """
    if use_metalad:
        records = _records_via_metalad(registry_path)
    else:
        try:
            records = records_direct(registry_path)
        except UnknownLayout as e:
            lgr.debug("reading the metadata store directly failed (%s); "
                      "using meta_dump", e)
            records = _records_via_metalad(registry_path)
    return latest(records)


def latest(records: Iterable[dict]) -> list[dict]:
    best: dict[tuple, tuple] = {}
    for order, record in enumerate(records):
        path = record.get("dataset_path")
        if not path:
            continue
        key = (path, record.get("extractor_name"))
        rank = (float(record.get("extraction_time") or 0), order)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, record)
    return [{"dataset_path": k[0], "record": v[1]}
            for k, v in sorted(best.items(),
                               key=lambda kv: (kv[0][0], str(kv[0][1])))]


def _records_via_metalad(registry_path) -> list[dict]:
    if not git_ok(["rev-parse", "--verify", "-q", _TVL_REF], registry_path):
        return []
    from datalad.api import meta_dump  # heavy; the fallback reader only
    results = meta_dump(dataset=str(registry_path), path="", recursive=True,
                        result_renderer="disabled", return_type="list",
                        on_failure="ignore")
    return [r["metadata"] for r in results
            if r.get("status") == "ok" and r.get("metadata", {}).get("type")
            == "dataset"]


class UnknownLayout(Exception):
    pass


class ObjectReader:
    """Objects of one repository through a single ``git cat-file --batch``."""

    def __init__(self, repo):
        self.proc = popen(["cat-file", "--batch"], cwd=str(repo))
        self.cache: dict[str, object] = {}

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()

    def raw(self, name: str) -> tuple[str, bytes] | None:
        self.proc.stdin.write(name.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline()
        if not header:
            raise UnknownLayout("git cat-file ended")
        parts = header.split()
        if len(parts) != 3:
            return None  # "<name> missing"
        size = int(parts[2])
        data = self.proc.stdout.read(size)
        self.proc.stdout.read(1)
        return parts[1].decode(), data

    def json(self, name: str):
        if name in self.cache:
            return self.cache[name]
        obj = self.raw(name)
        if obj is None or obj[0] != "blob":
            raise UnknownLayout(f"object {name} missing or not a blob")
        value = json.loads(obj[1])
        self.cache[name] = value
        return value

    def tree(self, sha: str) -> list[tuple[str, str, str]]:
        """(mode, name, hexsha) entries of a tree object."""
        obj = self.raw(sha)
        if obj is None or obj[0] != "tree":
            raise UnknownLayout(f"object {sha} missing or not a tree")
        data, entries, pos = obj[1], [], 0
        hashlen = len(sha) // 2
        while pos < len(data):
            space = data.index(b" ", pos)
            nul = data.index(b"\0", space)
            mode = data[pos:space].decode()
            name = data[space + 1:nul].decode("utf-8", "surrogateescape")
            hexsha = data[nul + 1:nul + 1 + hashlen].hex()
            entries.append((mode, name, hexsha))
            pos = nul + 1 + hashlen
        return entries

    def root_records(self, sha: str, prefix: str = "") -> list[tuple]:
        """(dataset tree path, metadata root record blob) below a tree."""
        key = "tree-records:" + sha
        if key not in self.cache:
            found = []
            for mode, name, child in self.tree(sha):
                if mode.startswith("4"):
                    found.extend((f"{name}/{p}" if p else name, b)
                                 for p, b in self.root_records(child))
                elif name == _MRR_NAME:
                    found.append(("", child))
            self.cache[key] = found
        return [(f"{prefix}/{p}" if prefix and p else (p or prefix), b)
                for p, b in self.cache[key]]


def reference(obj, class_name: str) -> str | None:
    if not isinstance(obj, dict) or obj.get("@", {}).get("type") \
            != "Reference" or obj["@"].get("version") != _STORE_VERSION:
        raise UnknownLayout(f"unexpected reference {obj!r:.200}")
    if obj.get("class_name") != class_name:
        raise UnknownLayout(
            f"reference to {obj.get('class_name')}, expected {class_name}")
    location = obj.get("location")
    return None if location in (None, "*None*") else location


def records_direct(registry_path) -> list[dict]:
    repo = Path(registry_path)
    reader = ObjectReader(repo)
    try:
        tvl_obj = reader.raw(_TVL_REF)
        if tvl_obj is None:
            return []
        if tvl_obj[0] != "blob":
            raise UnknownLayout("tree version list is not a blob")
        tvl = json.loads(tvl_obj[1])
        if not isinstance(tvl, list):
            raise UnknownLayout("tree version list is not a list")
        out = []
        for item in tvl:
            tree_sha = reference(item["dataset_tree"], "MTreeNode")
            if tree_sha is None:
                continue
            prefix = item.get("path") or ""
            mrrs = reader.root_records(tree_sha)
            root = dict(mrrs).get("")
            if root is not None:
                root_mrr = reader.json(root)
                root_id = root_mrr["dataset_identifier"]
                root_version = root_mrr["dataset_version"]
            else:
                root_id, root_version = "<unknown>", item[
                    "primary_data_version"]
            for path, blob in mrrs:
                if prefix:
                    info = {"dataset_path": f"{prefix}/{path}" if path
                            else prefix}
                elif path:
                    info = {"root_dataset_id": root_id,
                            "root_dataset_version": root_version,
                            "dataset_path": path}
                else:
                    continue  # the registry's own records
                out.extend(mrr_records(reader, blob, info))
        return out
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UnknownLayout(f"{type(e).__name__}: {e}") from e
    finally:
        reader.close()


def mrr_records(reader: ObjectReader, blob: str, info: dict) -> list[dict]:
    mrr = reader.json(blob)
    md_ref = reference(mrr["dataset_level_metadata"], "Metadata")
    if md_ref is None:
        return []
    # the mapper stores a Reference blob that points to the Metadata blob
    md_loc = reference(reader.json(md_ref), "Metadata")
    if md_loc is None:
        return []
    metadata = reader.json(md_loc)
    if metadata.get("@", {}).get("version") != _STORE_VERSION:
        raise UnknownLayout("unknown metadata serialisation version")
    common = {"type": "dataset", **info,
              "dataset_id": mrr["dataset_identifier"],
              "dataset_version": mrr["dataset_version"]}
    out = []
    for name, instance_set in metadata["instance_sets"].items():
        for instance in instance_set["instance_set"].values():
            conf = instance["configuration"]
            out.append({
                **common,
                "extraction_time": instance["time_stamp"],
                "agent_name": instance["author"],
                "agent_email": instance["author_email"],
                "extractor_name": name,
                "extractor_version": conf["version"],
                "extraction_parameter": conf["parameter"],
                "extracted_metadata": instance["metadata_content"],
            })
    return out
