"""registry-sync of a registry superdataset: by path, file:// and git's dumb
HTTP; incremental re-syncs; all or nothing.

The primary is a real registry (registry-submit of DataLad datasets and a
plain git repository, with extraction), published to a bare repository with
its metadata refs and served over dumb HTTP by a server in a thread.
"""
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datalad.api import registry_extract, registry_search, registry_submit, \
    registry_sync

from datalad_registry_ext.index import source_index
from datalad_registry_ext.superdatasets import cache_path

from .fixtures import (
    DATACITE,
    DATASET_DESCRIPTION,
    HTTPServer,
    _QuietHandler,
    call,
    make_dataset,
    make_git_repo,
    run,
    set_user_dirs,
)


def sync(registry, *args, **kw):
    return call(registry_sync, *args, dataset=str(registry), **kw)


def search(registry, query=None, **kw):
    return [r for r in call(registry_search, query, dataset=str(registry),
                            **kw)
            if r.get("action") == "registry_search" and r["status"] == "ok"]


def final(results):
    (res,) = [r for r in results if r.get("action") == "registry_sync"]
    return res


def publish(primary: Path, bare: Path) -> None:
    """Push the registry's branch and metadata refs (forced: they point at
    blobs and trees) to the bare repository, ready for dumb HTTP."""
    if not bare.exists():
        run("git", "init", "-q", "--bare", str(bare))
        run("git", "symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)
    run("git", "push", "-q", "--force", str(bare), "HEAD:refs/heads/main",
        "+refs/datalad/*:refs/datalad/*", cwd=primary)
    run("git", "update-server-info", cwd=bare)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """``(primary registry, bare copy, {name: dataset url})``: two DataLad
    datasets (one text2git with BIDS and DataCite files, one plain
    ``datalad create`` with annexed files) and a plain git repository,
    registered and extracted. Read-only: tests that change the primary
    work on a copy (:func:`copy_of`)."""
    root = tmp_path_factory.mktemp("primary")
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, root / "dirs")
        bids = make_dataset(root / "bids", {
            "dataset_description.json": json.dumps(DATASET_DESCRIPTION),
            "datacite.yml": DATACITE}, to_git=True)
        annexed = make_dataset(root / "annexed", {
            "datacite.yml": "title: Annexed zebrafish\nauthors: []\n"})
        plain = make_git_repo(root / "plain", {
            "datapackage.json": json.dumps({"name": "plain-pkg",
                                            "title": "Plain octopus"})})
        primary = root / "registry"
        res = call(registry_submit, [bids.path, annexed.path, str(plain)],
                   dataset=str(primary))
        assert [r["status"] for r in res
                if r["action"] == "registry_submit"] == ["ok"] * 3
        bare = root / "published" / "primary.git"
        bare.parent.mkdir()
        publish(primary, bare)
    return primary, bare, {"bids": bids.path, "annexed": annexed.path,
                           "plain": str(plain)}


def copy_of(published, tmp_path):
    """A changeable copy of the primary and its bare repository."""
    primary, bare, urls = published
    mine = tmp_path / "copy"
    shutil.copytree(primary.parent / "registry", mine / "registry",
                    symlinks=True)
    shutil.copytree(bare, mine / "published" / "primary.git", symlinks=True)
    return mine / "registry", mine / "published" / "primary.git", urls


def urls_of(results):
    return {r["url"] for r in results}


def test_sync_by_path_file_url_and_dumb_http(published, tmp_path):
    primary, bare, urls = published
    replica = tmp_path / "replica"
    with HTTPServer(bare.parent) as server:
        http_url = f"{server.url}/primary.git"
        by_path = final(sync(replica, str(primary)))
        by_file = final(sync(replica, bare.as_uri(), name="file-copy"))
        by_http = final(sync(replica, http_url))
        assert [r["status"] for r in (by_path, by_file, by_http)] == \
            ["ok"] * 3, (by_path, by_file, by_http)
        for res in (by_path, by_file, by_http):
            assert (res["added"], res["imported"], res["how"]) == \
                (3, 3, "full")
        # default names: the path's last component, host:port-stem
        assert by_path["source"] == "registry"
        assert by_http["source"] == f"{server.url[7:]}-primary"
        assert by_file["source"] == "file-copy"
        for name in ("registry", "file-copy", by_http["source"]):
            assert urls_of(search(replica, source=name)) == \
                set(urls.values())

        # the records carry the primary's facts and both kinds of metadata
        found = search(replica, "zebrafish", source=by_http["source"],
                       metadata="content")
        assert urls_of(found) == {urls["annexed"]}
        (octopus,) = search(replica, "octopus", source="registry",
                            metadata="content")
        assert octopus["url"] == urls["plain"]   # plain git: the jsonl file
        assert {m["extractor_name"] for m in octopus["metadata"]} >= \
            {"frictionless_datapackage"}
        (bids,) = search(replica, "metadata[bids_dataset].Name:"
                         "\"A test BIDS dataset\"", source="file-copy",
                         metadata="content")
        names = {m["extractor_name"] for m in bids["metadata"]}
        assert {"bids_dataset", "datacite_gin", "metalad_core"} <= names
        (core,) = [m for m in bids["metadata"]
                   if m["extractor_name"] == "metalad_core"]
        assert core["dataset_version"] == bids["head"]
        assert bids["source"] == "file-copy" and bids["ds_id"]

        # remembered with their kind: --all syncs them all again, unchanged
        config = (replica / ".git" / "config").read_text()
        assert config.count("kind = superdataset") == 3
        again = [r for r in sync(replica, all_sources=True)
                 if r["action"] == "registry_sync"]
        assert [r["status"] for r in again] == ["notneeded"] * 3
        assert all("unchanged" in r["message"] for r in again)

    # --remove drops the records, the configuration and the fetched copy
    cache = cache_path(replica, str(bare))
    assert (cache / "HEAD").exists()
    assert final(sync(replica, remove="file-copy"))["status"] == "ok"
    assert not cache.exists()
    assert search(replica, source="registry")
    assert "file-copy" not in (replica / ".git" / "config").read_text()


def test_a_second_sync_reads_only_the_change(published, tmp_path):
    primary, bare, urls = copy_of(published, tmp_path)
    replica = tmp_path / "replica"
    with HTTPServer(bare.parent) as server:
        url = f"{server.url}/primary.git"
        first = final(sync(replica, url, name="lab"))
        assert (first["status"], first["added"], first["read"]) == \
            ("ok", 3, 3)
        index = source_index(replica, url)

        # the primary changes: a new dataset, a re-extraction, a removal
        new = make_dataset(tmp_path / "new", {
            "datacite.yml": "title: Newcomer narwhal\nauthors: []\n"},
            to_git=True)
        res = call(registry_submit, [new.path], dataset=str(primary))
        assert res[0]["status"] == "ok"
        res = call(registry_extract, [urls["bids"]], dataset=str(primary),
                   extractor="datacite_gin", force=True)
        assert [r["status"] for r in res
                if r.get("action") == "registry_extract"] == ["ok"]
        _unregister(primary, urls["plain"])
        publish(primary, bare)

        second = final(sync(replica, "lab"))
        assert second["status"] == "ok", second
        assert second["how"] == "incremental"
        assert (second["added"], second["updated"], second["removed"],
                second["unchanged"]) == (1, 1, 1, 1)
        # only the new and the re-extracted record were built from the
        # primary; the annexed dataset's was taken from the index as it was
        assert second["read"] == 2
        assert urls_of(search(replica, source="lab")) == \
            {urls["bids"], urls["annexed"], new.path}
        assert urls_of(search(replica, "narwhal", source="lab")) == {new.path}
        # the incremental result is exactly what a full read gives
        incremental = {r["url"]: r for r in index.records()}
        other = tmp_path / "other"
        full = final(sync(other, url, name="lab"))
        assert full["how"] == "full"
        assert {r["url"]: r for r in
                source_index(other, url).records()} == incremental

        # nothing changed: no import at all
        before = index.path.read_bytes()
        third = final(sync(replica, "lab"))
        assert (third["status"], third["read"]) == ("notneeded", 0)
        assert "unchanged" in third["message"]
        assert index.path.read_bytes() == before


def _unregister(primary: Path, url: str) -> None:
    """Remove a repository from a registry by hand, as its maintainer
    would: the gitlink, its .gitmodules section and its record."""
    records = primary / ".datalad" / "registry" / "records.jsonl"
    lines = records.read_text().splitlines(keepends=True)
    (path,) = [json.loads(ln)["registry_path"] for ln in lines
               if json.loads(ln)["url"] == url]
    records.write_text("".join(ln for ln in lines
                               if json.loads(ln)["url"] != url))
    run("git", "config", "-f", ".gitmodules", "--remove-section",
        f"submodule.{path}", cwd=primary)
    run("git", "update-index", "--force-remove", path, cwd=primary)
    run("git", "add", ".gitmodules", str(records), cwd=primary)
    run("git", "commit", "-q", "-m", f"Unregister {path}", cwd=primary)


class _Stalling(_QuietHandler):
    """Dumb HTTP that can stall, or fail, on object requests."""
    mode = {"stall": False, "fail": False}
    asked = threading.Event()

    def do_GET(self):
        if "/objects/" in self.path:
            if self.mode["fail"]:
                self.send_error(500)
                return
            if self.mode["stall"]:
                self.asked.set()
                time.sleep(30)
        super().do_GET()


def test_interrupted_or_failed_sync_keeps_the_previous_state(published,
                                                             tmp_path):
    primary, bare, urls = copy_of(published, tmp_path)
    replica = tmp_path / "replica"
    server = HTTPServer(bare.parent)
    server.httpd.RequestHandlerClass = functools.partial(
        _Stalling, directory=str(bare.parent))
    with server:
        url = f"{server.url}/primary.git"
        assert final(sync(replica, url, name="lab"))["status"] == "ok"
        index = source_index(replica, url)
        before = index.path.read_bytes()
        extra = make_dataset(tmp_path / "extra", {"README": "extra"})
        assert call(registry_submit, [extra.path], dataset=str(primary),
                    extract=False)[0]["status"] == "ok"
        publish(primary, bare)

        # a fetch that fails: an error naming the source, nothing changes
        _Stalling.mode["fail"] = True
        res = final(sync(replica, "lab"))
        assert res["status"] == "error" and url in res["message"]
        assert "fetch failed" in res["message"]
        assert index.path.read_bytes() == before
        _Stalling.mode["fail"] = False

        # SIGKILL (of the command and its git) in the middle of the fetch
        _Stalling.mode["stall"] = True
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from datalad.api import registry_sync; "
             "registry_sync('lab', dataset=sys.argv[1], "
             "result_renderer='disabled')", str(replica)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        try:
            assert _Stalling.asked.wait(60)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        _Stalling.mode["stall"] = False
        assert index.path.read_bytes() == before
        assert urls_of(search(replica, source="lab")) == set(urls.values())

        # the next sync completes it
        res = final(sync(replica, "lab"))
        assert (res["status"], res["added"], res["unchanged"]) == \
            ("ok", 1, 3), res
        assert extra.path in urls_of(search(replica, source="lab"))


def test_what_is_not_a_registry_is_refused(published, tmp_path):
    primary, bare, urls = copy_of(published, tmp_path)
    replica = tmp_path / "replica"
    # a DataLad dataset that is no registry, a plain git repository
    for what, expected in ((urls["annexed"], "not a registry"),
                           (urls["plain"], "not a DataLad dataset")):
        res = final(sync(replica, what))
        assert res["status"] == "impossible", res
        assert expected in res["message"] and what in res["message"]
    assert not (replica / ".git").exists()  # nothing was created
    # syncing a registry into itself
    res = final(sync(primary, str(primary)))
    assert res["status"] == "impossible" and "itself" in res["message"]

    # a damaged records file: an error naming the source and the line;
    # the previous records stay
    assert final(sync(replica, str(bare), name="p"))["status"] == "ok"
    index = source_index(replica, str(bare))
    before = index.path.read_bytes()
    records = primary / ".datalad" / "registry" / "records.jsonl"
    records.write_text(records.read_text() + "{not json\n")
    run("git", "commit", "-q", "-m", "damage", str(records), cwd=primary)
    publish(primary, bare)
    res = final(sync(replica, "p"))
    assert res["status"] == "error"
    assert str(bare) in res["message"] and "line 4" in res["message"]
    assert "nothing was imported" in res["message"]
    assert index.path.read_bytes() == before

    # published without its metadata refs: the records come, with a warning
    bare2 = tmp_path / "no-refs.git"
    run("git", "init", "-q", "--bare", str(bare2))
    run("git", "push", "-q", str(bare2), "HEAD~1:refs/heads/main",
        cwd=primary)
    run("git", "symbolic-ref", "HEAD", "refs/heads/main", cwd=bare2)
    res = sync(replica, str(bare2), name="no-refs")
    (warning,) = [r for r in res if r["action"] == "registry_metadata_refs"]
    assert "no metadata refs" in warning["message"]
    assert final(res)["status"] == "ok" and final(res)["added"] == 3


def test_one_registry_from_a_new_place_is_the_same_source(published,
                                                          tmp_path):
    """A registry published elsewhere (another path or URL, same dataset
    id) is the source synced before: it keeps its name and records' ids and
    its old fetched copy goes; sources named apart on purpose stay apart."""
    primary, bare, urls = published
    replica = tmp_path / "replica"
    first = final(sync(replica, bare.as_uri()))
    assert first["status"] == "ok" and first["source"] == "primary"
    old_cache = cache_path(replica, str(bare))
    assert (old_cache / "HEAD").exists()

    moved_bare = tmp_path / "elsewhere" / "registry.git"
    shutil.copytree(bare, moved_bare, symlinks=True)
    with HTTPServer(moved_bare.parent) as server:
        url = f"{server.url}/registry.git"
        res = sync(replica, url)
        (note,) = [r for r in res if r["action"] == "registry_source_moved"]
        assert note["moved_from"] == str(bare)
        assert "the same dataset" in note["message"]
        done = final(res)
        assert (done["status"], done["source"], done["unchanged"],
                done["added"], done["removed"]) == ("ok", "primary", 3, 0, 0)
        config = (replica / ".git" / "config").read_text()
        assert f"url = {url}" in config and str(bare) not in config
        assert not old_cache.exists()
        assert not source_index(replica, str(bare)).exists()
        assert urls_of(search(replica, source="primary")) == \
            set(urls.values())
        # the next sync from the new place: unchanged, nothing moved
        res = sync(replica, "primary")
        assert final(res)["status"] == "notneeded"
        assert not [r for r in res if r["action"] == "registry_source_moved"]

    # kept apart by a name: a second source; then a third spelling is
    # ambiguous, and becomes a source of its own rather than a guess
    assert final(sync(replica, str(bare), name="again"))["added"] == 3
    third = tmp_path / "third.git"
    shutil.copytree(bare, third, symlinks=True)
    res = sync(replica, str(third))
    assert not [r for r in res if r["action"] == "registry_source_moved"]
    assert final(res)["added"] == 3 and final(res)["source"] == "third"
