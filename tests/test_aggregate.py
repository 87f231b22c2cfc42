"""Aggregated metalad metadata in a real registry superdataset."""
import json
import subprocess

import pytest

from datalad.api import create

from datalad_registry_ext.aggregate import add_aggregated, dump_aggregated
from datalad_registry_ext.config import DEFAULT_EXTRACTORS
from datalad_registry_ext.extraction import extract_dataset

from .fixtures import copy_dataset, make_dataset, write_files

PATH_R = "github.com/o/r"
PATH_S = "github.com/o/s"


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True,
                           capture_output=True, text=True).stdout


def register(registry, ds, path):
    """An uninstalled subdataset entry for ``ds`` at ``path``."""
    sha = ds.repo.get_hexsha()
    git("update-index", "--add", "--cacheinfo", f"160000,{sha},{path}",
        cwd=registry.path)
    for key, value in (("path", path), ("url", f"https://{path}"),
                       ("datalad-id", ds.id)):
        git("config", "-f", ".gitmodules", f"submodule.{path}.{key}", value,
            cwd=registry.path)
    git("add", ".gitmodules", cwd=registry.path)
    git("commit", "-q", "-m", f"register {path}", cwd=registry.path)


def cli_dump(path) -> list[dict]:
    proc = subprocess.run(["datalad", "meta-dump", "-d", str(path), "-r"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()
            if line.startswith("{")]


def entries_for(outcomes, path):
    return [{"dataset_path": path, "record": o["metalad_record"]}
            for o in outcomes if o["metalad_record"]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, full_ds, full_outcomes):
    """The datasets to register and their extraction outcomes (read-only):
    r is the session's full dataset, s a small one."""
    ds_s = make_dataset(tmp_path_factory.mktemp("aggregate") / "s",
                        {"dandiset.yaml": "name: s\n",
                         "datacite.yml": "title: S\n"}, to_git=True)
    out_s = extract_dataset(ds_s.path, DEFAULT_EXTRACTORS)
    return full_ds, ds_s, full_outcomes, out_s


@pytest.fixture
def setup(tmp_path, sources):
    """A registry of the test's own (annex-less, as registry-submit creates
    them) with r and s registered and no metadata yet."""
    ds_r, ds_s, out_r, out_s = sources
    registry = create(str(tmp_path / "registry"), annex=False,
                      result_renderer="disabled")
    register(registry, ds_r, PATH_R)
    register(registry, ds_s, PATH_S)
    return tmp_path, registry, ds_r, ds_s, out_r, out_s


def test_add_dump_commit_clone(setup):
    base, registry, ds_r, ds_s, out_r, out_s = setup
    head1 = registry.repo.get_hexsha()
    results = add_aggregated(registry.path, entries_for(out_r, PATH_R))
    assert len(results) == len(DEFAULT_EXTRACTORS)
    assert all(r["status"] == "ok" for r in results), results
    assert {r["dataset_path"] for r in results} == {PATH_R}
    # the registry's branch is untouched
    assert registry.repo.get_hexsha() == head1

    # the CLI lists every record at the dataset's path
    dumped = cli_dump(registry.path)
    at_r = [d for d in dumped if d.get("dataset_path") == PATH_R]
    assert sorted(d["extractor_name"] for d in at_r) == \
        sorted(DEFAULT_EXTRACTORS)
    for d in at_r:
        assert d["dataset_id"] == ds_r.id
        assert d["dataset_version"] == ds_r.repo.get_hexsha()
        assert d["root_dataset_id"] == registry.id
        assert d["root_dataset_version"] == head1
    rfc = [d for d in at_r if d["extractor_name"] == "datalad_rfc822"][0]
    assert rfc["extracted_metadata"]["name"] == "studyforrest_phase2"

    # a later registry commit: the records are still listed
    write_files(registry.path, {"notes.txt": "later\n"})
    registry.save(result_renderer="disabled", message="a later commit")
    head2 = registry.repo.get_hexsha()
    assert head2 != head1
    assert sorted(d["extractor_name"] for d in cli_dump(registry.path)
                  if d.get("dataset_path") == PATH_R) == \
        sorted(DEFAULT_EXTRACTORS)

    # records of another dataset, added at the new HEAD
    results = add_aggregated(registry.path, entries_for(out_s, PATH_S))
    assert results and all(r["status"] == "ok" for r in results)
    dumped = cli_dump(registry.path)
    assert {d["dataset_path"] for d in dumped} == {PATH_R, PATH_S}
    assert {d["root_dataset_version"] for d in dumped
            if d["dataset_path"] == PATH_S} == {head2}

    latest = dump_aggregated(registry.path)
    assert latest == dump_aggregated(registry.path, use_metalad=True)
    got = {(e["dataset_path"], e["record"]["extractor_name"]) for e in latest}
    assert got == {(PATH_R, n) for n in DEFAULT_EXTRACTORS} | {
        (PATH_S, "metalad_core"), (PATH_S, "dandi"), (PATH_S, "datacite_gin")}
    s_dandi = [e for e in latest if e["dataset_path"] == PATH_S
               and e["record"]["extractor_name"] == "dandi"][0]
    assert s_dandi["record"]["extracted_metadata"] == {"name": "s"}

    # a clone that fetches refs/datalad/* carries the metadata
    clone = base / "registry-clone"
    git("clone", "-q", "-o", "origin", registry.path, str(clone), cwd=base)
    git("fetch", "-q", "origin", "refs/datalad/*:refs/datalad/*", cwd=clone)
    cloned = cli_dump(clone)
    assert sorted(map(json.dumps, cloned)) == sorted(map(json.dumps, dumped))
    assert dump_aggregated(clone) == latest


def test_re_extraction_replaces_old_version(setup):
    base, registry, ds_r, ds_s, out_r, out_s = setup
    add_aggregated(registry.path, entries_for(out_s, PATH_S))
    # the dataset moves on (a copy: the module's s stays as registered);
    # the registry HEAD stays where it is
    ds_s = copy_dataset(ds_s, base / "s")
    write_files(ds_s.path, {"dandiset.yaml": "name: s, version 2\n"})
    ds_s.save(result_renderer="disabled")
    new = extract_dataset(ds_s.path, ["dandi", "datacite_gin"])
    results = add_aggregated(registry.path, entries_for(new, PATH_S))
    assert all(r["status"] == "ok" for r in results), results
    head = registry.repo.get_hexsha()
    at_s = [d for d in cli_dump(registry.path)
            if d["dataset_path"] == PATH_S
            and d["root_dataset_version"] == head]
    assert {d["dataset_version"] for d in at_s} == {ds_s.repo.get_hexsha()}
    latest = {e["record"]["extractor_name"]: e["record"]
              for e in dump_aggregated(registry.path)
              if e["dataset_path"] == PATH_S}
    assert latest["dandi"]["extracted_metadata"] == {"name": "s, version 2"}
    assert latest["dandi"]["dataset_version"] == ds_s.repo.get_hexsha()
    assert dump_aggregated(registry.path) == \
        dump_aggregated(registry.path, use_metalad=True)


def test_bad_entries(setup):
    base, registry, ds_r, ds_s, out_r, out_s = setup
    good = entries_for(out_s, PATH_S)[0]
    no_id = {"dataset_path": PATH_S,
             "record": dict(good["record"], dataset_id=None)}
    results = add_aggregated(registry.path, [
        {"dataset_path": "../escape", "record": good["record"]},
        no_id,
        {"dataset_path": PATH_S, "record": {"type": "dataset"}},
        good,
    ])
    assert [r["status"] for r in results] == ["error"] * 3 + ["ok"]
    assert "invalid dataset_path" in results[0]["message"]
    assert "no dataset_id" in results[1]["message"]
    assert "lacks" in results[2]["message"]


def test_registry_without_metadata(tmp_path):
    registry = create(str(tmp_path / "reg"), result_renderer="disabled")
    assert dump_aggregated(registry.path) == []
    assert dump_aggregated(registry.path, use_metalad=True) == []
    results = add_aggregated(tmp_path / "nothing", [
        {"dataset_path": PATH_R, "record": {}}])
    assert results[0]["status"] == "error"
