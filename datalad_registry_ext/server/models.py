"""Response and request models of the API v2, mirroring DataLad-Registry's.

They describe the responses in ``/openapi.json``; the handlers build the
bodies themselves (:mod:`.listing`), because a record is our catalogue's
shape (a superset of upstream's) with nulls left out, which a model
round-trip would only slow down. The record model's fields are derived from
:data:`datalad_registry_ext.records.CATALOGUE`, like every list of fields.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, create_model

from datalad_registry_ext.records import CATALOGUE


class HTTPExceptionResp(BaseModel):
    """The error envelope of every ``/api/`` path (but 422)."""
    code: int
    name: str
    description: str


class ValidationErrorItem(BaseModel):
    """One entry of a 422 body (a JSON array, as upstream's pydantic
    ``ValidationError.json()``)."""
    loc: list[Union[str, int]]
    msg: str
    type: str


class DatasetURLSubmitModel(BaseModel):
    url: str = Field(..., description="The URL: http, https, ssh or git "
                     "(local paths and file:// are refused)")


class URLMetadataRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    extractor_name: str
    link: str = Field(..., description="/api/v2/url-metadata/<id>")


class URLMetadataModel(BaseModel):
    model_config = ConfigDict(extra="allow")
    extractor_name: str
    dataset_describe: Optional[str] = None
    dataset_version: Optional[str] = None
    extractor_version: Optional[str] = None
    extraction_parameter: Optional[dict] = None
    extracted_metadata: Any = None


_KINDS = {"text": Optional[str], "int": Optional[int],
          "date": Optional[str], "bool": Optional[bool], "json": Any}


def _record_fields() -> dict:
    fields = {}
    for f in CATALOGUE:
        if f.name == "metadata":
            fields["metadata"] = (
                Optional[Union[list[URLMetadataModel], list[URLMetadataRef]]],
                Field(None, description=f.doc))
            continue
        kind = str if f.name == "url" else _KINDS[f.kind]
        default = ... if f.name == "url" else None
        doc = f.doc if f.api else f"{f.doc} (ours, not upstream's)"
        fields[f.name] = (kind, Field(default, description=doc))
        if f.name == "url":
            fields["id"] = (int, Field(..., description=(
                "Stable id: derived from the record's source and URL")))
    return fields


DatasetURLRespModel = create_model(
    "DatasetURLRespModel", __config__=ConfigDict(extra="allow"),
    **_record_fields())


class AnnexDsCollectionStats(BaseModel):
    ds_count: NonNegativeInt
    annexed_files_size: Optional[NonNegativeInt] = None
    annexed_file_count: Optional[NonNegativeInt] = None


class DataladDsCollectionStats(BaseModel):
    unique_ds_stats: AnnexDsCollectionStats
    stats: AnnexDsCollectionStats


class NonAnnexDsCollectionStats(BaseModel):
    ds_count: NonNegativeInt


class StatsSummary(BaseModel):
    unique_ds_count: NonNegativeInt
    ds_count: NonNegativeInt


class CheckStats(BaseModel):
    """registry-update's checks of the records (ours, not upstream's)."""
    checked_count: NonNegativeInt = Field(
        ..., description="records checked at least once (a last_chk_dt or "
        "a last_failed_chk_dt)")
    failing_count: NonNegativeInt = Field(
        ..., description="records whose last check failed (n_failed_chks "
        "above 0)")
    unreachable_count: NonNegativeInt = Field(
        ..., description="failing records with at least "
        "datalad.registry.update-max-failures failed checks (no longer "
        "checked)")


class CollectionStats(BaseModel):
    datalad_ds_stats: DataladDsCollectionStats
    pure_annex_ds_stats: AnnexDsCollectionStats
    non_annex_ds_stats: NonAnnexDsCollectionStats
    summary: StatsSummary
    check_stats: Optional[CheckStats] = Field(
        None, description="Ours, not upstream's: present only when some "
        "record's last check failed")


class DatasetURLPage(BaseModel):
    cur_pg_num: int
    prev_pg: Optional[str] = None
    next_pg: Optional[str] = None
    first_pg: str
    last_pg: str
    dataset_urls: list[DatasetURLRespModel]  # type: ignore[valid-type]
    collection_stats: Optional[CollectionStats] = Field(
        None, description="Over the whole filtered collection, not the "
        "page (left out with collection_stats=false)")
