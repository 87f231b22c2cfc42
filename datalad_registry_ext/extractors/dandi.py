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

from datalad_metalad.extractors.base import (
    DataOutputCategory,
    DatasetMetadataExtractor,
)

from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    failure,
    load_json,
    load_yaml,
    success,
)

DANDISET_FILE = "dandiset.yaml"
ASSETS_FILE = ".dandi/assets.json"


class DandiExtractor(DatasetMetadataExtractor):
    required_file = DANDISET_FILE

    def get_id(self) -> UUID:
        return UUID("3e0c6d8f-6f55-4a53-9d3c-9a1f5e2b7d01")

    def get_version(self) -> str:
        return "0.0.1"

    def get_data_output_category(self) -> DataOutputCategory:
        return DataOutputCategory.IMMEDIATE

    def get_required_content(self) -> bool:
        # the file is read from the work tree or from git; nothing to get
        return True

    def extract(self, _=None):
        try:
            return success(self, read_dandiset(self.dataset.path,
                                               self.ref_commit))
        except MetadataFileError as e:
            return failure(self, str(e))


def read_dandiset(ds_path, ref: str | None = None) -> dict:
    doc = load_yaml(ds_path, DANDISET_FILE, ref=ref or "HEAD")
    if doc is None:
        raise MetadataFileError(f"{DANDISET_FILE} has no document.")
    if not isinstance(doc, dict):
        raise MetadataFileError(
            f"{DANDISET_FILE} does not hold a mapping but a "
            f"{type(doc).__name__}")
    return doc


class DandiFilesExtractor(DandiExtractor):
    required_file = ASSETS_FILE

    def get_id(self) -> UUID:
        return UUID("3e0c6d8f-6f55-4a53-9d3c-9a1f5e2b7d02")

    def extract(self, _=None):
        try:
            assets = load_json(self.dataset.path, ASSETS_FILE,
                               ref=self.ref_commit or "HEAD")
        except MetadataFileError as e:
            return failure(self, str(e))
        if not isinstance(assets, list):
            return failure(self, f"{ASSETS_FILE} does not hold a list")
        return success(self, assets)
