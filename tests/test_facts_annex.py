"""Annex facts that DataLad-Registry's fields hide, and subdataset URLs.

- files of unknown size (URL keys without one): the known size is stored,
  the number of such files apart, and the statistics say "at least";
- ``annex_keys_known_count`` next to the compatible ``annex_key_count``,
  which is 0 when the remote cloned from holds no content (GitHub, a plain
  git server);
- ``subds_url:=`` finds a subdataset by its path and by its ``file://`` URL,
  a relative ``.gitmodules`` URL resolved, DataLad's ``datalad-url`` too.

Real datasets, real git-annex, real ``.gitmodules``; nothing needs the
network (the URL key's content is never fetched).
"""
from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from datalad.api import registry_search, registry_submit, registry_sync

from datalad_registry_ext.clones import clone_or_update
from datalad_registry_ext.engine import Engine, build, merge_stats
from datalad_registry_ext.facts import annex_size, repository_facts
from datalad_registry_ext.index import local_index, source_index
from datalad_registry_ext.query import SearchView
from datalad_registry_ext.stats import collection_stats

from .fixtures import annex_info, call, make_dataset, run

#: a URL key without a size, as ``git annex addurl --relaxed`` makes one
URL_KEY = "URL--http&c%%example.org%big.nii.gz"
URL = "http://example.org/big.nii.gz"


def add_url_key(path: Path, name: str = "web.nii.gz") -> None:
    """Add an annexed file whose key is ``URL_KEY`` (no size) and record the
    web as having its content; offline (``fromkey --force`` checks nothing)."""
    run("git", "annex", "fromkey", "--force", URL_KEY, name, cwd=path)
    run("git", "annex", "registerurl", URL_KEY, URL, cwd=path)
    run("datalad", "save", "-m", "a file on the web", cwd=path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``src``: a dataset with two annexed files of known size (5 + 3
    bytes, content here) and one of unknown size (on the web); ``github``:
    a plain bare git copy of it, as on GitHub (no annex there, no content);
    ``plain``: a dataset whose sizes are all known; all three registered."""
    root = tmp_path_factory.mktemp("annex-facts")
    src = Path(make_dataset(root / "src", {"a.dat": "12345",
                                           "b.dat": "abc"}).path)
    add_url_key(src)
    github = root / "github.git"
    run("git", "clone", "-q", "--bare", str(src), str(github))
    plain = Path(make_dataset(root / "plain", {"c.dat": "1234567"}).path)
    registry = root / "registry"
    res = call(registry_submit, [str(src), str(github), str(plain)],
               dataset=str(registry), extract=False)
    assert [r["status"] for r in res
            if r["action"] == "registry_submit"] == ["ok"] * 3, res
    records = {r["url"]: r for r in local_index(registry).records()}
    return dict(root=root, src=src, github=github, plain=plain,
                registry=registry, records=records)


def urls(registry, query):
    return sorted(r["url"] for r in call(registry_search, query,
                                         dataset=str(registry))
                  if r.get("action") == "registry_search")


def stats_of(registry, query):
    (s,) = [r for r in call(registry_search, query, dataset=str(registry),
                            stats=True, limit=0)
            if r["action"] == "registry_search_stats"]
    return s["collection_stats"]


# -- files of unknown size -----------------------------------------------------------

def test_annex_size_text():
    assert annex_size("77973871 (+ 1 unknown size)") == (77973871, 1)
    assert annex_size("16") == (16, 0)
    assert annex_size("0 (+ 12 unknown size)") == (0, 12)
    assert annex_size(None) == (None, None)
    assert annex_size("a lot") == (None, None)


def test_known_size_stored_unknown_counted_apart(world):
    src = world["records"][str(world["src"])]
    # what git-annex itself says of this tree
    assert annex_info(world["src"])["size of annexed files in working tree"] \
        == "8 (+ 1 unknown size)"
    assert src["annexed_files_in_wt_count"] == 3
    assert src["annexed_files_in_wt_size"] == 8
    assert src["annexed_files_in_wt_unknown_size_count"] == 1
    plain = world["records"][str(world["plain"])]
    assert plain["annexed_files_in_wt_size"] == 7
    assert plain["annexed_files_in_wt_unknown_size_count"] == 0


def test_size_searches_see_the_known_size(world):
    reg, src, gh = world["registry"], str(world["src"]), str(world["github"])
    plain = str(world["plain"])
    # the known 8 bytes are searched (the record stored null before)
    assert urls(reg, "annexed_files_in_wt_size:>=8") == sorted([src, gh])
    assert urls(reg, "annexed_files_in_wt_size:>8") == []
    assert urls(reg, "annexed_files_in_wt_size:<8B") == [plain]
    assert urls(reg, "annexed_files_in_wt_unknown_size_count:>0") == \
        sorted([src, gh])
    assert urls(reg, "annexed_files_in_wt_unknown_size_count:=0") == [plain]


def test_stats_say_at_least(world):
    reg = world["registry"]
    s = stats_of(reg, "")
    # src and its GitHub copy: one dataset id, two copies
    assert s["datalad_ds_stats"]["stats"] == {
        "ds_count": 3, "annexed_files_size": 8 + 8 + 7,
        "annexed_file_count": 3 + 3 + 1,
        "annexed_files_unknown_size_count": 2}
    # the unique copy of src's id carries its one file of unknown size
    unique = s["datalad_ds_stats"]["unique_ds_stats"]
    assert unique["annexed_files_unknown_size_count"] == 1
    assert unique["annexed_files_size"] == 8 + 7
    # sizes all known: upstream's shape, no key of ours
    assert s["pure_annex_ds_stats"] == {"ds_count": 0}
    known = stats_of(reg, f"url:={world['plain']}")
    assert known["datalad_ds_stats"]["stats"] == {
        "ds_count": 1, "annexed_files_size": 7, "annexed_file_count": 1}
    # human output: a lower bound
    out = subprocess.run(["datalad", "registry-search", "-d", str(reg),
                          "--stats"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "DataLad datasets (all copies):   3 datasets, 7 annexed files, " \
        "at least 23 B (2 files of unknown size)" in out.stdout
    out = subprocess.run(["datalad", "registry-search", "-d", str(reg),
                          "--stats", f"url:={world['plain']}"],
                         capture_output=True, text=True)
    assert "1 annexed file, 7 B" in out.stdout and "at least" not in out.stdout


# -- keys known anywhere -----------------------------------------------------------------

def test_keys_known_where_the_origin_holds_none(world):
    gh = world["records"][str(world["github"])]
    # the GitHub-like copy holds no annexed content: the compatible count is
    # 0, as DataLad-Registry reports for such repositories ...
    assert gh["annex_key_count"] == 0
    # ... while its git-annex branch knows the three keys: two in src, one
    # on the web
    assert gh["annex_keys_known_count"] == 3
    src = world["records"][str(world["src"])]
    assert src["annex_key_count"] == 2  # the web's key is not in src
    assert src["annex_keys_known_count"] == 3
    plain = world["records"][str(world["plain"])]
    assert plain["annex_keys_known_count"] == 1
    reg = world["registry"]
    assert urls(reg, "annex_keys_known_count:>=3 annex_key_count:=0") == \
        [str(world["github"])]


def test_keys_present_nowhere_are_not_known(tmp_path):
    """A key whose content was dropped everywhere, and one only in a dead
    repository, are in the git-annex branch but available nowhere."""
    ds = make_dataset(tmp_path / "ds", {"a.dat": "12345", "b.dat": "abc"})
    add_url_key(Path(ds.path))
    clone, _ = clone_or_update(ds.path, tmp_path / "clone")
    assert repository_facts(clone)["annex_keys_known_count"] == 3
    run("git", "annex", "drop", "--force", "a.dat", cwd=ds.path)
    run("git", "annex", "dead", "web", cwd=ds.path)
    clone, _ = clone_or_update(ds.path, tmp_path / "clone")
    facts = repository_facts(clone)
    assert facts["annex_keys_known_count"] == 1  # b.dat, in ds
    assert facts["annex_key_count"] == 1


# -- subdataset URLs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def superds(tmp_path_factory):
    """A superdataset with four subdatasets, their .gitmodules URLs written
    by git and DataLad: a ``file://`` URL (git submodule add), a path (with
    DataLad's ``datalad-url`` the ``file://`` URL it was cloned from), a
    plain path, and a relative URL (a subdataset created in place)."""
    root = tmp_path_factory.mktemp("subds")
    origin = Path(make_dataset(root / "origin", {"x.dat": "x"}).path)
    for name in ("written", "containers", "other"):
        run("git", "clone", "-q", "--bare", str(origin), str(root / f"{name}.git"))
    sup = Path(make_dataset(root / "super", {"y.dat": "y"}).path)
    run("git", "-c", "protocol.file.allow=always", "submodule", "--quiet", "add",
        f"file://{root}/written.git", "written", cwd=sup)
    run("datalad", "clone", "-d", ".", f"file://{root}/containers.git",
        "containers", cwd=sup)
    run("datalad", "clone", "-d", ".", str(root / "other.git"), "other",
        cwd=sup)
    run("datalad", "create", "-d", ".", "inner", cwd=sup)
    run("datalad", "save", "-m", "subdatasets", cwd=sup)
    gitmodules = (sup / ".gitmodules").read_text()
    assert f"url = file://{root}/written.git" in gitmodules
    assert f"datalad-url = file://{root}/containers.git" in gitmodules
    assert "url = ./inner" in gitmodules
    registry = root / "registry"
    res = call(registry_submit, [str(sup)], dataset=str(registry),
               extract=False)
    assert res[0]["status"] == "ok", res
    # read now: each test has its own user dirs (a search there rebuilds
    # the index from the registry)
    records = local_index(registry).records()
    return dict(root=root, super=sup, registry=registry, records=records)


def test_subdataset_urls_as_written(superds):
    root, sup = superds["root"], superds["super"]
    (rec,) = superds["records"]
    subs = {s["path"]: s for s in rec["subdatasets"]}
    assert subs["written"]["url"] == f"file://{root}/written.git"
    assert "datalad_url" not in subs["written"]
    assert subs["containers"]["url"] == f"{root}/containers.git"
    assert subs["containers"]["datalad_url"] == f"file://{root}/containers.git"
    assert subs["other"]["url"] == subs["other"]["datalad_url"] == \
        f"{root}/other.git"
    assert subs["inner"]["url"] == "./inner"
    assert subs["inner"]["ds_id"]
    assert rec["url"] == str(sup)


@pytest.mark.parametrize("spelling", [
    "file://{root}/written.git", "{root}/written.git",
    "file://{root}/containers.git", "{root}/containers.git",
    "file://{root}/containers.git/", "{root}/other.git",
    "file://{root}/other.git",
    "./inner", "{root}/super/inner", "file://{root}/super/inner",
])
def test_subds_url_either_spelling(superds, spelling):
    query = f"subds_url:={spelling.format(root=superds['root'])}"
    assert urls(superds["registry"], query) == [str(superds["super"])]
    # the reference evaluator agrees with the engine
    assert SearchView(superds["records"]).search(query) == [0]


@pytest.mark.parametrize("spelling", [
    # a local path and path.git are two directories
    "{root}/containers", "file://{root}/written",
    "{root}/inner", "{root}/nothing.git",
])
def test_subds_url_other_repositories(superds, spelling):
    query = f"subds_url:={spelling.format(root=superds['root'])}"
    assert urls(superds["registry"], query) == []
    assert SearchView(superds["records"]).search(query) == []


# -- records from elsewhere ------------------------------------------------------------

def test_synced_records_without_the_new_fields(tmp_path):
    """An upstream record has none of our fields: they are null, never
    match, and the statistics keep upstream's shape; its subdataset URLs
    are found by either spelling all the same."""
    jsonl = tmp_path / "upstream.jsonl"
    jsonl.write_text(json.dumps({
        "url": "https://github.com/o/super", "processed": True,
        "ds_id": "11111111-1111-4111-8111-111111111111",
        "branches": {"main": {}, "git-annex": {}},
        "annex_key_count": 0, "annexed_files_in_wt_count": 4,
        "annexed_files_in_wt_size": 1000, "metadata": [],
        "subdatasets": [{"path": "code", "url": "../tools.git",
                         "ds_id": None},
                        {"path": "raw", "url": "file:///data/raw",
                         "ds_id": None}]}) + "\n")
    registry = tmp_path / "registry"
    res = call(registry_sync, str(jsonl), dataset=str(registry))
    assert res[-1]["status"] == "ok", res
    (rec,) = source_index(registry, str(jsonl)).records()
    assert rec["annex_keys_known_count"] is None
    assert rec["annexed_files_in_wt_unknown_size_count"] is None
    assert urls(registry, "annexed_files_in_wt_unknown_size_count:>=0") == []
    assert urls(registry, "NOT annex_keys_known_count:>=0") == [rec["url"]]
    assert stats_of(registry, "")["datalad_ds_stats"]["stats"] == {
        "ds_count": 1, "annexed_files_size": 1000, "annexed_file_count": 4}
    for spelling in ("/data/raw", "file:///data/raw/",
                     "https://github.com/o/tools", "../tools.git",
                     "https://GitHub.com/o/tools.git"):
        assert urls(registry, f"subds_url:={spelling}") == [rec["url"]], \
            spelling


# -- the search database counts as the reference does ------------------------------------

def _unknown_size_records():
    rnd = random.Random(7)
    recs = []
    for i in range(150):
        rec = {"url": f"https://u.org/{i}", "metadata": [],
               "ds_id": rnd.choice([None, "A", "B", f"u{i}"]),
               "branches": rnd.choice([None, {"git-annex": {}}, {"main": {}}]),
               # equal sizes and counts: copies differ in unknown sizes only
               "annexed_files_in_wt_size": rnd.choice([None, 10, 10, 20]),
               "annexed_files_in_wt_count": rnd.choice([None, 2, 2, 3])}
        if rnd.random() < 0.8:  # else a record from before the field
            rec["annexed_files_in_wt_unknown_size_count"] = rnd.choice(
                [None, 0, 0, 1, 4, "2", 1.5])
        recs.append(rec)
    # beyond 64 bits: matched and counted in Python
    recs.append({"url": "https://u.org/huge", "ds_id": "A", "metadata": [],
                 "annexed_files_in_wt_unknown_size_count": 2 ** 70})
    return recs


@pytest.mark.parametrize("query", [
    "", "url:huge", "NOT url:huge", "annexed_files_in_wt_unknown_size_count:>0",
    "url:1"])
def test_engine_stats_equal_the_reference(tmp_path, query):
    recs = _unknown_size_records()
    expected = collection_stats([recs[i]
                                 for i in SearchView(recs).search(query)])
    parts = []
    for k in range(2):  # also merged from two databases
        db = tmp_path / f"{k}.sqlite"
        build(db, recs[k::2], "fp")
        with Engine.open(db, "fp") as eng:
            parts.append(json.loads(json.dumps(eng.stats(query))))
    build(tmp_path / "all.sqlite", recs, "fp")
    with Engine.open(tmp_path / "all.sqlite", "fp") as eng:
        assert merge_stats([eng.stats(query)]) == expected
        assert eng.count(query) == len(SearchView(recs).search(query))
    assert merge_stats(parts) == expected
