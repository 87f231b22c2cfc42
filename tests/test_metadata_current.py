"""The registry's metadata stays current: one record per (dataset,
extractor) in ``meta-dump -r`` after any sequence of submits, updates and
re-extractions; a clone whose metadata refs are missing or old says so;
re-submission and re-extraction say what changed."""
import json
import logging
import os
import subprocess

from datalad.api import (
    Dataset,
    meta_add,
    registry_extract,
    registry_search,
    registry_submit,
)

from datalad_registry_ext.aggregate import dump_aggregated
from datalad_registry_ext.index_sync import REFS_ACTION
from datalad_registry_ext.extraction import extract_dataset
from datalad_registry_ext.index import local_index
from datalad_registry_ext.registry import read_entries

from .fixtures import DATASET_DESCRIPTION, call, make_dataset, record, run


def cli(*args, cwd=None):
    """A datalad command line, as a user types it (the test's user dirs are
    in the environment)."""
    proc = subprocess.run(["datalad", *args], capture_output=True, text=True,
                          cwd=cwd)
    return proc


def meta_dump(registry, *pattern):
    proc = cli("meta-dump", "-d", str(registry), *pattern, "-r")
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()
            if line.startswith("{")]


def bids(name):
    return json.dumps(dict(DATASET_DESCRIPTION, Name=name))


def make_pair(tmp_path):
    a = make_dataset(tmp_path / "a", {"dataset_description.json": bids("A1")},
                     to_git=True)
    b = make_dataset(tmp_path / "b", {"datacite.yml": "title: B\nauthors: []\n"},
                     to_git=True)
    return a, b


def assert_current(registry):
    """``meta-dump -r`` lists exactly the index's metadata: one record per
    (dataset path, extractor), of the dataset version the index names."""
    dumped = meta_dump(registry)
    keys = [(d["dataset_path"], d["extractor_name"]) for d in dumped]
    assert len(keys) == len(set(keys)), sorted(keys)
    expected = {(r["registry_path"], e["extractor_name"], e["dataset_version"])
                for r in local_index(registry).records()
                for e in r.get("metadata") or []}
    assert {(d["dataset_path"], d["extractor_name"], d["dataset_version"])
            for d in dumped} == expected
    return dumped


def test_one_record_per_dataset_and_extractor(tmp_path):
    a, b = make_pair(tmp_path)
    registry = tmp_path / "registry"
    res = call(registry_submit, [a.path, b.path], dataset=str(registry))
    assert all(r["status"] in ("ok", "notneeded") for r in res), res
    assert len(assert_current(registry)) == 4  # core + bids, core + gin

    # a content update of a, submitted again
    (tmp_path / "a" / "dataset_description.json").write_text(bids("A2"))
    a.save(result_renderer="disabled")
    call(registry_submit, [a.path], dataset=str(registry))
    # a forced re-extraction of everything: the registry HEAD does not move
    call(registry_extract, dataset=str(registry), force=True)
    # b's default branch flips to a new one with another commit
    run("git", "checkout", "-q", "-b", "other", cwd=b.path)
    (tmp_path / "b" / "more.txt").write_text("more\n")
    b.save(result_renderer="disabled")
    call(registry_submit, [b.path], dataset=str(registry))
    # one extractor of a again, after the registry moved on: the other
    # extractor's record stays as it was
    res = call(registry_extract, [a.path], dataset=str(registry),
               extractor=["bids"], force=True)
    assert [r["status"] for r in res] == ["ok"], res

    dumped = assert_current(registry)
    assert len(dumped) == 4
    heads = {p: e["head"] for p, e in read_entries(registry).items()}
    for d in dumped:
        assert d["dataset_version"] == heads[d["dataset_path"]]
    (a_bids,) = [d for d in dumped if d["extractor_name"] == "bids_dataset"]
    assert a_bids["extracted_metadata"]["Name"] == "A2"
    # metalad's own reader and ours agree, and need no de-duplication
    assert dump_aggregated(registry) == dump_aggregated(registry,
                                                        use_metalad=True)
    # the UUID set holds a's current version only
    by_uuid = meta_dump(registry, f"uuid:{a.id}")
    assert {d["dataset_version"] for d in by_uuid} == {a.repo.get_hexsha()}
    assert len(by_uuid) == 2


def test_duplicates_of_an_older_store_are_cleaned(tmp_path):
    """A store written before records were kept unique (the same dataset's
    records at two registry commits) is cleaned by the next addition."""
    a, b = make_pair(tmp_path)
    registry = tmp_path / "registry"
    call(registry_submit, [a.path], dataset=str(registry), extract=False)
    reg = Dataset(str(registry))
    path = record(registry, a.path)["registry_path"]
    outcomes = [o for o in extract_dataset(a.path, ["metalad_core",
                                                    "bids_dataset"])
                if o["metalad_record"]]
    assert len(outcomes) == 2
    # what the older code left: the records added at two root versions
    for root in (reg.repo.get_hexsha(), "0" * 40):
        meta_add([dict(o["metalad_record"], dataset_path=path,
                       root_dataset_id=reg.id, root_dataset_version=root)
                  for o in outcomes], dataset=reg,
                 result_renderer="disabled")
    assert len(meta_dump(registry)) == 4

    call(registry_submit, [b.path], dataset=str(registry))
    dumped = meta_dump(registry)
    keys = sorted((d["dataset_path"], d["extractor_name"]) for d in dumped)
    assert keys == sorted({(path, "bids_dataset"), (path, "metalad_core"),
                           (record(registry, b.path)["registry_path"],
                            "metalad_core"),
                           (record(registry, b.path)["registry_path"],
                            "datacite_gin")})


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, rec):
        self.messages.append(rec.getMessage())


def test_clone_without_or_with_old_metadata_refs(tmp_path):
    a, b = make_pair(tmp_path)
    origin = tmp_path / "registry"
    call(registry_submit, [a.path, b.path], dataset=str(origin))
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(origin), str(clone))

    logger = logging.getLogger("datalad.registry_ext.index_sync")
    handler = _Messages()
    logger.addHandler(handler)
    try:
        # nothing to extract here: the result stream carries the warning once
        res = call(registry_extract, [a.path], dataset=str(clone),
                   extractor=["bids"])
        refs = [r for r in res if r["action"] == REFS_ACTION]
        assert len(refs) == 1 and refs[0]["status"] == "ok"
        message = refs[0]["message"]
        assert "has no metadata refs" in message
        # (DataLad's test setup names a clone's remote dl-test-remote)
        (remote,) = run("git", "remote", cwd=clone).split()
        fetch = (f"git -C {clone} fetch {remote} "
                 f"'refs/datalad/*:refs/datalad/*'")
        assert fetch in message
        assert handler.messages == [message]
        # said once: not again in this process for the same state
        res = call(registry_extract, [a.path], dataset=str(clone),
                   extractor=["bids"])
        assert not [r for r in res if r["action"] == REFS_ACTION]
        assert handler.messages == [message]

        # the command it names works: then the clone has the metadata
        # (searching brings the index up to date; extracting in the clone
        # would run the extractors on its own clone cache)
        subprocess.run(fetch, shell=True, check=True, capture_output=True)
        call(registry_search, "bids", dataset=str(clone))
        names = {e["extractor_name"] for e in
                 record(clone, a.path).get("metadata") or []}
        assert names == {"metalad_core", "bids_dataset"}
        assert len(handler.messages) == 1

        # the origin moves on; a pull without the refs gives old metadata
        (tmp_path / "a" / "dataset_description.json").write_text(bids("A2"))
        a.save(result_renderer="disabled")
        call(registry_submit, [a.path], dataset=str(origin))
        run("git", "pull", "-q", "--ff-only", cwd=clone)
        call(registry_search, "bids", dataset=str(clone))
        assert len(handler.messages) == 2
        older = handler.messages[-1]
        assert "older than its records: 1 of its 2" in older
        assert fetch in older
        subprocess.run(fetch, shell=True, check=True, capture_output=True)
        call(registry_search, "bids", dataset=str(clone))
        assert len(handler.messages) == 2
        (bids_entry,) = [e for e in record(clone, a.path)["metadata"]
                         if e["extractor_name"] == "bids_dataset"]
        assert bids_entry["extracted_metadata"]["Name"] == "A2"
        assert bids_entry["dataset_version"] == a.repo.get_hexsha()
    finally:
        logger.removeHandler(handler)

    # the registry that wrote its own store is never told to fetch
    assert not [r for r in call(registry_extract, dataset=str(origin),
                                force=True) if r["action"] == REFS_ACTION]


def test_resubmission_says_what_changed(tmp_path):
    a, _ = make_pair(tmp_path)
    registry = tmp_path / "registry"
    (first, *extracted) = call(registry_submit, [a.path],
                               dataset=str(registry))
    # the submit result's record carries the metadata of the same call
    assert {e["extractor_name"] for e in first["record"]["metadata"]} == \
        {"metalad_core", "bids_dataset"}
    assert {r["change"] for r in extracted if r["status"] == "ok"} == {"new"}
    old = a.repo.get_hexsha()
    (tmp_path / "a" / "dataset_description.json").write_text(bids("A2"))
    a.save(result_renderer="disabled")
    new = a.repo.get_hexsha()

    proc = cli("-f", "json", "registry-submit", "-d", str(registry), a.path)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    (sub,) = [r for r in results if r["action"] == "registry_submit"]
    assert sub["change"] == "updated" and "head" in sub["changed"]
    assert sub["before"]["head"] == old and sub["head"] == new
    (meta,) = [e for e in sub["record"]["metadata"]
               if e["extractor_name"] == "bids_dataset"]
    assert meta["dataset_version"] == new
    ext = {r["extractor"]: r for r in results
           if r["action"] == "registry_extract" and r["status"] == "ok"}
    assert set(ext) == {"metalad_core", "bids_dataset"}
    for r in ext.values():
        assert (r["change"], r["previous_version"]) == ("updated", old)
        assert r["metadata"]["dataset_version"] == new

    # the human output says the same
    run("git", "commit", "-q", "--allow-empty", "-m", "again", cwd=a.path)
    newer = a.repo.get_hexsha()
    proc = cli("registry-submit", "-d", str(registry), a.path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("updated ") and
               f"HEAD {new[:8]} -> {newer[:8]}" in line
               for line in lines), lines
    assert any(line.split()[:2] == ["updated", "bids_dataset"] and
               line.endswith(f"HEAD {new[:8]} -> {newer[:8]}")
               for line in lines), lines

    proc = cli("registry-extract", "-d", str(registry), "--force", "-e",
               "bids", a.path)
    assert proc.returncode == 0, proc.stderr
    assert any(line.split()[:2] == ["unchanged", "bids_dataset"] and
               f"extracted again at {newer[:8]}, same content" in line
               for line in proc.stdout.splitlines()), proc.stdout
    assert os.path.isdir(registry)
