"""Running metadata extractors on one dataset clone.

:func:`extract_dataset` runs a list of extractors (entry-point names in group
``datalad.metadata.extractors``) on a local clone, in this process, and
returns one plain-data outcome per extractor::

    {"extractor": name,
     "status": "ok" | "notneeded" | "error" | "impossible",
     "message": str,
     "metadata": <index entry> | None,
     "metalad_record": <metalad record> | None}

The *index entry* is DataLad-Registry's ``URLMetadata`` row: ``extractor_name,
extractor_version, extraction_parameter, extracted_metadata, dataset_version``
(HEAD hexsha), ``dataset_describe`` (``git describe --tags --always``) and
``extraction_time`` (ISO 8601, UTC). The *metalad record* is the 10-key record
``meta-extract`` emits (``type, dataset_id, dataset_version, extractor_name,
extractor_version, extraction_parameter, extraction_time, agent_name,
agent_email, extracted_metadata``), with ``dataset_id`` as a string; it is
what :mod:`datalad_registry_ext.aggregate` adds to the registry.

Gates, in order (DataLad-Registry's ``extract_ds_meta`` plus ours):

1. a required file (:data:`REQUIRED_FILES`) missing from the clone's work
   tree -> ``notneeded`` ("no dataset_description.json");
2. ``previous`` (the index record's ``metadata`` list) already holds that
   extractor at the current HEAD, and not ``force`` -> ``notneeded``;
3. the extractor is not installed -> ``impossible``, naming the package
   that provides it;
4. the file the extractor reads (and, for ``bids_dataset``, README and
   participants.tsv) is annexed without content in the clone: its content,
   and nothing else, is fetched (``git annex get``, from ``origin`` first,
   then any remote of the dataset), only when its annex key records a size
   within ``datalad.registry.metadata-max-bytes``; when the content cannot
   be had or is over the cap -> ``impossible``, naming the file and why
   (:func:`datalad_registry_ext.clones.fetch_annexed`);
5. metadata files the extractor will read are first loaded with our safe
   loader (:mod:`datalad_registry_ext.extractors._files`: size cap, JSON/YAML
   errors with line and column, YAML alias-bomb guard, no reads outside the
   repository, "content not available" for annexed files without content)
   -> ``error`` with our message. This also covers extractors that parse
   the file themselves (metalad's ``metalad_studyminimeta``, the legacy
   ``frictionless_datapackage``/``datalad_rfc822``, datalad-catalog's
   ``datacite_gin``, datalad-neuroimaging's ``bids_dataset``).

``frictionless_datapackage`` metadata is the package document itself plus
the legacy extractor's keys (:func:`datapackage_shape`).

An extractor that raises or reports a non-ok status gives ``error`` with a
message naming the dataset, the extractor and the cause (no traceback); the
other extractors still run.

How each extractor runs (all in process, one Dataset object per clone):

- metalad's generation-3/4 extractors (``metalad_core``,
  ``metalad_studyminimeta``, ...) through ``datalad.api.meta_extract``
  (dataset level, ``result_renderer="disabled"``, ``on_failure="ignore"``),
  with the HEAD hexsha passed as context;
- the legacy (generation-2) extractors (``datalad_rfc822``,
  ``frictionless_datapackage``, ...) are instantiated directly, from
  datalad-metalad's copies, exactly as meta-extract would call them
  (``cls(ds, [ds.path]).get_metadata(True, False)``, version
  "un-versioned"). Not through meta-extract because, for extractors with
  ``NEEDS_CONTENT`` (all but two), metalad 0.4.22 runs ``ds.get(<dataset
  root>)`` first, i.e. downloads *every* annexed file of the dataset;
- ``bids_dataset`` and ``datacite_gin``: the original package's extractor
  (datalad-neuroimaging, datalad-catalog) when one is installed, otherwise
  ours; ``dandi`` (and ``dandi:files``, which has no entry point) ours.
  Generation-4 classes from packages other than datalad-metalad are run
  directly, following metalad's protocol (``get_required_content`` then
  ``extract``).

Plain git repositories (no DataLad dataset id): metalad's records need a
dataset id and ``meta-extract`` refuses such datasets. Extractors that run
through ``meta_extract`` are ``impossible`` there ("plain git repository
without a DataLad dataset id"). The others (ours, the originals, the legacy
ones) still run: their outcome carries the index entry and
``metalad_record`` None, so nothing is aggregated into the registry for
them (:mod:`datalad_registry_ext.metadata` commits those entries to the
registry instead). (``metalad_core`` is usually ``notneeded`` first: it
requires ``.datalad/config``.)
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from datalad.distribution.dataset import Dataset

from datalad_registry_ext.clones import fetch_annexed
from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    load_json,
    load_yaml,
    max_bytes,
    read_bytes,
)
from datalad_registry_ext.gitcmd import RepositoryError

lgr = logging.getLogger("datalad.registry_ext.extraction")

ENTRY_POINT_GROUP = "datalad.metadata.extractors"

# DataLad-Registry's table, plus the two legacy extractors we run by default.
REQUIRED_FILES: dict[str, tuple[str, ...]] = {
    "metalad_core": (".datalad/config",),
    "metalad_studyminimeta": (".studyminimeta.yaml",),
    "datacite_gin": ("datacite.yml",),
    "bids_dataset": ("dataset_description.json",),
    "dandi": ("dandiset.yaml",),
    "dandi:files": (".dandi/assets.json",),
    "datalad_rfc822": (".datalad/meta.rfc822",),
    "frictionless_datapackage": ("datapackage.json",),
}

# What to install for a missing extractor.
_LEGACY_NAMES = ("annex", "audio", "datacite", "datalad_core",
                 "datalad_rfc822", "exif", "frictionless_datapackage",
                 "image", "xmp")
PROVIDERS: dict[str, str] = {
    **{n: "datalad-metalad (or datalad-deprecated)" for n in _LEGACY_NAMES},
    "bids_dataset": "datalad-neuroimaging (or datalad-registry-ext)",
    "bids": "datalad-neuroimaging",
    "dicom": "datalad-neuroimaging",
    "nifti1": "datalad-neuroimaging",
    "nidm": "datalad-neuroimaging",
    "datacite_gin": "datalad-catalog (or datalad-registry-ext)",
    "dandi": "datalad-registry-ext",
    "dandi:files": "datalad-registry-ext",
}

# Original packages whose extractor is preferred over our light one.
ORIGINAL_DISTRIBUTIONS: dict[str, str] = {
    "bids_dataset": "datalad_neuroimaging",
    "datacite_gin": "datalad_catalog",
}

# Our builtins without an entry point.
_BUILTINS: dict[str, str] = {
    "dandi:files": "datalad_registry_ext.extractors.dandi:DandiFilesExtractor",
}

_OUR_DIST = "datalad_registry_ext"
_METALAD_DIST = "datalad_metalad"


def provider_of(name: str) -> str | None:
    if name in PROVIDERS:
        return PROVIDERS[name]
    if name.startswith("metalad_"):
        return "datalad-metalad"
    return None


# -- extractor lookup -----------------------------------------------------------

def _norm_dist(name: str | None) -> str:
    return (name or "").replace("-", "_").replace(".", "_").lower()


@dataclass(frozen=True)
class ExtractorEntry:
    """One candidate implementation of an extractor name."""
    name: str
    dist: str           # normalised distribution name
    load: Callable[[], type] = field(compare=False)


@lru_cache(maxsize=1)
def _entry_point_table() -> dict[str, list[ExtractorEntry]]:
    table: dict[str, list[ExtractorEntry]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = _norm_dist(ep.dist.name if ep.dist else None)
        table.setdefault(ep.name, []).append(
            ExtractorEntry(ep.name, dist, ep.load))
    for name, value in _BUILTINS.items():
        table.setdefault(name, []).append(
            ExtractorEntry(name, _OUR_DIST, _loader(value)))
    return table


def _loader(value: str) -> Callable[[], type]:
    def load():
        module, _, attr = value.partition(":")
        return getattr(importlib.import_module(module), attr)
    return load


@dataclass
class Resolved:
    name: str
    kind: str           # "metalad" | "legacy" | "direct"
    cls: type | None
    dist: str
    ours: bool


def resolve_extractor(name: str) -> Resolved | None:
    """Which implementation of ``name`` runs, and how; None if not installed.
    """
    candidates = _entry_point_table().get(name, [])
    if not candidates:
        return None
    by_dist = {c.dist: c for c in candidates}
    original = ORIGINAL_DISTRIBUTIONS.get(name)
    if original and original in by_dist:
        chosen = by_dist[original]
    elif _METALAD_DIST in by_dist:
        chosen = by_dist[_METALAD_DIST]
    elif _OUR_DIST in by_dist:
        chosen = by_dist[_OUR_DIST]
    else:
        # like metalad: prefer anything over datalad core, the last one wins
        others = [c for c in candidates if c.dist != "datalad"]
        chosen = (others or candidates)[-1]
    cls = chosen.load()
    kind = _kind_of(cls, chosen.dist)
    return Resolved(name, kind, cls, chosen.dist, chosen.dist == _OUR_DIST)


def _kind_of(cls, dist: str) -> str:
    # metalad (and what it pulls in) loads on the first extraction only
    from datalad_metalad.extractors.base import (
        BaseMetadataExtractor,
        MetadataExtractorBase,
    )
    if isinstance(cls, type) and issubclass(cls, BaseMetadataExtractor):
        return "legacy"
    if isinstance(cls, type) and issubclass(cls, MetadataExtractorBase) \
            and dist != _METALAD_DIST:
        return "direct"
    return "metalad"


# -- safe-loading gates ---------------------------------------------------------

def _studyminimeta_source(ctx: "_Context") -> str:
    return ctx.ds.config.obtain("datalad.metadata.studyminimeta-source",
                                default=".studyminimeta.yaml")


# extractor -> (loader, file or callable giving the file)
_GATES: dict[str, tuple[Callable, Any]] = {
    "metalad_studyminimeta": (load_yaml, _studyminimeta_source),
    "frictionless_datapackage": (load_json, "datapackage.json"),
    "datalad_rfc822": (read_bytes, ".datalad/meta.rfc822"),
    "bids_dataset": (load_json, "dataset_description.json"),
    "datacite_gin": (load_yaml, "datacite.yml"),
    "dandi": (load_yaml, "dandiset.yaml"),
    "dandi:files": (load_json, ".dandi/assets.json"),
}


# -- annexed metadata files -----------------------------------------------------

# Files an extractor may read besides its required one (_GATES): fetched when
# annexed and small enough, but an extraction without them still runs (our
# bids_dataset leaves them out; the original reads them through pybids).
_OPTIONAL_CONTENT: dict[str, tuple[str, ...]] = {
    "bids_dataset": ("participants.tsv", "README", "README.md", "README.txt",
                     "README.rst"),
}


def _fetch_content(ctx: "_Context", name: str) -> str | None:
    """Get the annexed content of the files ``name`` reads, and only those
    (as metalad's extractors declare their required content and meta-extract
    gets it). A file over the size cap, or whose content no remote of the
    dataset has, is a reason not to run the extractor: returned, naming the
    file. None when everything it needs is here."""
    gate = _GATES.get(name)
    if gate is None:
        return None
    relpath = gate[1](ctx) if callable(gate[1]) else gate[1]
    try:
        limit = max_bytes()
    except MetadataFileError:
        return None  # a broken setting: the safe loader reports it
    try:
        problems = fetch_annexed(
            ctx.path, [relpath, *_OPTIONAL_CONTENT.get(name, ())], limit)
    except RepositoryError as e:
        return f"{relpath}: content not available: {e}"
    if relpath in problems:
        return f"{relpath}: {problems[relpath]}"
    return None


# -- frictionless data packages ----------------------------------------------

def datapackage_shape(legacy, package):
    """``frictionless_datapackage`` metadata: the package's own document.

    The legacy extractor renames ``title`` to ``shortdescription`` and
    ``keywords`` to ``tag``, compacts ``author``/``contributors``/
    ``license(s)`` to strings and drops everything else (``resources``,
    ``sources``, ``created``, ...). Searches use the Data Package
    specification's names (``keywords``, ``resources.name``): the result is
    every top-level field of ``datapackage.json`` unchanged, plus the legacy
    keys the package does not have (``shortdescription``, ``tag``,
    ``conformsto``, ``license`` compacted from ``licenses``).
    """
    if not isinstance(package, dict):
        return legacy
    if not isinstance(legacy, dict):
        return package
    return {**legacy, **package}


# -- one dataset ----------------------------------------------------------------

class _Context:
    """What all extractors of one dataset share (computed once)."""

    def __init__(self, path: Path):
        self.path = path
        self.ds = Dataset(str(path))
        repo = self.ds.repo
        if repo is None:
            raise ValueError("not a git repository")
        self.sha = repo.get_hexsha()
        if self.sha is None:
            raise ValueError("the repository has no commits")
        self.id = self.ds.id
        self._agent = None
        self._describe = None

    @property
    def agent(self) -> tuple:
        if self._agent is None:
            cfg = self.ds.config
            self._agent = (cfg.get("user.name"), cfg.get("user.email"))
        return self._agent

    @property
    def describe(self) -> str | None:
        if self._describe is None:
            self._describe = self.ds.repo.describe(tags=True, always=True)
        return self._describe


def _outcome(name, status, message, metadata=None, record=None) -> dict:
    return {"extractor": name, "status": status, "message": message,
            "metadata": metadata, "metalad_record": record}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).replace(
        microsecond=0).isoformat()


def _plain(obj):
    """JSON-serialisable copy (UUIDs, MetadataPaths, ... become strings)."""
    return json.loads(json.dumps(obj, default=str))


def _message(msg) -> str:
    if isinstance(msg, tuple) and msg:
        try:
            return str(msg[0]) % tuple(msg[1:])
        except (TypeError, ValueError):
            return " ".join(map(str, msg))
    return "" if msg is None else str(msg)


def _split_names(extractors) -> list[str]:
    if isinstance(extractors, str):
        extractors = extractors.replace(",", " ").split()
    return [e for e in extractors if e]


def extract_dataset(clone_path, extractors, *, previous: Iterable = (),
                    force: bool = False) -> list[dict]:
    """Run ``extractors`` on the clone at ``clone_path``.

    Returns one outcome per extractor name, in the given order. Never raises
    for a problem of the dataset or of an extractor.
    """
    names = _split_names(extractors)
    path = Path(clone_path).absolute()
    try:
        ctx = _Context(path)
    except Exception as e:  # not a repository, no commits, ...
        return [_outcome(n, "error", f"{n} on {path}: cannot use the "
                         f"dataset: {_describe_exc(e)}") for n in names]

    done_at_head = {
        m.get("extractor_name") for m in (previous or ())
        if isinstance(m, Mapping) and m.get("dataset_version") == ctx.sha}
    return [_extract_one(ctx, name, done_at_head, force) for name in names]


def _describe_exc(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _extract_one(ctx: _Context, name: str, done_at_head: set,
                 force: bool) -> dict:
    where = f"{name} on {ctx.path}"
    for required in REQUIRED_FILES.get(name, ()):
        if not (ctx.path / required).exists() \
                and not (ctx.path / required).is_symlink():
            return _outcome(name, "notneeded", f"{where}: no {required}")
    if name in done_at_head and not force:
        return _outcome(name, "notneeded",
                        f"{where}: already extracted for {ctx.sha}")
    try:
        resolved = resolve_extractor(name)
    except Exception as e:
        return _outcome(name, "impossible",
                        f"{where}: extractor cannot be loaded: "
                        f"{_describe_exc(e)}")
    if resolved is None:
        provider = provider_of(name)
        hint = (f"install {provider}" if provider else
                "no known package provides an extractor of that name")
        return _outcome(name, "impossible",
                        f"{where}: extractor '{name}' is not installed "
                        f"({hint})")
    if resolved.kind == "metalad" and ctx.id is None:
        return _outcome(name, "impossible",
                        f"{where}: plain git repository without a DataLad "
                        f"dataset id; metalad cannot extract from it")

    problem = _fetch_content(ctx, name)
    if problem:
        return _outcome(name, "impossible", f"{where}: {problem}")

    gate = _GATES.get(name)
    loaded = None
    if gate and not resolved.ours:
        loader, relpath = gate
        if callable(relpath):
            relpath = relpath(ctx)
        try:
            loaded = loader(ctx.path, relpath, ref=ctx.sha)
        except MetadataFileError as e:
            return _outcome(name, "error", f"{where}: {e}")

    try:
        if resolved.kind == "metalad":
            record = _run_metalad(ctx, name)
        elif resolved.kind == "legacy":
            record = _run_legacy(ctx, name, resolved.cls)
        else:
            record = _run_gen4(ctx, name, resolved.cls)
    except _ExtractionFailed as e:
        return _outcome(name, "error", f"{where}: {e}")
    except Exception as e:
        lgr.debug("extractor %s raised on %s", name, ctx.path, exc_info=True)
        return _outcome(name, "error",
                        f"{where}: extractor raised {_describe_exc(e)}")

    if name == "frictionless_datapackage":
        record["extracted_metadata"] = datapackage_shape(
            record["extracted_metadata"], loaded)
    try:
        record = _plain(record)
    except Exception as e:
        return _outcome(name, "error",
                        f"{where}: extracted metadata is not JSON-"
                        f"serialisable: {_describe_exc(e)}")
    entry = {
        "extractor_name": name,
        "extractor_version": record["extractor_version"],
        "extraction_parameter": record["extraction_parameter"],
        "extracted_metadata": record["extracted_metadata"],
        "dataset_version": ctx.sha,
        "dataset_describe": ctx.describe,
        "extraction_time": _iso(record["extraction_time"]),
    }
    if ctx.id is None:
        record = None
    return _outcome(name, "ok", f"{where}: extracted", entry, record)


class _ExtractionFailed(Exception):
    pass


def _record(ctx: _Context, name: str, version: str, metadata) -> dict:
    agent_name, agent_email = ctx.agent
    return {
        "type": "dataset",
        "dataset_id": ctx.id,
        "dataset_version": ctx.sha,
        "extractor_name": name,
        "extractor_version": version,
        "extraction_parameter": {},
        "extraction_time": time.time(),
        "agent_name": agent_name,
        "agent_email": agent_email,
        "extracted_metadata": metadata,
    }


def _run_metalad(ctx: _Context, name: str) -> dict:
    from datalad.api import meta_extract  # heavy: loads every command

    results = meta_extract(
        name, dataset=ctx.ds, context={"dataset_version": ctx.sha},
        result_renderer="disabled", return_type="list", on_failure="ignore")
    ok = [r for r in results
          if r.get("status") == "ok" and r.get("metadata_record")]
    if ok:
        return dict(ok[0]["metadata_record"])
    problems = "; ".join(
        f"{r.get('status')}: {_message(r.get('message')) or 'no message'}"
        for r in results if r.get("status") != "ok")
    raise _ExtractionFailed(problems or "no metadata was produced")


def _run_legacy(ctx: _Context, name: str, cls) -> dict:
    extractor = cls(ctx.ds, [ctx.ds.path])
    metadata, _ = extractor.get_metadata(True, False)
    return _record(ctx, name, "un-versioned", metadata)


def _run_gen4(ctx: _Context, name: str, cls) -> dict:
    # metalad loads on the first extraction only (see _kind_of)
    from datalad_metalad.extractors.base import (
        DataOutputCategory,
        DatasetMetadataExtractor,
    )
    if not issubclass(cls, DatasetMetadataExtractor):
        raise _ExtractionFailed("not a dataset-level extractor")
    extractor = cls(ctx.ds, ctx.sha, {})
    category = extractor.get_data_output_category()
    if category != DataOutputCategory.IMMEDIATE:
        raise _ExtractionFailed(f"output category {category} not supported")
    required = extractor.get_required_content()
    if isinstance(required, bool):
        if not required:
            raise _ExtractionFailed("required content is not available")
    else:
        failed = [r for r in required
                  if r.get("status") in ("error", "impossible")]
        if failed:
            raise _ExtractionFailed(
                "required content is not available: " + "; ".join(
                    _message(r.get("message")) or str(r.get("path"))
                    for r in failed))
    result = extractor.extract(None)
    if not result.extraction_success:
        info = result.datalad_result_dict or {}
        raise _ExtractionFailed(
            _message(info.get("message"))
            or f"extraction failed (status {info.get('status')})")
    return _record(ctx, name, extractor.get_version(), result.immediate_data)


# -- many datasets --------------------------------------------------------------

def preload(extractors) -> None:
    """Resolve (import) every extractor once: call it before threads that
    run :func:`extract_dataset` start."""
    for name in _split_names(extractors):
        try:
            resolve_extractor(name)
        except Exception:
            pass  # reported by the extraction itself


def extract_many(paths: Sequence, extractors, *, jobs: int = 1,
                 previous: Mapping[str, Iterable] | None = None,
                 force: bool = False) -> list[list[dict]]:
    """:func:`extract_dataset` for each path; outcomes in the order of paths.

    ``previous`` maps a path (as given) to that dataset's previous metadata
    list. ``jobs`` > 1 runs that many datasets at a time in threads (the
    work is mostly waiting for git and git-annex processes).
    """
    names = _split_names(extractors)
    previous = previous or {}
    preload(names)

    def one(p):
        prev = previous.get(p)
        if prev is None:
            prev = previous.get(str(p), ())
        return extract_dataset(p, names, previous=prev, force=force)

    if jobs <= 1 or len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, paths))
