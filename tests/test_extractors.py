"""Our light extractors (bids_dataset, datacite_gin, dandi) and safe loading.

Also holds the dataset builders the extraction and aggregation tests use.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import datalad
from datalad.api import create

from datalad_registry_ext.extractors import _files
from datalad_registry_ext.extractors._files import (
    MetadataFileError,
    check_yaml_aliases,
    load_json,
    load_yaml,
    parse_yaml,
    read_bytes,
)
from datalad_registry_ext.extractors.bids import (
    BIDSDatasetExtractor,
    entities_from_paths,
    parse_bids_name,
)
from datalad_registry_ext.extractors.dandi import DandiExtractor
from datalad_registry_ext.extractors.datacite_gin import DataciteGinExtractor

# -- dataset builders (imported by the other test modules) ---------------------

RFC822 = """\
Name: studyforrest_phase2
License: CC0-1.0
 The person who associated a work with this deed has dedicated the work
 to the public domain.
Author: Mike One <mike@example.com>, Anna Two <anna@example.com>
Homepage: http://studyforrest.org
DOI: 10.5281/zenodo.48421
Description: Basic summary
 A text with arbitrary length.
"""

DATASET_DESCRIPTION = {
    "Name": "A test BIDS dataset",
    "BIDSVersion": "1.6.0",
    "DatasetType": "raw",
    "License": "CC0",
    "Authors": ["Jane Doe", "John Roe"],
    "DatasetDOI": "10.0000/test",
}

PARTICIPANTS = "participant_id\tage\tsex\nsub-01\t30\tF\nsub-02\t41\tM\n"

DATACITE = """\
authors:
  - firstname: "Jane"
    lastname: "Doe"
    affiliation: "Some University"
    id: "ORCID:0000-0001-0002-0003"
title: "A dataset title"
description: |
  A longer description of the dataset.

keywords:
  - neuroscience
  - test
license:
  name: "Creative Commons CC0 1.0 Public Domain Dedication"
  url: "https://creativecommons.org/publicdomain/zero/1.0/"
funding:
  - "DFG, XY 123/4-5"
references:
  - id: "doi:10.1234/abc"
    reftype: "IsSupplementTo"
    citation: "Doe J (2020) A paper."
resourcetype: Dataset
templateversion: 1.2
"""

DATAPACKAGE = {
    "name": "test-package",
    "title": "A test data package",
    "description": "Data package description",
    "keywords": ["alpha", "beta"],
    "version": "1.0.0",
    "homepage": "https://example.com/pkg",
    "author": {"name": "Jane Doe", "email": "jane@example.com"},
    "license": {"type": "CC-BY-4.0"},
}

STUDYMINIMETA = """\
study:
  name: An example study
  purpose: a short description of the study
  principal_investigator: a@example.com
  keyword: [k1, k2]
  funding: [DFG]
  contributor: [a@example.com, b@example.com]
  start_date: 01.01.2020
  end_date: 02.02.2020
dataset:
  name: Dataset for an example study
  location: http://example.com/datalad/example_study
  description: Data that was collected to prove something
  author: [a@example.com, b@example.com]
  keywords: [d_k1, d_k2]
  standard: [dicom, ebdsi]
  funding: [DFG]
person:
  a@example.com:
    given_name: Alex
    last_name: Meyer
    orcid-id: 0000-0001-0002-0033
    title: Prof. Dr.
    contact_information: Corner broadway and main
    affiliation: Big Old University
  b@example.com:
    given_name: Bernd
    last_name: Muller
    orcid-id: 0000-0001-0002-0034
    title: MD
    contact_information: central plaza
    affiliation: RRU-SSLT
publication:
  - title: Publication Numero Unos
    year: 2001
    author: [a@example.com, b@example.com]
    doi: doi:1112-23232-0
    volume: 30
    issue: 4
    pages: 1-1200
    publisher: Renato
"""

DANDISET = """\
identifier: DANDI:000027
name: test-dandi-ds
description: A DANDI test set
license:
  - spdx:CC-BY-4.0
contributor:
  - name: Doe, Jane
    roleName: [dcite:ContactPerson]
schemaVersion: 0.6.4
"""

FULL_FILES = {
    ".datalad/meta.rfc822": RFC822,
    "dataset_description.json": json.dumps(DATASET_DESCRIPTION, indent=2),
    "participants.tsv": PARTICIPANTS,
    "README.md": "# A test dataset\n\nWith a README.\n",
    "sub-01/anat/sub-01_T1w.nii.gz": "t1-01",
    "sub-02/anat/sub-02_T1w.nii.gz": "t1-02",
    "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-1_bold.nii.gz": "b1",
    "sub-01/ses-pre/func/sub-01_ses-pre_task-rest_run-2_bold.nii.gz": "b2",
    "task-rest_bold.json": '{"RepetitionTime": 2}',
    "derivatives/sub-99/anat/sub-99_T1w.nii.gz": "ignored",
    "datacite.yml": DATACITE,
    "datapackage.json": json.dumps(DATAPACKAGE, indent=2),
    ".studyminimeta.yaml": STUDYMINIMETA,
    "dandiset.yaml": DANDISET,
}

# Billion laughs: 9 levels of 9 aliases -> 9**9 nodes when expanded.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9)
    + "]\n" for i in range(8))


def write_files(root, files: dict) -> None:
    for rel, content in files.items():
        path = Path(root, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(path, mode) as f:
            f.write(content)


def make_dataset(path, files: dict, *, to_git: bool = True):
    """A DataLad dataset holding ``files`` (small files go to git unless
    ``to_git`` is False, then everything but .datalad is annexed)."""
    ds = create(str(path), result_renderer="disabled",
                **({"cfg_proc": "text2git"} if to_git else {}))
    write_files(path, files)
    ds.save(result_renderer="disabled", message="metadata files")
    return ds


def make_git_repo(path, files: dict) -> Path:
    """A plain git repository (no DataLad id) holding ``files``."""
    path = Path(path)
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    write_files(path, files)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "files"],
                   check=True)
    return path


@pytest.fixture(scope="session")
def full_ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("extractors") / "full",
                        FULL_FILES)


def run_ours(cls, ds):
    extractor = cls(ds, ds.repo.get_hexsha(), {})
    assert extractor.get_required_content() is True
    return extractor.extract()


# -- the extractors --------------------------------------------------------------

def test_bids_dataset_content(full_ds):
    result = run_ours(BIDSDatasetExtractor, full_ds)
    assert result.extraction_success
    assert result.extractor_version == "0.0.1"
    md = result.immediate_data
    for key, value in DATASET_DESCRIPTION.items():
        assert md[key] == value
    assert md["description"] == [
        {"extension": ".md", "text": "# A test dataset\n\nWith a README."}]
    ents = md["entities"]
    assert ents["subject"] == ["01", "02"]      # not sub-99 (derivatives)
    assert ents["session"] == ["pre"]
    assert ents["task"] == ["rest"]
    assert ents["run"] == [1, 2]
    assert ents["datatype"] == ["anat", "func"]
    assert ents["suffix"] == ["T1w", "bold"]
    assert ents["extension"] == [".json", ".nii.gz"]
    assert md["variables"] == {"dataset": ["subject", "age", "sex"]}
    assert md["@context"]["@id"] == "https://doi.org/10.5281/zenodo.4710751"
    json.dumps(md)


def test_bids_entities_from_names():
    assert parse_bids_name("sub-01/anat/sub-01_acq-mp2_rec-x_T1w.nii.gz") == {
        "subject": "01", "acquisition": "mp2", "reconstruction": "x",
        "datatype": "anat", "suffix": "T1w", "extension": ".nii.gz"}
    assert parse_bids_name("sub-01/ses-1/fmap/sub-01_ses-1_dir-AP_run-02"
                           "_echo-1_epi.json")["run"] == 2
    assert parse_bids_name("task-rest_bold.json") == {
        "task": "rest", "suffix": "bold", "extension": ".json"}
    for ignored in ("derivatives/sub-01/anat/sub-01_T1w.nii.gz",
                    "sourcedata/sub-01/x.dcm", "code/run.py", "README",
                    ".git/sub-01", "participants.tsv",
                    "sub-01/.hidden/sub-01_T1w.nii"):
        assert parse_bids_name(ignored) == {}, ignored
    assert entities_from_paths(["sub-10/anat/sub-10_T1w.nii",
                                "sub-2/anat/sub-2_T1w.nii"])["subject"] == \
        ["10", "2"]


def test_datacite_gin_content(full_ds):
    result = run_ours(DataciteGinExtractor, full_ds)
    assert result.extraction_success
    assert result.extractor_version == "0.0.1"
    md = result.immediate_data
    assert md["title"] == "A dataset title"
    assert md["description"] == "A longer description of the dataset."
    assert md["authors"][0] == {
        "firstname": "Jane", "lastname": "Doe",
        "affiliation": "Some University", "id": "ORCID:0000-0001-0002-0003"}
    assert md["keywords"] == ["neuroscience", "test"]
    assert md["license"]["url"].startswith("https://creativecommons.org")
    assert md["references"][0]["id"] == "doi:10.1234/abc"
    assert md["@context"]["@id"] == \
        "https://gin.g-node.org/G-Node/Info/src/master/datacite.yml"


def test_dandi_content(full_ds):
    result = run_ours(DandiExtractor, full_ds)
    assert result.extraction_success
    assert result.extractor_version == "0.0.1"
    assert result.immediate_data == yaml.safe_load(DANDISET)


def test_meta_extract_cli_uses_our_extractors(full_ds):
    # plain `datalad meta-extract` finds our entry points
    for name in ("bids_dataset", "datacite_gin", "dandi"):
        proc = subprocess.run(
            ["datalad", "meta-extract", "-d", full_ds.path, name],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.returncode == 0, proc.stderr
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        assert record["extractor_name"] == name
        assert record["extractor_version"] == "0.0.1"
        assert record["dataset_id"] == full_ds.id
        assert record["extracted_metadata"]


def test_dandi_empty_document_is_error(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"dandiset.yaml": "# nothing\n"})
    result = run_ours(DandiExtractor, ds)
    assert not result.extraction_success
    assert result.datalad_result_dict["status"] == "error"
    assert "dandiset.yaml has no document" in \
        result.datalad_result_dict["message"]


def test_extractor_failures_are_results(tmp_path):
    ds = make_dataset(tmp_path / "ds", {
        "dataset_description.json": '{"Name": "x",\n "BIDSVersion" 1}',
        "datacite.yml": "title: [unclosed\n",
        "dandiset.yaml": "- a list\n- not a mapping\n",
    })
    for cls, expected in ((BIDSDatasetExtractor,
                           "invalid JSON in dataset_description.json at "
                           "line 2, column 16"),
                          (DataciteGinExtractor, "invalid YAML in datacite.yml"),
                          (DandiExtractor, "does not hold a mapping")):
        result = run_ours(cls, ds)
        assert not result.extraction_success
        assert expected in result.datalad_result_dict["message"]


# -- safe loading -----------------------------------------------------------------

def test_json_error_names_file_line_column(tmp_path):
    write_files(tmp_path, {"bad.json": '{\n  "a": 1,\n  "b": \n}\n'})
    with pytest.raises(MetadataFileError,
                       match=r"invalid JSON in bad.json at line 4, column 1"):
        load_json(tmp_path, "bad.json")


def test_yaml_error_names_file_line_column(tmp_path):
    write_files(tmp_path, {"bad.yml": "a: 1\nb: [1, 2\nc: 3\n"})
    with pytest.raises(MetadataFileError,
                       match=r"invalid YAML in bad.yml at line \d+, column"):
        load_yaml(tmp_path, "bad.yml")
    write_files(tmp_path, {"two.yml": "a: 1\n---\nb: 2\n"})
    with pytest.raises(MetadataFileError, match="two.yml"):
        load_yaml(tmp_path, "two.yml")


def test_yaml_alias_bomb_is_rejected_fast():
    start = time.monotonic()
    with pytest.raises(MetadataFileError, match="alias bomb"):
        parse_yaml(ALIAS_BOMB, "datacite.yml")
    assert time.monotonic() - start < 1
    # a bigger one (a billion nodes times 1000) is as quick
    bigger = ALIAS_BOMB + "z: [" + ", ".join(["*i"] * 1000) + "]\n"
    start = time.monotonic()
    with pytest.raises(MetadataFileError, match="alias bomb"):
        check_yaml_aliases(bigger, "x.yml")
    assert time.monotonic() - start < 1


def test_yaml_recursive_alias_is_rejected():
    with pytest.raises(MetadataFileError, match="refers to itself"):
        parse_yaml("a: &a [1, *a]\n", "x.yml")


def test_yaml_modest_aliases_are_fine():
    doc = parse_yaml("base: &b {x: 1, y: 2}\none: *b\ntwo: {<<: *b, z: 3}\n",
                     "x.yml")
    assert doc == {"base": {"x": 1, "y": 2}, "one": {"x": 1, "y": 2},
                   "two": {"x": 1, "y": 2, "z": 3}}


def test_yaml_values_become_json():
    doc = parse_yaml("d: 2020-01-02\nt: 2020-01-02 03:04:05\n1: int key\n"
                     "s: !!set {a, b}\nn: .nan\n", "x.yml")
    assert doc == {"d": "2020-01-02", "t": "2020-01-02T03:04:05",
                   "1": "int key", "s": ["a", "b"], "n": None}
    json.dumps(doc)


def test_size_cap_checked_before_reading(tmp_path, monkeypatch):
    write_files(tmp_path, {"big.json": json.dumps({"x": "y" * 200})})
    with pytest.raises(MetadataFileError, match=r"big.json is too large"):
        load_json(tmp_path, "big.json", limit=100)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open",
                        lambda *a, **k: opened.append(a) or real_open(*a, **k))
    with pytest.raises(MetadataFileError, match="too large"):
        read_bytes(tmp_path, "big.json", limit=100)
    assert not opened


@pytest.fixture
def max_bytes_env(monkeypatch):
    """Set datalad.registry.metadata-max-bytes through the environment."""
    def set_limit(value):
        # DATALAD_<section>_<name>: '_' -> '.', '__' -> '-'
        monkeypatch.setenv("DATALAD_REGISTRY_METADATA__MAX__BYTES", str(value))
        datalad.cfg.reload(force=True)
    yield set_limit
    monkeypatch.delenv("DATALAD_REGISTRY_METADATA__MAX__BYTES",
                       raising=False)
    datalad.cfg.reload(force=True)


def test_size_cap_from_config(tmp_path, max_bytes_env):
    write_files(tmp_path, {"a.json": json.dumps({"x": "y" * 200})})
    assert load_json(tmp_path, "a.json")["x"]
    max_bytes_env(100)
    assert _files.max_bytes() == 100
    with pytest.raises(MetadataFileError,
                       match="datalad.registry.metadata-max-bytes"):
        load_json(tmp_path, "a.json")


def test_symlink_out_of_the_dataset_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text('{"secret": 1}')
    ds = tmp_path / "ds"
    ds.mkdir()
    os.symlink(secret, ds / "dataset_description.json")
    with pytest.raises(MetadataFileError, match="outside the dataset"):
        load_json(ds, "dataset_description.json")
    with pytest.raises(MetadataFileError, match="inside the dataset"):
        read_bytes(ds, "../secret.txt")
    # a symlinked directory on the way counts too
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "meta.rfc822").write_text("Name: secret\n")
    os.symlink(tmp_path / "elsewhere", ds / ".datalad")
    with pytest.raises(MetadataFileError, match="outside the dataset"):
        read_bytes(ds, ".datalad/meta.rfc822")
    # inside the dataset is fine
    (ds / "real.json").write_text("{}")
    os.symlink("real.json", ds / "link.json")
    assert load_json(ds, "link.json") == {}


def test_annexed_without_content_and_git_fallback(tmp_path):
    origin = make_dataset(tmp_path / "origin", {
        "datacite.yml": "title: annexed\n",
        "dandiset.yaml": "name: in git\n",
    }, to_git=False)
    # make dandiset.yaml a git file, datacite.yml stays annexed
    origin.repo.call_git(["rm", "-q", "--cached", "dandiset.yaml"])
    (Path(origin.path) / "dandiset.yaml").unlink()
    write_files(origin.path, {"dandiset.yaml": "name: in git\n"})
    origin.repo.call_git(["-c", "annex.largefiles=nothing", "add",
                          "dandiset.yaml"])
    origin.save(result_renderer="disabled")
    assert origin.repo.is_under_annex(["datacite.yml"]) == [True]
    assert origin.repo.is_under_annex(["dandiset.yaml"]) == [False]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", origin.path, str(clone)],
                   check=True)
    with pytest.raises(MetadataFileError, match="content not available"):
        load_yaml(clone, "datacite.yml")
    # a file missing from the work tree is read from the commit
    (clone / "dandiset.yaml").unlink()
    assert load_yaml(clone, "dandiset.yaml") == {"name": "in git"}
    with pytest.raises(MetadataFileError, match="not found"):
        read_bytes(clone, "nope.json")
