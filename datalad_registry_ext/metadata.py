"""Metadata of registered datasets: run the extractors, store the results.

:func:`extract` is what ``registry-extract`` (and ``registry-submit``, right
after registering) runs. For the chosen records it runs the configured
extractors on their clones in the clone cache (:mod:`extraction`) and stores
what they produced twice, consistently:

- in the index record's ``metadata`` list (the latest entry per extractor)
  and ``extraction_failures`` (``{extractor: {message, time, count}}``, the
  count of consecutive failures; cleared by the next success);
- in the registry superdataset as aggregated metalad metadata at the
  dataset's subdataset path (:mod:`aggregate`), all in one batch; for
  repositories without a DataLad dataset id (plain git), which metalad
  cannot store, in the committed file
  ``.datalad/registry/plain-git-metadata.jsonl`` instead (one commit per
  batch, only when it changed), so a clone of the registry has it too.

A failed extraction never removes what an earlier one produced.
"""
from __future__ import annotations

import logging
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from datalad import cfg

from datalad_registry_ext import config, extraction
from datalad_registry_ext import registry as reg
from datalad_registry_ext.aggregate import add_aggregated
from datalad_registry_ext.clones import clone_or_update, head_of, using
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.gitcmd import RepositoryError
from datalad_registry_ext.index import local_index
from datalad_registry_ext.index_sync import (
    REFS_ACTION,
    own_records,
    reconcile_index,
    refs_warning_outcomes,
)
from datalad_registry_ext.query.parser import (
    EXTRACTOR_ALIASES,
    canonical_extractor,
)
from datalad_registry_ext.records import canonical_url, now_iso

# the index entry of one extractor's metadata (upstream's URLMetadata + time)
ENTRY_KEYS = ("extractor_name", "extractor_version", "extraction_parameter",
              "extracted_metadata", "dataset_version", "dataset_describe",
              "extraction_time")


def configured_extractors() -> list[str]:
    """``datalad.registry.extractors``: names separated by spaces or commas
    (or the item given several times); short names (``bids``, ``core``, ...,
    see ``EXTRACTOR_ALIASES``) become full names."""
    value = cfg.get(config.EXTRACTORS, get_all=True)
    if value is None:
        return list(config.DEFAULT_EXTRACTORS)
    values = value if isinstance(value, tuple) else (value,)
    return canonical_extractors(values)


def canonical_extractors(names) -> list[str]:
    """Extractor names (a string of names separated by spaces or commas, or
    a list of such strings) as a list of full names without repeats."""
    if isinstance(names, str):
        names = [names]
    out = []
    for v in names or ():
        out += [canonical_extractor(n) for n in re.split(r"[\s,]+", str(v))
                if n]
    return list(dict.fromkeys(out))


def is_unknown_extractor(name: str) -> bool:
    """No installed package provides an extractor of that (full) name. An
    extractor that is installed but fails to load is not unknown: that is a
    failure to record."""
    try:
        return extraction.resolve_extractor(name) is None
    except Exception:
        return False


def known_extractors_text() -> str:
    """The known extractor names, for messages: the defaults with their
    short names."""
    short = {}
    for alias, full in EXTRACTOR_ALIASES.items():
        short.setdefault(full, []).append(alias)
    return ", ".join(
        n + (f" ({'/'.join(short[n])})" if n in short else "")
        for n in config.DEFAULT_EXTRACTORS)


def unknown_extractor_message(name: str) -> str:
    provider = extraction.provider_of(name)
    hint = (f"install {provider}" if provider else
            "no known package provides an extractor of that name")
    return (f"extractor '{name}' is not installed ({hint}); nothing was "
            f"extracted or recorded for it. Known extractors: "
            f"{known_extractors_text()}, or any other installed metalad "
            f"extractor")


def split_unknown(names) -> tuple[list[str], list[str]]:
    """``(known, unknown)`` full names of ``names``."""
    names = canonical_extractors(names)
    unknown = [n for n in names if is_unknown_extractor(n)]
    return [n for n in names if n not in unknown], unknown


def _refusal(registry: Path, name: str) -> dict:
    return {"action": ACTION, "path": str(registry), "type": "dataset",
            "status": "impossible", "extractor": name, "url": None,
            "registry_path": None, "metadata": None,
            "message": unknown_extractor_message(name)}


def select_records(registry: Path, datasets: list[str] | None, *,
                   force: bool = False
                   ) -> tuple[list[dict], list[tuple[str, str]]]:
    """The registry's own records that DATASET arguments name.

    Each argument is a registered URL, a local path, or a DataLad dataset id
    (all records with that id). Without arguments: every record whose
    metadata is missing or older than its current HEAD (with ``force``:
    every record). Returns ``(records, [(argument, problem), ...])``.
    """
    reconcile_index(registry)
    records = own_records(registry)
    if not datasets:
        return [r for r in records if force or _stale(r)], []
    by_key = {canonical_url(r["url"]): r for r in records}
    chosen, problems = {}, []
    for arg in datasets:
        found = []
        if _is_uuid(arg):
            found = [r for r in records if r.get("ds_id") == arg.lower()]
        else:
            key = canonical_url(arg)
            if key not in by_key and Path(arg).expanduser().exists():
                key = canonical_url(str(Path(arg).expanduser().absolute()))
            if key in by_key:
                found = [by_key[key]]
        if not found:
            problems.append((arg, f"{arg} is not registered in {registry} "
                                  "(register it with registry-submit)"))
        for r in found:
            chosen[r["url"]] = r
    return list(chosen.values()), problems


def _stale(record: dict) -> bool:
    entries = record.get("metadata") or []
    return not entries or any(e.get("dataset_version") != record.get("head")
                              for e in entries)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def extract(registry: Path, records: list[dict], extractors: list[str], *,
            force: bool = False, jobs: int = 1,
            progress: Callable[[int, int], None] | None = None
            ) -> Iterator[dict]:
    """Extract and store metadata; yield one outcome per (record, extractor).

    An outcome is shaped like a result record (``action``, ``path``,
    ``type``, ``status``, ``message``) with ``url``, ``registry_path``,
    ``extractor`` and ``metadata`` (the stored index entry).

    Short names become full names. An extractor no installed package
    provides is refused once (one ``impossible`` outcome, before any record
    is touched); nothing is extracted or recorded for it. With ``force``,
    failures recorded earlier for such an extractor (or under a short name)
    are dropped from the records extracted.
    """
    registry = Path(registry)
    extractors, unknown = split_unknown(extractors)
    for name in unknown:
        yield _refusal(registry, name)
    if not extractors:
        return
    extraction.preload(extractors)
    done = [0]
    count_lock = threading.Lock()

    def one(rec):
        """(clone path, outcomes) or (None, why the clone is missing)."""
        try:
            # the clone is shared with the user's other registries: hold
            # its lock from the check of its HEAD to the end of the
            # extraction, so nobody moves it meanwhile
            with using(registry, canonical_url(rec["url"])) as path:
                if not (path / ".git").is_dir() or (
                        rec.get("head") and head_of(path) != rec["head"]):
                    # e.g. the clone cache was pruned, the index came from
                    # a clone of the registry, or that clone pulled a newer
                    # registry than the cache: clone again, or bring the
                    # clone up to date (metadata must describe the
                    # registered HEAD)
                    try:
                        clone_or_update(rec["url"], path)
                    except RepositoryError as e:
                        return None, f"its clone is missing and cloning " \
                                     f"failed: {e}"
                return path, extraction.extract_dataset(
                    path, extractors, previous=rec.get("metadata") or [],
                    force=force)
        except RegistryExtError as e:
            # another registry held the clone's lock too long, or its
            # references file cannot be written
            return None, str(e)
        finally:
            if progress:
                with count_lock:
                    done[0] += 1
                    progress(done[0], len(records))

    with _quiet_extractor_logs():
        if jobs <= 1 or len(records) <= 1:
            ran = [one(r) for r in records]
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                ran = list(pool.map(one, records))
    clones, results, todo = {}, [], []
    for rec, (path, got) in zip(records, ran):
        if path is None:
            yield _result(registry, {
                "url": rec["url"], "registry_path": rec.get("registry_path"),
                "extractor": None, "status": "error", "metadata": None,
                "message": f"cannot extract metadata of {rec['url']}: "
                           f"{got}"})
            continue
        clones[rec["url"]] = path
        results.append(got)
        todo.append(rec)
    if not todo:
        return

    now = now_iso()
    updated, to_aggregate, outcomes = [], [], []
    # {registry_path: {extractor: entry, or None to drop}} for the committed
    # file of plain git repositories' metadata
    plain: dict[str, dict] = {}
    for rec, per_extractor in zip(todo, results):
        new = dict(rec)
        entries = {e["extractor_name"]: e for e in rec.get("metadata") or []}
        failures = dict(rec.get("extraction_failures") or {})
        changed = False
        if force:
            # failures recorded under a short name or for an extractor that
            # is not installed (before such names were refused) can never
            # be cleared by a success: --force drops them
            for name in list(failures):
                if name in EXTRACTOR_ALIASES or is_unknown_extractor(name):
                    failures.pop(name)
                    changed = True
        clone = str(clones[rec["url"]])
        for o in per_extractor:
            o = dict(o, url=rec["url"], registry_path=rec.get("registry_path"))
            # name the dataset as the user knows it, not by its clone
            o["message"] = (o.get("message") or "").replace(clone, rec["url"])
            name = o["extractor"]
            if o["status"] == "ok" and o.get("metadata"):
                entry = {k: o["metadata"].get(k) for k in ENTRY_KEYS}
                o.update(_change(entries.get(name), entry))
                entries[name] = entry
                o["metadata"] = entry
                failures.pop(name, None)
                changed = True
                if o.get("metalad_record") and rec.get("registry_path"):
                    to_aggregate.append({"dataset_path": rec["registry_path"],
                                         "record": o["metalad_record"]})
                if rec.get("registry_path"):
                    # without a dataset id metalad cannot store it: commit
                    # it instead (and drop what was committed for a
                    # repository that has an id by now)
                    plain.setdefault(rec["registry_path"], {})[name] = (
                        None if o.get("metalad_record") else entry)
            elif o["status"] in ("error", "impossible"):
                count = (failures.get(name) or {}).get("count", 0) + 1
                failures[name] = {"message": o["message"], "time": now,
                                  "count": count}
                changed = True
            o.pop("metalad_record", None)
            outcomes.append(o)
        if changed:
            new["metadata"] = sorted(entries.values(),
                                     key=lambda e: e["extractor_name"])
            new["extraction_failures"] = failures
            updated.append(new)

    with reg.locked(registry):
        head = None
        if plain:
            try:
                head = reg.commit_plain_metadata(registry, plain)
            except reg.RegistryError as e:
                outcomes.append({
                    "url": None, "registry_path": None, "extractor": None,
                    "status": "error", "metadata": None,
                    "message": f"cannot commit the metadata of plain git "
                               f"repositories to {reg.PLAIN_METADATA_FILE} "
                               f"in the registry: {e}"})
        if to_aggregate:
            for res in add_aggregated(registry, to_aggregate):
                if res["status"] != "ok":
                    outcomes.append({
                        "url": None, "registry_path": res["dataset_path"],
                        "extractor": res.get("extractor_name"),
                        "status": "error", "metadata": None,
                        "message": f"cannot add {res.get('extractor_name')} "
                                   f"metadata of {res['dataset_path']} to the "
                                   f"registry: {res['message']}"})
        if updated:
            index = local_index(registry)
            with index.transaction() as txn:
                for new in updated:
                    current = txn.get(new["url"]) or new
                    current["metadata"] = new["metadata"]
                    current["extraction_failures"] = new["extraction_failures"]
                    txn.put(current)
                meta = {"metadata_state": reg.metadata_state(registry)}
                if head:
                    meta["registry_head"] = head
                txn.set_meta(**meta)
    for o in outcomes:
        yield _result(registry, o)


ACTION = "registry_extract"
# the action of the metadata refs warning (index_sync), for the commands
REFS_ACTION = REFS_ACTION


def _result(registry: Path, o: dict) -> dict:
    """An outcome in the shape of a result record (action, path, type)."""
    path = registry / o["registry_path"] if o.get("registry_path") else registry
    return {"action": ACTION, "path": str(path), "type": "dataset",
            "status": o["status"], "message": o["message"],
            "url": o.get("url"), "extractor": o.get("extractor"),
            "registry_path": o.get("registry_path"),
            "metadata": o.get("metadata"), "change": o.get("change"),
            "previous_version": o.get("previous_version")}


def _change(old: dict | None, new: dict) -> dict:
    """What a successful extraction changed, as result fields: ``change``
    is ``new`` (no earlier metadata of that extractor), ``updated`` (of
    another dataset version, or other content) or ``unchanged`` (the same
    content extracted again at the same version, e.g. with ``--force``);
    ``previous_version`` the dataset version of the earlier metadata."""
    if not old:
        return {"change": "new", "previous_version": None}
    same = (old.get("dataset_version") == new.get("dataset_version")
            and old.get("extracted_metadata") == new.get("extracted_metadata"))
    return {"change": "unchanged" if same else "updated",
            "previous_version": old.get("dataset_version")}


def extract_registered(registry: Path, datasets: list[str] | None,
                       extractors: list[str] | None = None, *,
                       force: bool = False, jobs: int = 1,
                       progress: Callable[[int, int], None] | None = None
                       ) -> Iterator[dict]:
    """What ``registry-extract`` does: choose the records DATASET arguments
    name (:func:`select_records`) and extract them; yield result-shaped
    outcomes."""
    registry = Path(registry)
    if not reg.is_registry(registry):
        yield {"action": ACTION, "path": str(registry), "type": "dataset",
               "status": "impossible",
               "message": f"there is no registry at {registry} "
                          "(registry-submit creates one)"}
        return
    # refuse unknown extractor names before touching any record
    extractors, unknown = split_unknown(
        extractors if extractors else configured_extractors())
    for name in unknown:
        yield _refusal(registry, name)
    if not extractors:
        return
    records, problems = select_records(registry, datasets, force=force)
    # selecting brought the index up to date: the moment a clone's missing
    # metadata refs are noticed
    yield from refs_warning_outcomes(registry)
    for arg, problem in problems:
        yield {"action": ACTION, "path": str(registry), "type": "dataset",
               "status": "impossible", "url": arg, "message": problem}
    if not records:
        if not datasets:
            yield {"action": ACTION, "path": str(registry), "type": "dataset",
                   "status": "notneeded",
                   "message": "all registered datasets have metadata for "
                              "their current HEAD"}
        return
    yield from extract(registry, records, extractors, force=force,
                       jobs=jobs, progress=progress)


@contextmanager
def _quiet_extractor_logs():
    """metalad's extractors report progress at INFO level on every dataset;
    our own progress bar says the same, once."""
    logger = logging.getLogger("datalad.metadata.extractors")
    if logger.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)
