"""``bids_dataset``: a light stand-in for datalad-neuroimaging's extractor.

Emits the shape of datalad-neuroimaging's ``bids_dataset`` (version
"0.0.1") without pybids and without any annexed content:

- every key of ``dataset_description.json``, unchanged (``Name``,
  ``BIDSVersion``, ``License``, ``Authors``, ``DatasetDOI``, ...);
- ``description``: ``[{"extension": ".md", "text": ...}]`` for each of
  ``README``, ``README.md``, ``README.txt``, ``README.rst`` at the top, or
  None;
- ``entities``: sorted unique values of the BIDS entities found in file
  names of the ref commit's tree (``git ls-tree``): ``subject``,
  ``session``, ``task``, ``acquisition``, ``ceagent``, ``reconstruction``,
  ``direction``, ``run``, ``proc``, ``modality``, ``echo``, ``flip``,
  ``inv``, ``mt``, ``part``, ``recording``, ``space``, ``suffix``,
  ``datatype`` and ``extension``; ``run``, ``echo``, ``flip`` and ``inv``
  as integers. Subject and session values carry no ``sub-``/``ses-``
  prefix. Files below ``derivatives/``, ``sourcedata/``, ``code/``,
  ``stimuli/``, ``models/`` and dot-directories are ignored, as pybids
  does; only files below ``sub-*`` or top-level files named with entities
  (``task-rest_bold.json``) count;
- ``variables``: ``{"dataset": [columns of participants.tsv]}`` with
  ``participant_id`` reported as ``subject`` (pybids' name for it), or
  ``{}``;
- ``@context``: the BIDS vocabulary.

Differences to the original: the BIDS root is the dataset root (no search
for a nested ``dataset_description.json``), no subject/session/run level
variables (sessions.tsv, scans.tsv), no ``scans``/``fmap`` pseudo
entities. An unreadable README or participants.tsv is left out rather than
failing the extraction; an unreadable or invalid ``dataset_description.json``
is an error. registry-extract prefers datalad-neuroimaging's extractor
when it is installed.
"""
from __future__ import annotations

from pathlib import Path
from uuid import UUID

from datalad_registry_ext import gitcmd
from datalad_registry_ext.extractors._base import FileMetadataExtractor
from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    load_json,
    read_text,
)

DESCRIPTION_FILE = "dataset_description.json"
PARTICIPANTS_FILE = "participants.tsv"
README_FILES = ("README", "README.md", "README.txt", "README.rst")

BIDS_CONTEXT = {
    "@id": "https://doi.org/10.5281/zenodo.4710751",
    "description": "ad-hoc vocabulary for the Brain Imaging Data Structure "
                   "(BIDS) standard v1.6.0",
    "type": "http://purl.org/dc/dcam/VocabularyEncodingScheme",
}

# file name key -> entity name
ENTITY_KEYS = {
    "sub": "subject", "ses": "session", "task": "task",
    "acq": "acquisition", "ce": "ceagent", "rec": "reconstruction",
    "dir": "direction", "run": "run", "proc": "proc", "mod": "modality",
    "echo": "echo", "flip": "flip", "inv": "inv", "mt": "mt",
    "part": "part", "recording": "recording", "space": "space",
}
INT_ENTITIES = {"run", "echo", "flip", "inv"}
ENTITY_ORDER = (
    "subject", "session", "task", "acquisition", "ceagent",
    "reconstruction", "direction", "run", "proc", "modality", "echo", "flip",
    "inv", "mt", "part", "recording", "space", "suffix", "datatype",
    "extension",
)
DATATYPES = {
    "anat", "func", "dwi", "fmap", "perf", "meg", "eeg", "ieeg", "beh",
    "pet", "micr", "nirs", "motion", "mrs",
}
IGNORED_TOP_DIRS = {"derivatives", "sourcedata", "code", "stimuli", "models"}



def read_bids(ds_path, ref: str | None = None) -> dict:
    ref = ref or "HEAD"
    description = load_json(ds_path, DESCRIPTION_FILE, ref=ref)
    if not isinstance(description, dict):
        raise MetadataFileError(
            f"{DESCRIPTION_FILE} does not hold a JSON object")
    metadata = dict(description)
    metadata["description"] = _readmes(ds_path, ref)
    metadata["entities"] = entities_from_paths(_tree_files(ds_path, ref))
    metadata["variables"] = _variables(ds_path, ref)
    metadata["@context"] = dict(BIDS_CONTEXT)
    return metadata


def _tree_files(ds_path, ref: str) -> list[str]:
    proc = gitcmd.run(["ls-tree", "-r", "-z", "--name-only", ref], ds_path)
    if proc.returncode:
        raise MetadataFileError(
            f"cannot list the files of {ref}: "
            f"{proc.stderr.decode(errors='replace').strip()}")
    return [p for p in proc.stdout.decode("utf-8", "replace").split("\0") if p]


def _readmes(ds_path, ref: str):
    found = []
    for name in README_FILES:
        path = Path(ds_path) / name
        if not path.exists() and not path.is_symlink():
            continue
        try:
            text = read_text(ds_path, name, ref=ref)
        except MetadataFileError:
            continue
        found.append({"extension": Path(name).suffix, "text": text.strip()})
    return found or None


def _variables(ds_path, ref: str) -> dict:
    path = Path(ds_path) / PARTICIPANTS_FILE
    if not path.exists() and not path.is_symlink():
        return {}
    try:
        text = read_text(ds_path, PARTICIPANTS_FILE, ref=ref)
    except MetadataFileError:
        return {}
    header = text.splitlines()[0] if text.strip() else ""
    columns = [c.strip() for c in header.split("\t") if c.strip()]
    if not columns:
        return {}
    columns = ["subject" if c == "participant_id" else c for c in columns]
    # pybids lists the entity column first
    if "subject" in columns:
        columns.remove("subject")
        columns.insert(0, "subject")
    return {"dataset": columns}


def parse_bids_name(path: str) -> dict:
    """Entities of one file path (relative, POSIX), or {} if not BIDS."""
    parts = path.split("/")
    if parts[0] in IGNORED_TOP_DIRS or any(p.startswith(".") for p in parts):
        return {}
    name = parts[-1]
    dot = name.find(".")
    if dot <= 0:
        return {}
    stem, extension = name[:dot], name[dot:]
    chunks = stem.split("_")
    entities: dict = {}
    suffix = None
    for i, chunk in enumerate(chunks):
        key, sep, value = chunk.partition("-")
        if sep and key and value:
            entity = ENTITY_KEYS.get(key)
            if entity:
                entities.setdefault(entity, value)
        elif i == len(chunks) - 1 and chunk.isalnum():
            suffix = chunk
    in_subject = parts[0].startswith("sub-")
    if not in_subject and (len(parts) > 1 or not entities):
        return {}
    if in_subject:
        entities.setdefault("subject", parts[0][4:])
        rest = parts[1:-1]
        if rest and rest[0].startswith("ses-"):
            entities.setdefault("session", rest[0][4:])
            rest = rest[1:]
        if rest and rest[0] in DATATYPES:
            entities["datatype"] = rest[0]
    if suffix:
        entities["suffix"] = suffix
    entities["extension"] = extension
    for entity in INT_ENTITIES & entities.keys():
        if str(entities[entity]).isdigit():
            entities[entity] = int(entities[entity])
    return entities


def entities_from_paths(paths) -> dict:
    values: dict[str, set] = {}
    for path in paths:
        for entity, value in parse_bids_name(path).items():
            values.setdefault(entity, set()).add(value)
    result = {}
    for entity in ENTITY_ORDER:
        if entity in values:
            vals = values[entity]
            try:
                result[entity] = sorted(vals)
            except TypeError:  # mixed int/str
                result[entity] = sorted(vals, key=str)
    return result


class BIDSDatasetExtractor(FileMetadataExtractor):
    extractor_id = UUID("5f3c2b1a-8e7d-4c6b-a9f0-2e1d3c4b5a69")
    required_file = DESCRIPTION_FILE
    read = staticmethod(read_bids)
