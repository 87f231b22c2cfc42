"""Running extractors on a dataset clone: content, gates and failures."""
import json
import subprocess
from datetime import datetime
from pathlib import Path

from datalad.api import clone
from datalad_metalad.extractors.base import (
    DataOutputCategory,
    DatasetMetadataExtractor,
)

from datalad_registry_ext import extraction
from datalad_registry_ext.config import DEFAULT_EXTRACTORS
from datalad_registry_ext.extraction import (
    REQUIRED_FILES,
    extract_dataset,
    extract_many,
)

from .fixtures import (
    ALIAS_BOMB,
    DATAPACKAGE,
    DATASET_DESCRIPTION,
    RFC822,
    STUDYMINIMETA,
    make_dataset,
    make_git_repo,
)

INDEX_KEYS = {"extractor_name", "extractor_version", "extraction_parameter",
              "extracted_metadata", "dataset_version", "dataset_describe",
              "extraction_time"}
METALAD_KEYS = {"type", "dataset_id", "dataset_version", "extractor_name",
                "extractor_version", "extraction_parameter",
                "extraction_time", "agent_name", "agent_email",
                "extracted_metadata"}


def by_name(outcomes):
    return {o["extractor"]: o for o in outcomes}


def test_all_default_extractors_on_full_dataset(full_ds, full_outcomes):
    assert [o["extractor"] for o in full_outcomes] == list(DEFAULT_EXTRACTORS)
    sha = full_ds.repo.get_hexsha()
    for o in full_outcomes:
        assert o["status"] == "ok", o["message"]
        assert set(o) == {"extractor", "status", "message", "metadata",
                          "metalad_record"}
        entry, record = o["metadata"], o["metalad_record"]
        assert set(entry) == INDEX_KEYS
        assert entry["extractor_name"] == o["extractor"]
        assert entry["dataset_version"] == sha
        assert entry["dataset_describe"] == sha[:7] or \
            sha.startswith(entry["dataset_describe"])
        assert datetime.fromisoformat(entry["extraction_time"]).utcoffset() \
            .total_seconds() == 0
        assert set(record) == METALAD_KEYS
        assert record["dataset_id"] == full_ds.id
        assert record["dataset_version"] == sha
        assert record["extracted_metadata"] == entry["extracted_metadata"]
        assert isinstance(record["extraction_time"], float)
    # plain data only
    assert json.loads(json.dumps(full_outcomes)) == full_outcomes


def test_extracted_content(full_ds, full_outcomes):
    md = {n: o["metadata"]["extracted_metadata"]
          for n, o in by_name(full_outcomes).items()}
    versions = {n: o["metadata"]["extractor_version"]
                for n, o in by_name(full_outcomes).items()}
    assert versions == {
        "metalad_core": "1", "metalad_studyminimeta": "0.1",
        "datacite_gin": "0.0.1", "bids_dataset": "0.0.1", "dandi": "0.0.1",
        "datalad_rfc822": "un-versioned",
        "frictionless_datapackage": "un-versioned"}

    rfc = md["datalad_rfc822"]
    assert rfc["name"] == "studyforrest_phase2"
    assert rfc["license"][0] == "CC0-1.0"
    assert rfc["license"][1].startswith("The person who associated")
    assert rfc["sameas"] == "http://dx.doi.org/10.5281/zenodo.48421"
    assert rfc["author"] == ["Mike One <mike@example.com>",
                             "Anna Two <anna@example.com>"]
    assert rfc["homepage"] == "http://studyforrest.org"
    assert rfc["shortdescription"] == "Basic summary"
    assert rfc["conformsto"] == "http://docs.datalad.org/metadata.html#v0-1"

    bids = md["bids_dataset"]
    assert bids["Name"] == DATASET_DESCRIPTION["Name"]
    assert bids["BIDSVersion"] == "1.6.0"
    assert bids["Authors"] == ["Jane Doe", "John Roe"]
    assert bids["variables"]["dataset"] == ["subject", "age", "sex"]
    assert bids["entities"]["subject"] == ["01", "02"]
    assert bids["entities"]["task"] == ["rest"]

    frdp = md["frictionless_datapackage"]
    assert frdp["name"] == "test-package"
    assert frdp["shortdescription"] == "A test data package"
    assert frdp["tag"] == ["alpha", "beta"]
    # the package's own fields win over the legacy extractor's compacted ones
    assert frdp["keywords"] == ["alpha", "beta"]
    assert frdp["title"] == "A test data package"
    assert frdp["author"] == {"name": "Jane Doe", "email": "jane@example.com"}
    assert frdp["license"] == {"type": "CC-BY-4.0"}

    assert md["datacite_gin"]["title"] == "A dataset title"
    assert md["dandi"]["name"] == "test-dandi-ds"

    graph = {n.get("@id"): n for n in md["metalad_studyminimeta"]["@graph"]}
    ds_node = graph[f"https://schema.datalad.org/datalad_dataset#{full_ds.id}"]
    assert ds_node["name"] == "Dataset for an example study"
    assert graph["#study"]["name"] == "An example study"

    core = md["metalad_core"]["@graph"]
    ds_core = [n for n in core if n.get("@type") == "Dataset"][0]
    assert ds_core["identifier"] == full_ds.id


def test_required_file_missing_is_notneeded(tmp_path):
    ds = make_dataset(tmp_path / "empty", {"README": "nothing here\n"},
                      to_git=True)
    out = by_name(extract_dataset(ds.path, DEFAULT_EXTRACTORS))
    assert out["metalad_core"]["status"] == "ok"
    for name in DEFAULT_EXTRACTORS:
        if name == "metalad_core":
            continue
        assert out[name]["status"] == "notneeded"
        assert out[name]["message"].endswith(f"no {REQUIRED_FILES[name][0]}")
        assert out[name]["metadata"] is None
    assert "no dataset_description.json" in out["bids_dataset"]["message"]


def test_previous_at_head_is_notneeded(full_ds, full_outcomes):
    previous = [o["metadata"] for o in full_outcomes]
    sha = full_ds.repo.get_hexsha()
    out = extract_dataset(full_ds.path, ["dandi", "datacite_gin"],
                          previous=previous)
    assert [o["status"] for o in out] == ["notneeded", "notneeded"]
    assert f"already extracted for {sha}" in out[0]["message"]
    out = extract_dataset(full_ds.path, ["dandi"], previous=previous,
                          force=True)
    assert out[0]["status"] == "ok"
    old = [dict(m, dataset_version="0" * 40) for m in previous]
    assert extract_dataset(full_ds.path, ["dandi"],
                           previous=old)[0]["status"] == "ok"


def test_extractor_not_installed(full_ds):
    out = by_name(extract_dataset(
        full_ds.path, ["xyz_unknown", "dicom", "metalad_nonexistent",
                       "dandi"]))
    for name in ("xyz_unknown", "dicom", "metalad_nonexistent"):
        assert out[name]["status"] == "impossible"
        assert name in out[name]["message"]
        assert full_ds.path in out[name]["message"]
        assert "not installed" in out[name]["message"]
    assert "datalad-neuroimaging" in out["dicom"]["message"]
    assert "datalad-metalad" in out["metalad_nonexistent"]["message"]
    assert "no known package" in out["xyz_unknown"]["message"]
    assert out["dandi"]["status"] == "ok"


class RaisingExtractor(DatasetMetadataExtractor):
    def get_id(self):
        from uuid import UUID
        return UUID("00000000-0000-0000-0000-000000000001")

    def get_version(self):
        return "1"

    def get_data_output_category(self):
        return DataOutputCategory.IMMEDIATE

    def extract(self, _=None):
        raise RuntimeError("boom in the extractor")


def test_extractor_that_raises(full_ds, monkeypatch):
    table = dict(extraction._entry_point_table())
    table["test_raiser"] = [extraction.ExtractorEntry(
        "test_raiser", "test_dist", lambda: RaisingExtractor)]
    monkeypatch.setattr(extraction, "_entry_point_table", lambda: table)
    out = by_name(extract_dataset(full_ds.path,
                                  ["test_raiser", "dandi", "metalad_core"]))
    msg = out["test_raiser"]["message"]
    assert out["test_raiser"]["status"] == "error"
    assert "test_raiser" in msg and full_ds.path in msg
    assert "RuntimeError: boom in the extractor" in msg
    assert "Traceback" not in msg
    assert out["dandi"]["status"] == "ok"
    assert out["metalad_core"]["status"] == "ok"


def test_metalad_extractor_reporting_error(tmp_path):
    # studyminimeta without the required 'person' section: metalad's
    # extractor itself reports an error result
    ds = make_dataset(tmp_path / "ds", {
        ".studyminimeta.yaml": "study:\n  name: x\n",
        "dandiset.yaml": "name: fine\n"}, to_git=True)
    out = by_name(extract_dataset(ds.path, ["metalad_studyminimeta",
                                            "dandi"]))
    smm = out["metalad_studyminimeta"]
    assert smm["status"] == "error"
    assert ds.path in smm["message"] and "metalad_studyminimeta" in \
        smm["message"]
    assert "JSON-LD" in smm["message"]
    assert out["dandi"]["status"] == "ok"


BAD_SYNTAX = {
    ".datalad/meta.rfc822": RFC822,
    "dataset_description.json": '{"Name": "x", "BIDSVersion": }',
    "datapackage.json": '{"name": "pkg",\n "title": "t",,}',
    "datacite.yml": "title: x\nauthors: [unclosed\n",
    "dandiset.yaml": "name: x\n  bad: indentation\n",
    ".studyminimeta.yaml": "study: {name: x\n",
}


def test_invalid_files_are_errors(tmp_path):
    ds = make_dataset(tmp_path / "bad", BAD_SYNTAX, to_git=True)
    out = by_name(extract_dataset(ds.path, DEFAULT_EXTRACTORS))
    expected = {
        "bids_dataset": "invalid JSON in dataset_description.json at line 1",
        "frictionless_datapackage": "invalid JSON in datapackage.json at "
                                    "line 2",
        "datacite_gin": "invalid YAML in datacite.yml at line",
        "dandi": "invalid YAML in dandiset.yaml at line",
        "metalad_studyminimeta": "invalid YAML in .studyminimeta.yaml at line",
    }
    for name, text in expected.items():
        assert out[name]["status"] == "error", name
        assert text in out[name]["message"], out[name]["message"]
        assert out[name]["message"].startswith(f"{name} on {ds.path}: ")
        assert out[name]["metadata"] is None
    # the others still ran
    assert out["metalad_core"]["status"] == "ok"
    assert out["datalad_rfc822"]["status"] == "ok"


def test_alias_bombs_are_errors(tmp_path):
    ds = make_dataset(tmp_path / "bombs", {
        ".datalad/meta.rfc822": RFC822,
        "datacite.yml": ALIAS_BOMB,
        "dandiset.yaml": ALIAS_BOMB,
        ".studyminimeta.yaml": ALIAS_BOMB,
    }, to_git=True)
    out = by_name(extract_dataset(ds.path, DEFAULT_EXTRACTORS))
    for name, fname in (("datacite_gin", "datacite.yml"),
                        ("dandi", "dandiset.yaml"),
                        ("metalad_studyminimeta", ".studyminimeta.yaml")):
        assert out[name]["status"] == "error"
        assert f"unsafe YAML in {fname}" in out[name]["message"]
        assert ds.path in out[name]["message"]
    assert out["metalad_core"]["status"] == "ok"
    assert out["datalad_rfc822"]["status"] == "ok"


def test_files_over_the_size_cap(full_ds, max_bytes_env):
    max_bytes_env(300)
    out = by_name(extract_dataset(full_ds.path, DEFAULT_EXTRACTORS))
    sizes = {name: (Path(full_ds.path) / REQUIRED_FILES[name][0]).stat()
             .st_size for name in DEFAULT_EXTRACTORS if name != "metalad_core"}
    for name, size in sizes.items():
        if size > 300:
            assert out[name]["status"] == "error", name
            assert "too large" in out[name]["message"]
            assert "datalad.registry.metadata-max-bytes" in \
                out[name]["message"]
        else:
            assert out[name]["status"] == "ok", (name, out[name]["message"])
    assert any(s > 300 for s in sizes.values())
    assert any(s <= 300 for s in sizes.values())
    assert out["metalad_core"]["status"] == "ok"


def test_plain_git_repository(tmp_path):
    repo = make_git_repo(tmp_path / "plain", {
        "datapackage.json": json.dumps(DATAPACKAGE),
        "dandiset.yaml": "name: plain\n",
        ".studyminimeta.yaml": STUDYMINIMETA,
        "dataset_description.json": json.dumps(DATASET_DESCRIPTION),
    })
    out = by_name(extract_dataset(repo, DEFAULT_EXTRACTORS))
    assert out["metalad_core"]["status"] == "notneeded"
    assert out["metalad_studyminimeta"]["status"] == "impossible"
    assert "plain git repository" in out["metalad_studyminimeta"]["message"]
    for name in ("dandi", "frictionless_datapackage", "bids_dataset"):
        assert out[name]["status"] == "ok", out[name]["message"]
        assert out[name]["metalad_record"] is None
        assert out[name]["metadata"]["dataset_version"]
    assert out["dandi"]["metadata"]["extracted_metadata"] == {"name": "plain"}
    assert out["frictionless_datapackage"]["metadata"][
        "extracted_metadata"]["name"] == "test-package"


def test_not_a_repository(tmp_path):
    out = extract_dataset(tmp_path, ["dandi", "metalad_core"])
    assert [o["status"] for o in out] == ["error", "error"]
    assert str(tmp_path) in out[0]["message"]


def test_legacy_extractors_do_not_fetch_content(tmp_path):
    # metalad's meta-extract would 'datalad get' the whole dataset for
    # legacy extractors; ours must not
    origin = make_dataset(tmp_path / "origin", {
        "datapackage.json": json.dumps(DATAPACKAGE),
        ".datalad/meta.rfc822": RFC822,
        "big.dat": bytes(range(256)) * 16,  # binary: annexed
    }, to_git=True)
    assert origin.repo.is_under_annex(["big.dat"]) == [True]
    cl = clone(origin.path, str(tmp_path / "clone"),
               result_renderer="disabled")
    big = Path(cl.path) / "big.dat"
    assert not big.exists()
    out = by_name(extract_dataset(cl.path, ["frictionless_datapackage",
                                            "datalad_rfc822"]))
    assert out["frictionless_datapackage"]["status"] == "ok"
    assert out["datalad_rfc822"]["status"] == "ok"
    assert not big.exists()


def test_annexed_metadata_without_content(tmp_path):
    origin = make_dataset(tmp_path / "origin", {
        "datacite.yml": "title: annexed\n", "dandiset.yaml": "name: x\n"},
        to_git=False)
    cl = clone(origin.path, str(tmp_path / "clone"),
               result_renderer="disabled")
    # no copy of the content is left anywhere
    origin.drop(["datacite.yml", "dandiset.yaml"], reckless="kill",
                result_renderer="disabled")
    out = by_name(extract_dataset(cl.path, ["datacite_gin", "dandi"]))
    for name, o in out.items():
        assert o["status"] == "impossible"
        assert "content not available" in o["message"]
        assert REQUIRED_FILES[name][0] in o["message"]


def test_extract_many(tmp_path, full_ds):
    other = make_dataset(tmp_path / "other", {"dandiset.yaml": "name: o\n"},
                         to_git=True)
    paths = [full_ds.path, other.path, full_ds.path]
    seq = extract_many(paths, ["dandi", "bids_dataset"], jobs=1)
    par = extract_many(paths, "dandi bids_dataset", jobs=2)
    assert [[o["status"] for o in r] for r in seq] == \
        [[o["status"] for o in r] for r in par] == \
        [["ok", "ok"], ["ok", "notneeded"], ["ok", "ok"]]
    assert par[1][0]["metadata"]["extracted_metadata"] == {"name": "o"}
    prev = {other.path: [par[1][0]["metadata"]]}
    again = extract_many([other.path], ["dandi"], previous=prev)
    assert again[0][0]["status"] == "notneeded"


def test_meta_extract_cli_baseline_agrees(full_ds, full_outcomes):
    # the shell way gives the same metadata as our in-process runs
    proc = subprocess.run(
        ["datalad", "meta-extract", "-d", full_ds.path, "datalad_rfc822"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = by_name(full_outcomes)["datalad_rfc822"]["metalad_record"]
    assert cli["extracted_metadata"] == ours["extracted_metadata"]
    assert cli["extractor_version"] == ours["extractor_version"]
