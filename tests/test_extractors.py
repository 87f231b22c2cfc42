"""Our light extractors (bids_dataset, datacite_gin, dandi) and safe loading."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

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

from .fixtures import (
    ALIAS_BOMB,
    DANDISET,
    DATASET_DESCRIPTION,
    make_dataset,
    write_files,
)


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
    ds = make_dataset(tmp_path / "ds", {"dandiset.yaml": "# nothing\n"},
                      to_git=True)
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
    }, to_git=True)
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
