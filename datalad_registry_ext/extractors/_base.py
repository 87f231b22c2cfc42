"""The one shape all our extractors share.

Each reads one metadata file of a dataset (with the safe loader of
:mod:`._files`) at the commit metalad asks for, and returns it, reshaped,
as dataset-level metadata. A subclass names its id, its required file and
its ``read(ds_path, ref)`` function; a :class:`MetadataFileError` from that
function becomes a failed extraction with its message.
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
    success,
)


class FileMetadataExtractor(DatasetMetadataExtractor):
    extractor_id: UUID
    required_file: str
    version = "0.0.1"

    @staticmethod
    def read(ds_path, ref: str):  # pragma: no cover - every subclass sets it
        raise NotImplementedError

    def get_id(self) -> UUID:
        return self.extractor_id

    def get_version(self) -> str:
        return self.version

    def get_data_output_category(self) -> DataOutputCategory:
        return DataOutputCategory.IMMEDIATE

    def get_required_content(self) -> bool:
        # files are read from the work tree or from git: nothing to get
        return True

    def extract(self, _=None):
        try:
            return success(self, self.read(self.dataset.path,
                                           self.ref_commit or "HEAD"))
        except MetadataFileError as e:
            return failure(self, str(e))
