"""registry-extract and extraction in registry-submit: stored twice, consistently."""
import json
import subprocess

import pytest
from datalad.api import registry_extract, registry_search, registry_submit

from datalad_registry_ext import index_sync
from datalad_registry_ext.config import DEFAULT_EXTRACTORS
from datalad_registry_ext.index import local_index

from .fixtures import (
    DATASET_DESCRIPTION,
    call,
    make_dataset,
    make_git_repo,
    record,
    run,
    set_user_dirs,
)


@pytest.fixture(scope="module")
def submitted(tmp_path_factory, full_ds):
    """The dataset of the issue's "done when", submitted with extraction.

    Read-only for the tests; its registry's index is in the user dirs under
    ``root``.
    """
    root = tmp_path_factory.mktemp("extract-cmd")
    registry = root / "registry"
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, root)
        res = call(registry_submit, [full_ds.path], dataset=str(registry))
        index_records = local_index(registry).records()
        index_text = local_index(registry).path.read_text()
    return {"ds": full_ds, "registry": registry, "results": res, "root": root,
            "records": index_records, "index_text": index_text}


def test_submit_extracts_all_seven_by_default(submitted):
    res = submitted["results"]
    assert res[0]["action"] == "registry_submit" and res[0]["status"] == "ok"
    extracted = {r["extractor"]: r for r in res
                 if r["action"] == "registry_extract"}
    assert set(extracted) == set(DEFAULT_EXTRACTORS)
    assert all(r["status"] == "ok" for r in extracted.values()), \
        [(r["extractor"], r["message"]) for r in extracted.values()
         if r["status"] != "ok"]
    (rec,) = submitted["records"]
    entries = {m["extractor_name"]: m for m in rec["metadata"]}
    assert set(entries) == set(DEFAULT_EXTRACTORS)
    head = submitted["ds"].repo.get_hexsha()
    for e in entries.values():
        assert e["dataset_version"] == head
        assert e["dataset_describe"] == rec["head_describe"]
        assert e["extraction_time"] and e["extractor_version"]
    rfc = entries["datalad_rfc822"]["extracted_metadata"]
    assert rfc["name"] == "studyforrest_phase2"
    assert "license" in rfc and "sameas" in rfc
    assert "10.5281/zenodo.48421" in json.dumps(rfc["sameas"])
    bids = entries["bids_dataset"]["extracted_metadata"]
    assert bids["Name"] == DATASET_DESCRIPTION["Name"]
    assert bids["BIDSVersion"] == "1.6.0"
    assert bids["Authors"] == ["Jane Doe", "John Roe"]
    assert entries["dandi"]["extracted_metadata"]["name"] == "test-dandi-ds"
    assert entries["datacite_gin"]["extracted_metadata"]["title"]
    assert entries["frictionless_datapackage"]["extracted_metadata"]
    assert entries["metalad_studyminimeta"]["extracted_metadata"]
    core = entries["metalad_core"]["extracted_metadata"]
    assert submitted["ds"].id in json.dumps(core)


def test_meta_dump_shows_the_same_records_at_the_dataset_path(submitted,
                                                              tmp_path):
    registry = submitted["registry"]
    (rec,) = submitted["records"]
    out = run("datalad", "meta-dump", "-d", str(registry), "-r")
    dumped = [json.loads(line) for line in out.splitlines() if line.strip()]
    at_path = {d["extractor_name"]: d for d in dumped
               if d.get("dataset_path") == rec["registry_path"]}
    assert set(at_path) == set(DEFAULT_EXTRACTORS)
    for m in rec["metadata"]:
        assert at_path[m["extractor_name"]]["extracted_metadata"] == \
            m["extracted_metadata"]
        assert at_path[m["extractor_name"]]["dataset_version"] == \
            m["dataset_version"]

    # a clone of the registry that fetches refs/datalad/* carries them
    clone = tmp_path / "registry-clone"
    run("git", "clone", "-q", "-o", "origin", str(registry), str(clone))
    run("git", "fetch", "-q", "origin", "refs/datalad/*:refs/datalad/*",
        cwd=clone)
    out = run("datalad", "meta-dump", "-d", str(clone), "-r")
    names = {json.loads(line)["extractor_name"] for line in out.splitlines()
             if line.strip() and rec["registry_path"] in line}
    assert names == set(DEFAULT_EXTRACTORS)


def test_index_rebuilt_from_registry_has_the_metadata(submitted, tmp_path):
    registry = submitted["registry"]
    # a fresh cache: the index is rebuilt from the registry alone
    index_sync.rebuild_index(registry)
    (rec,) = local_index(registry).records()
    (orig,) = submitted["records"]
    mine = {m["extractor_name"]: m["extracted_metadata"] for m in rec["metadata"]}
    theirs = {m["extractor_name"]: m["extracted_metadata"]
              for m in orig["metadata"]}
    assert mine == theirs


def test_search_finds_extracted_metadata(submitted):
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, submitted["root"])
        res = call(registry_search, 'metadata[bids_dataset].Authors:"john roe"',
                   dataset=str(submitted["registry"]))
        assert len(res) == 1
        res = call(registry_search, 'metadata[bids_dataset]:"BIDSVersion\\": \\"1.6"',
                   dataset=str(submitted["registry"]))
        assert len(res) == 1


def _extracted(res):
    return {r["extractor"]: r["status"] for r in res
            if r["action"] == "registry_extract" and r.get("extractor")}


def test_select_by_url_path_and_id_and_force(registry_with, tmp_path):
    ds, registry = registry_with
    # nothing to do: all at HEAD
    res = call(registry_extract, dataset=str(registry))
    assert [r["status"] for r in res] == ["notneeded"]
    for arg in (ds.path, ds.path + "/", "file://" + ds.path, ds.id):
        res = call(registry_extract, [arg], dataset=str(registry))
        assert set(_extracted(res).values()) == {"notneeded"}, arg
    res = call(registry_extract, [ds.id], dataset=str(registry), force=True,
               extractor=["bids_dataset"])
    assert _extracted(res) == {"bids_dataset": "ok"}
    res = call(registry_extract, ["https://nowhere.example/x"],
               dataset=str(registry))
    assert res[0]["status"] == "impossible"
    assert "not registered" in res[0]["message"]
    res = call(registry_extract, dataset=str(tmp_path / "none"))
    assert res[0]["status"] == "impossible"


def test_failed_reextraction_keeps_old_metadata_and_records_failure(
        registry_with):
    ds, registry = registry_with
    before = {m["extractor_name"]: m for m in record(registry, ds.path)["metadata"]}
    assert before["datacite_gin"]["extracted_metadata"]["title"] == "First title"
    (ds.pathobj / "datacite.yml").write_text("title: [unclosed\n")
    ds.save(result_renderer="disabled")
    res = call(registry_submit, [ds.path], dataset=str(registry))
    failed = [r for r in res if r["action"] == "registry_extract"
              and r["status"] == "error"]
    assert [r["extractor"] for r in failed] == ["datacite_gin"]
    msg = failed[0]["message"]
    assert ds.path in msg and "datacite_gin" in msg and "datacite.yml" in msg
    rec = record(registry, ds.path)
    entries = {m["extractor_name"]: m for m in rec["metadata"]}
    assert entries["datacite_gin"] == before["datacite_gin"]   # not lost
    assert entries["bids_dataset"]["dataset_version"] == rec["head"]  # others ran
    failure = rec["extraction_failures"]["datacite_gin"]
    assert failure["count"] == 1 and "datacite.yml" in failure["message"]
    assert failure["time"]
    res = call(registry_extract, [ds.path], dataset=str(registry), force=True)
    assert record(registry, ds.path)["extraction_failures"]["datacite_gin"]["count"] == 2
    # a search shows which datasets have failing extraction
    found = call(registry_search, 'extraction_failures:datacite_gin',
                 dataset=str(registry))
    assert [r["url"] for r in found] == [ds.path]
    assert found[0]["extraction_failures"]["datacite_gin"]["count"] == 2

    (ds.pathobj / "datacite.yml").write_text("title: Fixed\n")
    ds.save(result_renderer="disabled")
    call(registry_submit, [ds.path], dataset=str(registry))
    rec = record(registry, ds.path)
    assert "datacite_gin" not in rec["extraction_failures"]
    assert call(registry_search, 'extraction_failures:""',
                dataset=str(registry)) == []
    entries = {m["extractor_name"]: m for m in rec["metadata"]}
    assert entries["datacite_gin"]["extracted_metadata"]["title"] == "Fixed"


def test_no_extract(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"dandiset.yaml": "name: x\n"},
                      to_git=True)
    registry = tmp_path / "registry"
    res = call(registry_submit, [ds.path], dataset=str(registry), extract=False)
    assert [r["action"] for r in res] == ["registry_submit"]
    assert record(registry, ds.path)["metadata"] == []
    res = call(registry_extract, dataset=str(registry))
    assert _extracted(res)["dandi"] == "ok"
    proc = subprocess.run(["datalad", "registry-submit", "--no-extract", "-d",
                           str(tmp_path / "reg2"), ds.path],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "extracted" not in proc.stdout


def test_plain_git_repository_gets_our_extractors(tmp_path):
    repo = make_git_repo(tmp_path / "plain", {"dandiset.yaml": "name: plain\n"})
    registry = tmp_path / "registry"
    res = call(registry_submit, [str(repo)], dataset=str(registry))
    ex = _extracted(res)
    assert ex["dandi"] == "ok"
    assert ex["metalad_core"] in ("notneeded", "impossible")
    rec = record(registry, str(repo))
    assert [m["extractor_name"] for m in rec["metadata"]] == ["dandi"]


def test_unknown_extractor_names_its_package(registry_with):
    ds, registry = registry_with
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["not_an_extractor", "dandi"])
    ex = {r["extractor"]: r for r in res if r.get("extractor")}
    assert ex["not_an_extractor"]["status"] in ("impossible", "error")
    assert "not installed" in ex["not_an_extractor"]["message"]
    assert ex["dandi"]["status"] == "notneeded"
