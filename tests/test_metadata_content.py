"""Where metadata comes from and where it goes: annexed metadata files
(fetched, and nothing else), plain git repositories' metadata committed in
the registry, and data packages in the Data Package specification's terms.
"""
import json
import shutil
from pathlib import Path

from datalad.api import clone as datalad_clone
from datalad.api import registry_search, registry_submit

from datalad_registry_ext import locations
from datalad_registry_ext.clones import clone_location
from datalad_registry_ext.config import DEFAULT_EXTRACTORS
from datalad_registry_ext.records import canonical_url
from datalad_registry_ext.registry import PLAIN_METADATA_FILE

from .fixtures import (
    DANDISET,
    DATACITE,
    DATAPACKAGE,
    DATASET_DESCRIPTION,
    RFC822,
    STUDYMINIMETA,
    call,
    make_dataset,
    make_git_repo,
    record,
    run,
)

# one file for each default extractor that reads one
METADATA_FILES = {
    "dataset_description.json": json.dumps(DATASET_DESCRIPTION),
    "datacite.yml": DATACITE,
    "dandiset.yaml": DANDISET,
    ".datalad/meta.rfc822": RFC822,
    "datapackage.json": json.dumps(DATAPACKAGE),
    ".studyminimeta.yaml": STUDYMINIMETA,
}
OTHER_FILES = {
    "data/big.bin": bytes(range(256)) * 64,
    "notes.txt": "annexed, and no extractor reads it\n",
}


def extracted(results) -> dict:
    return {r["extractor"]: r for r in results
            if r["action"] == "registry_extract" and r.get("extractor")}


def present_in(path) -> set:
    """Files whose annexed content the repository at ``path`` has."""
    return set(run("git", "annex", "find", "--in", "here",
                   cwd=path).splitlines())


def clone_of(registry, url) -> Path:
    # the cache is the user's, shared by registries: keyed by the URL only
    return clone_location(canonical_url(url))


def annexed_dataset(path, files=None):
    """A dataset as plain ``datalad create`` makes it: every file annexed."""
    ds = make_dataset(path, {**METADATA_FILES, **OTHER_FILES,
                             **(files or {})})
    assert all(ds.repo.is_under_annex(list(METADATA_FILES)))
    return ds


# -- 1. annexed metadata files ------------------------------------------------

def test_annexed_metadata_is_fetched_and_nothing_else(tmp_path):
    ds = annexed_dataset(tmp_path / "ds")
    registry = tmp_path / "registry"
    res = call(registry_submit, [ds.path], dataset=str(registry))
    ex = extracted(res)
    assert set(ex) == set(DEFAULT_EXTRACTORS)
    for name, r in ex.items():
        assert r["status"] == "ok", (name, r["message"])
    md = {m["extractor_name"]: m["extracted_metadata"]
          for m in record(registry, ds.path)["metadata"]}
    assert md["datacite_gin"]["title"] == "A dataset title"
    assert md["bids_dataset"]["Name"] == DATASET_DESCRIPTION["Name"]
    assert md["datalad_rfc822"]["name"] == "studyforrest_phase2"
    assert md["frictionless_datapackage"]["name"] == "test-package"
    assert md["dandi"]["identifier"] == "DANDI:000027"

    cl = clone_of(registry, ds.path)
    # exactly the metadata files' content came over, none of the data
    assert present_in(cl) == set(METADATA_FILES)
    for rel in OTHER_FILES:
        assert not (cl / rel).exists()
    whereis = run("git", "annex", "whereis", "data/big.bin", cwd=cl)
    assert "(1 copy)" in whereis and "[origin]" in whereis
    # the clone is private: the origin's annex never hears of it
    assert "(1 copy)" in run("git", "annex", "whereis", "datacite.yml",
                             cwd=ds.path)


def test_content_nobody_has_is_impossible(tmp_path):
    ds = annexed_dataset(tmp_path / "ds")
    run("git", "annex", "drop", "--force", "datacite.yml", cwd=ds.path)
    registry = tmp_path / "registry"
    ex = extracted(call(registry_submit, [ds.path], dataset=str(registry)))
    gin = ex["datacite_gin"]
    assert gin["status"] == "impossible"
    assert "datacite.yml: content not available" in gin["message"]
    assert ds.path in gin["message"]  # the dataset, not its clone
    assert ex["dandi"]["status"] == "ok"
    rec = record(registry, ds.path)
    assert "datacite_gin" in rec["extraction_failures"]
    assert "datacite_gin" not in {m["extractor_name"]
                                  for m in rec["metadata"]}
    assert "datacite.yml" not in present_in(clone_of(registry, ds.path))


def test_unreachable_origin_is_impossible(tmp_path):
    from datalad_registry_ext.metadata import extract
    ds = annexed_dataset(tmp_path / "ds")
    registry = tmp_path / "registry"
    call(registry_submit, [ds.path], dataset=str(registry), extract=False)
    cl = clone_of(registry, ds.path)
    assert present_in(cl) == set()
    # the only remote with the content is gone
    ds_path = Path(ds.path)
    ds_path.rename(tmp_path / "moved")
    res = list(extract(registry, [record(registry, str(ds_path))],
                       ["dandi", "datalad_rfc822"]))
    for r in res:
        assert r["status"] == "impossible", r["message"]
        assert "content not available" in r["message"]
    messages = {r["extractor"]: r["message"] for r in res}
    assert "dandiset.yaml" in messages["dandi"]
    assert ".datalad/meta.rfc822" in messages["datalad_rfc822"]
    assert present_in(cl) == set()


def test_annexed_file_over_the_size_cap_is_not_fetched(tmp_path,
                                                       max_bytes_env):
    big = json.dumps({**DATAPACKAGE, "description": "x" * 2000})
    ds = make_dataset(tmp_path / "ds", {"datapackage.json": big,
                                        "dandiset.yaml": "name: small\n"})
    max_bytes_env(1000)
    registry = tmp_path / "registry"
    ex = extracted(call(registry_submit, [ds.path], dataset=str(registry)))
    frdp = ex["frictionless_datapackage"]
    assert frdp["status"] == "impossible"
    assert "datapackage.json: too large to fetch" in frdp["message"]
    assert f"({len(big)} bytes; the limit is 1000 bytes" in frdp["message"]
    assert "datalad.registry.metadata-max-bytes" in frdp["message"]
    assert ex["dandi"]["status"] == "ok"
    assert present_in(clone_of(registry, ds.path)) == {"dandiset.yaml"}


def test_annexed_file_of_unknown_size_is_not_fetched(tmp_path):
    from datalad_registry_ext.extraction import extract_dataset
    ds = make_dataset(tmp_path / "ds", {})
    # a URL key records no size: the content could be anything
    key = "URL--http&c%%127.0.0.1:9%dandiset.yaml"
    run("git", "annex", "fromkey", "--force", key, "dandiset.yaml",
        cwd=ds.path)
    run("git", "commit", "-q", "-m", "key without size", cwd=ds.path)
    (out,) = extract_dataset(ds.path, ["dandi"])
    assert out["status"] == "impossible"
    assert f"dandiset.yaml: its annex key {key} records no size" in \
        out["message"]
    assert "not fetched" in out["message"]
    assert present_in(ds.path) == set()


# -- 2. plain git repositories keep their metadata ----------------------------

def test_plain_git_metadata_is_committed_and_travels(tmp_path):
    repo = make_git_repo(tmp_path / "plain", {
        "dandiset.yaml": "name: plain dandiset\n",
        "datapackage.json": json.dumps(DATAPACKAGE)})
    registry = tmp_path / "registry"
    ex = extracted(call(registry_submit, [str(repo)], dataset=str(registry)))
    assert ex["dandi"]["status"] == "ok"
    assert ex["frictionless_datapackage"]["status"] == "ok"
    path = record(registry, str(repo))["registry_path"]

    # committed, on the registry's branch, next to the records file
    committed = [json.loads(line) for line in run(
        "git", "show", f"HEAD:{PLAIN_METADATA_FILE}",
        cwd=registry).splitlines()]
    assert [(c["registry_path"], c["extractor_name"]) for c in committed] \
        == [(path, "dandi"), (path, "frictionless_datapackage")]
    assert committed[0]["extracted_metadata"] == {"name": "plain dandiset"}
    assert run("git", "status", "--porcelain", cwd=registry) == ""
    assert "plain git" in run("git", "log", "-1", "--format=%s",
                              cwd=registry)

    def search_content(where):
        res = call(registry_search, "plain dandiset", dataset=str(where),
                   metadata="content")
        (hit,) = [r for r in res if r.get("action") == "registry_search"]
        return {m["extractor_name"]: m["extracted_metadata"]
                for m in hit["metadata"]}

    expected = {"dandi": {"name": "plain dandiset"}}

    # a clone of the registry, with an index of its own, has it
    copy = tmp_path / "registry-copy"
    datalad_clone(str(registry), str(copy), result_renderer="disabled")
    got = search_content(copy)
    assert got["dandi"] == expected["dandi"]
    assert got["frictionless_datapackage"]["name"] == "test-package"

    # and so does the registry itself once the whole cache (index and
    # clones) is gone
    shutil.rmtree(locations.user_cache_dir())
    got = search_content(registry)
    assert got["dandi"] == expected["dandi"]
    assert set(got) == {"dandi", "frictionless_datapackage"}


# -- 3. data packages in the Data Package specification's terms ---------------

DATAPACKAGE_V1 = {
    "name": "world-gdp",
    "title": "World GDP",
    "keywords": ["GDP", "economics"],
    "licenses": [{"name": "ODC-PDDL-1.0", "title": "Open Data Commons",
                  "path": "https://opendatacommons.org/licenses/pddl/"}],
    "sources": [{"title": "World Bank", "path": "https://data.worldbank.org"}],
    "contributors": [{"title": "Jane Doe", "email": "jane@example.com",
                      "role": "author"}],
    "last_updated": "2024-05-01",
    "resources": [
        {"name": "gdp-by-country", "path": "data/gdp.csv",
         "format": "csv", "schema": {"fields": [
             {"name": "country", "type": "string"},
             {"name": "gdp", "type": "number"}]}},
        {"name": "population", "path": ["data/pop-1.csv", "data/pop-2.csv"]},
    ],
}


def test_datapackage_in_its_own_terms(tmp_path):
    ds = make_dataset(tmp_path / "ds", {
        "datapackage.json": json.dumps(DATAPACKAGE_V1)})
    other = make_dataset(tmp_path / "other", {
        "datapackage.json": json.dumps(DATAPACKAGE)})
    registry = tmp_path / "registry"
    res = call(registry_submit, [ds.path, other.path], dataset=str(registry))
    assert [r["status"] for r in res if r.get("extractor") ==
            "frictionless_datapackage"] == ["ok", "ok"]
    (frdp,) = [m["extracted_metadata"] for m in
               record(registry, ds.path)["metadata"]
               if m["extractor_name"] == "frictionless_datapackage"]
    # the package's own fields, unchanged ...
    for key, value in DATAPACKAGE_V1.items():
        assert frdp[key] == value, key
    # ... next to the legacy extractor's
    assert frdp["shortdescription"] == "World GDP"
    assert frdp["tag"] == ["GDP", "economics"]
    assert frdp["license"] == ["https://opendatacommons.org/licenses/pddl/"]
    assert frdp["conformsto"] == \
        "http://specs.frictionlessdata.io/data-packages"

    def found(query):
        return sorted(r["url"] for r in call(registry_search, query,
                                             dataset=str(registry))
                      if r.get("action") == "registry_search")

    assert found("metadata[frictionless_datapackage].keywords:GDP") == \
        [ds.path]
    assert found("metadata[frictionless].resources.name:gdp-by-country") \
        == [ds.path]
    assert found("metadata[frictionless].resources.path:pop-2.csv") == \
        [ds.path]
    assert found("metadata[frictionless].sources.title:World Bank") == \
        [ds.path]
    assert found("metadata[frictionless].keywords:alpha") == [other.path]


def test_plain_metadata_file_changes_only_when_needed(tmp_path):
    from datalad_registry_ext import registry as reg
    registry = reg.ensure_registry(tmp_path / "registry")
    entry = {"extractor_name": "dandi", "extracted_metadata": {"name": "x"}}
    with reg.locked(registry):
        first = reg.commit_plain_metadata(registry,
                                          {"h/o/r": {"dandi": entry}})
        assert first == reg.head_commit(registry)
        # the same entry again: no commit
        assert reg.commit_plain_metadata(
            registry, {"h/o/r": {"dandi": entry}}) is None
        # a repository that has a dataset id by now: its entry goes
        second = reg.commit_plain_metadata(registry,
                                           {"h/o/r": {"dandi": None}})
    assert second and second != first
    assert reg.read_plain_metadata(registry, first) == \
        {"h/o/r": {"dandi": entry}}
    assert reg.read_plain_metadata(registry) == {}
    assert (registry / PLAIN_METADATA_FILE).read_text() == ""
    assert "h/o/r: none" in run("git", "log", "-1", "--format=%B",
                                cwd=registry)
