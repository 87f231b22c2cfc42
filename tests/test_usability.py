"""Usability: concurrent creation of a registry, registry-sync creating the
registry, singular/plural messages, plain --help, OSF URLs, export file
permissions (issue "Real datasets: complete, current and findable metadata",
#14, #16, #17). Real repositories and processes, no mocks."""
import json
import os
import stat
import subprocess
import sys

import pytest
from datalad.api import Dataset, registry_search, registry_submit, registry_sync

from datalad_registry_ext.registry import is_registry
from datalad_registry_ext.url_lists import UNSUPPORTED_SERVICES

from .fixtures import make_git_repo, run


def call(api, *args, **kw):
    kw.setdefault("result_renderer", "disabled")
    kw.setdefault("on_failure", "ignore")
    kw.setdefault("return_type", "list")
    return api(*args, **kw)


def _line(url, **kw):
    return json.dumps({"url": url, "processed": True, "metadata": [], **kw})


def _subdataset_urls(registry):
    out = run("datalad", "-f", "json", "subdatasets", "-d", str(registry))
    return {json.loads(line)["gitmodule_url"] for line in out.splitlines()
            if line.strip()}


# -- #16: two submits create the same new registry at once -------------------

def test_concurrent_submits_create_the_registry_once(tmp_path):
    repos = [make_git_repo(tmp_path / f"repo{i}", {"README": f"repo {i}"})
             for i in range(2)]
    registry = tmp_path / "new" / "registry"
    procs = [subprocess.Popen(
        ["datalad", "registry-submit", "-d", str(registry), str(repo),
         "--no-extract"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for repo in repos]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
        assert "non-empty directory" not in out + err
    assert is_registry(registry)
    assert _subdataset_urls(registry) == {str(r) for r in repos}


# -- #14: registry-sync -d NEWPATH FILE creates the registry ------------------

def test_sync_creates_the_registry_and_search_finds_the_records(tmp_path):
    registry = tmp_path / "fresh"
    src = tmp_path / "s.jsonl"
    src.write_text(_line("https://example.org/alpha") + "\n"
                   + _line("https://example.org/beta") + "\n")
    res = call(registry_sync, str(src), dataset=registry)
    assert res[-1]["status"] == "ok", res
    assert res[-1]["imported"] == 2
    assert is_registry(registry)
    # a DataLad dataset: DataLad itself says so
    ds = Dataset(str(registry))
    assert ds.is_installed() and ds.id
    found = call(registry_search, "example.org", dataset=registry)
    urls = {r.get("url") for r in found if r["status"] == "ok"}
    assert {"https://example.org/alpha", "https://example.org/beta"} <= urls


def test_sync_of_a_missing_file_creates_nothing(tmp_path):
    registry = tmp_path / "fresh"
    res = call(registry_sync, str(tmp_path / "nope.jsonl"), dataset=registry)
    assert res[-1]["status"] == "error"
    assert not registry.exists()


# -- #17a: singular and plural --------------------------------------------------

def test_sync_message_singular_and_plural(tmp_path):
    registry = tmp_path / "r"
    one = tmp_path / "one.jsonl"
    one.write_text(_line("https://example.org/1") + "\n{broken\n")
    res = call(registry_sync, str(one), dataset=registry)
    message = res[-1]["message"]
    assert "imported 1 record from" in message, message
    assert "1 line skipped" in message, message
    two = tmp_path / "two.jsonl"
    two.write_text(_line("https://example.org/1") + "\n"
                   + _line("https://example.org/2") + "\n")
    message = call(registry_sync, str(two), dataset=registry)[-1]["message"]
    assert "imported 2 records from" in message, message
    assert "0 lines skipped" in message, message


def test_submit_commit_messages_singular_and_plural(tmp_path):
    registry = tmp_path / "r"
    a = make_git_repo(tmp_path / "a")
    b = make_git_repo(tmp_path / "b")
    c = make_git_repo(tmp_path / "c")
    res = call(registry_submit, [str(a)], dataset=registry, extract=False)
    assert res[0]["status"] == "ok", res
    res = call(registry_submit, [str(b), str(c)], dataset=registry,
               extract=False)
    assert [r["status"] for r in res] == ["ok", "ok"], res
    subjects = run("git", "log", "--format=%s", cwd=registry).splitlines()
    assert subjects[0] == "[registry] Register 2 repositories"
    assert subjects[1] == "[registry] Register 1 repository"
    assert not any("1 repositories" in s or "1 records" in s
                   for s in subjects)


# -- #17b: --help reads as plain sentences, validation stays ------------------

@pytest.mark.parametrize("command", ["registry-submit", "registry-sync",
                                     "registry-extract", "registry-search"])
def test_help_has_no_constraint_boilerplate(command):
    out = run("datalad", command, "--help")
    flat = " ".join(out.split())
    assert "value must be a string" not in flat
    assert "Value must be a Dataset" not in flat
    assert "convertible to type 'int'" not in flat


def test_numeric_options_are_still_validated(tmp_path):
    for args in (["registry-search", "--limit", "-1", "x"],
                 ["registry-search", "--offset", "many", "x"],
                 ["registry-submit", "-J", "two", "x"]):
        proc = subprocess.run(["datalad", *args, "-d", str(tmp_path / "r")],
                              capture_output=True, text=True)
        assert proc.returncode != 0, args
        assert "whole number" in proc.stdout + proc.stderr, args
    assert not (tmp_path / "r").exists()


# -- #17c: OSF URLs are refused as --from refuses them ------------------------

def test_osf_url_refused_like_the_dashboard_list(tmp_path):
    registry = tmp_path / "r"
    reason = UNSUPPORTED_SERVICES["osf"]
    direct = call(registry_submit, ["https://osf.io/abc12/"],
                  dataset=registry)
    assert [r["status"] for r in direct] == ["impossible"], direct
    assert reason in direct[0]["message"]
    assert "resolve host" not in direct[0]["message"]
    listing = tmp_path / "datalad-repos.json"
    listing.write_text(json.dumps(
        {"osf": [{"url": "https://osf.io/abc12/", "status": "active"}]}))
    listed = call(registry_submit, from_file=str(listing), dataset=registry)
    assert [r["status"] for r in listed] == ["impossible"], listed
    assert reason in listed[0]["message"]
    # refused up front: nothing was created, nothing cloned
    assert not registry.exists()


# -- #17d: --export files get the umask's permissions -------------------------

@pytest.mark.parametrize("mask", [0o022, 0o002])
@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_export_gets_umask_permissions(tmp_path, mask, name):
    registry = tmp_path / "r"
    src = tmp_path / "s.jsonl"
    src.write_text(_line("https://example.org/1") + "\n")
    assert call(registry_sync, str(src), dataset=registry)[-1]["status"] == "ok"
    target = tmp_path / name
    script = (
        "import os, sys\n"
        f"os.umask({mask})\n"
        "from datalad.api import Dataset, registry_search\n"
        "res = registry_search(dataset=sys.argv[1], export=sys.argv[2],\n"
        "                      result_renderer='disabled', return_type='list')\n"
        "assert res[-1]['status'] == 'ok', res\n")
    subprocess.run([sys.executable, "-c", script, str(registry), str(target)],
                   check=True)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o666 & ~mask
