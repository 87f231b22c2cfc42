"""``dandi``: the ``dandiset.yaml`` document of a DANDI dataset.

The same as DataLad-Registry's builtin ``dandi`` extractor (version
"0.0.1"): the parsed YAML document, unchanged, as ``extracted_metadata``. A
file without a document is an error ("dandiset.yaml has no document.").

Also here: ``dandi:files`` (DataLad-Registry's second builtin, off by default
there): the ``.dandi/assets.json`` list. It has no entry point (the name is
not a valid one for ``datalad meta-extract``); registry-extract runs it
directly.
"""
from __future__ import annotations

from uuid import UUID

from datalad_registry_ext.extractors._base import FileMetadataExtractor
from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    load_json,
    load_yaml,
)

DANDISET_FILE = "dandiset.yaml"
ASSETS_FILE = ".dandi/assets.json"



def read_dandiset(ds_path, ref: str | None = None) -> dict:
    doc = load_yaml(ds_path, DANDISET_FILE, ref=ref or "HEAD")
    if doc is None:
        raise MetadataFileError(f"{DANDISET_FILE} has no document.")
    if not isinstance(doc, dict):
        raise MetadataFileError(
            f"{DANDISET_FILE} does not hold a mapping but a "
            f"{type(doc).__name__}")
    return doc


def read_assets(ds_path, ref: str | None = None) -> list:
    assets = load_json(ds_path, ASSETS_FILE, ref=ref or "HEAD")
    if not isinstance(assets, list):
        raise MetadataFileError(f"{ASSETS_FILE} does not hold a list")
    return assets


class DandiExtractor(FileMetadataExtractor):
    extractor_id = UUID("3e0c6d8f-6f55-4a53-9d3c-9a1f5e2b7d01")
    required_file = DANDISET_FILE
    read = staticmethod(read_dandiset)


class DandiFilesExtractor(FileMetadataExtractor):
    extractor_id = UUID("3e0c6d8f-6f55-4a53-9d3c-9a1f5e2b7d02")
    required_file = ASSETS_FILE
    read = staticmethod(read_assets)
