"""``datacite_gin``: a light stand-in for datalad-catalog's extractor.

Emits what datalad-catalog's ``datacite_gin`` (version "0.0.1") emits: the
``datacite.yml`` document (GIN flavour: ``authors``, ``title``,
``description``, ``keywords``, ``license``, ``funding``, ``references``,
``resourcetype``, ``templateversion``) as is, with ``description`` stripped
of surrounding white space and an ``@context`` naming the vocabulary.

Differences: the file is loaded with the safe loader of ``_files`` (size
cap, alias-bomb guard, JSON-compatible values), a missing ``description``
is not an error, and the extractor itself fetches nothing (registry-extract
gets an annexed ``datacite.yml``'s content first, within the size cap).
registry-extract prefers datalad-catalog's extractor when it is installed.
"""
from __future__ import annotations

from uuid import UUID

from datalad_registry_ext.extractors._base import FileMetadataExtractor
from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    load_yaml,
)

DATACITE_FILE = "datacite.yml"

DATACITE_CONTEXT = {
    "@id": "https://gin.g-node.org/G-Node/Info/src/master/datacite.yml",
    "description": "ad-hoc vocabulary for the DataCite GIN yml format",
    "type": "http://purl.org/dc/dcam/VocabularyEncodingScheme",
}



def read_datacite(ds_path, ref: str | None = None) -> dict:
    doc = load_yaml(ds_path, DATACITE_FILE, ref=ref or "HEAD")
    if not isinstance(doc, dict):
        raise MetadataFileError(
            f"{DATACITE_FILE} does not hold a mapping"
            + (" (empty document)" if doc is None
               else f" but a {type(doc).__name__}"))
    if isinstance(doc.get("description"), str):
        doc["description"] = doc["description"].strip()
    doc["@context"] = dict(DATACITE_CONTEXT)
    return doc


class DataciteGinExtractor(FileMetadataExtractor):
    extractor_id = UUID("7d1e4c0a-2b8f-4f6e-9a35-1c2d3e4f5a61")
    required_file = DATACITE_FILE
    read = staticmethod(read_datacite)
