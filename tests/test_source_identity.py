"""One source wherever it comes from: a JSON Lines file under a new name is
recognised by its records, ``--name`` moves a source to a new location, and
a name of another kind of source is refused. (Superdatasets recognised by
their dataset id: test_sync_superdataset.py; a service moved with --name:
test_federation.py.)"""
import json
import subprocess

from datalad.api import registry_search, registry_sync

from datalad_registry_ext.index import all_indexes, source_index
from datalad_registry_ext.records import record_id

from .fixtures import call


def sync(registry, source=None, **kw):
    return call(registry_sync, source, dataset=str(registry), **kw)


def synced(results):
    (res,) = [r for r in results if r["action"] == "registry_sync"]
    return res


def moved(results):
    return [r for r in results if r["action"] == "registry_source_moved"]


def hits(registry, query=None, **kw):
    return [r for r in call(registry_search, query, dataset=str(registry),
                            **kw)
            if r["action"] == "registry_search" and r["status"] == "ok"]


def write(path, numbers, **fields):
    path.write_text("".join(
        json.dumps({"url": f"https://example.org/ds{i}", "processed": True,
                    "metadata": [], **fields}) + "\n" for i in numbers))
    return path


def config_of(registry):
    return (registry / ".git" / "config").read_text()


def test_a_newer_export_under_a_new_name_is_the_same_source(tmp_path):
    reg = tmp_path / "reg"
    old = write(tmp_path / "export-2026-10.jsonl", range(10))
    assert synced(sync(reg, str(old)))["added"] == 10

    # next month's export: 9 of the URLs again (one of them changed), 2 new
    new = write(tmp_path / "export-2026-11.jsonl", range(1, 12))
    new.write_text(new.read_text().replace(
        '"https://example.org/ds5", "processed": true',
        '"https://example.org/ds5", "processed": true, "annex_key_count": 7'))
    res = sync(reg, str(new))
    (note,) = moved(res)
    assert note["status"] == "ok" and note["moved_from"] == str(old)
    assert "10 of the 12 URLs" not in note["message"]  # 9 in both, 12 in all
    assert "9 of the 12 URLs in either are in both" in note["message"]
    assert "--name" in note["message"]
    done = synced(res)
    assert (done["added"], done["updated"], done["removed"],
            done["unchanged"]) == (2, 1, 1, 8)
    assert done["source"] == str(new)

    # one source: the old file's index moved, nothing is found twice
    assert [i.path for i in all_indexes(reg)[1:]] == \
        [source_index(reg, str(new)).path]
    found = hits(reg, "example.org")
    assert len(found) == 11 and {h["source"] for h in found} == {str(new)}
    assert not source_index(reg, str(old)).exists()

    # syncing the new file again is an ordinary re-sync
    res = sync(reg, str(new))
    assert moved(res) == [] and synced(res)["unchanged"] == 11


def test_a_named_file_source_keeps_its_name_and_ids(tmp_path):
    reg = tmp_path / "reg"
    old = write(tmp_path / "a.jsonl", range(6))
    assert synced(sync(reg, str(old), name="lab"))["status"] == "ok"
    ids = {h["url"]: record_id("lab", h["url"]) for h in hits(reg)}

    new = write(tmp_path / "renamed.jsonl", range(6))
    res = sync(reg, str(new))
    assert moved(res)[0]["source"] == "lab"
    assert synced(res)["source"] == "lab" and synced(res)["unchanged"] == 6
    assert f"url = {new}" in config_of(reg) and str(old) not in config_of(reg)
    found = hits(reg)
    assert {h["source"] for h in found} == {"lab"}
    assert {h["url"]: record_id(h["source"], h["url"]) for h in found} == ids
    # --all syncs it from where it is now
    old.unlink()
    res = sync(reg, all_sources=True)
    assert synced(res)["status"] == "ok" and synced(res)["source"] == "lab"


def test_a_subset_or_another_collection_is_another_source(tmp_path):
    reg = tmp_path / "reg"
    whole = write(tmp_path / "all.jsonl", range(20))
    sync(reg, str(whole))
    # a tenth of it, and then an unrelated file: neither is the same source
    part = write(tmp_path / "part.jsonl", range(2))
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"url": "https://elsewhere.org/x"}) + "\n")
    for path in (part, other):
        res = sync(reg, str(path))
        assert moved(res) == [] and synced(res)["added"] > 0
    assert len(all_indexes(reg)) == 4  # local + three file sources
    assert len(hits(reg, "example.org")) == 22


def test_name_moves_a_source_and_refuses_another_kind(tmp_path):
    reg = tmp_path / "reg"
    first = write(tmp_path / "first.jsonl", range(3))
    sync(reg, str(first), name="lab")
    # an unrelated file, explicitly the source "lab": lab moves there
    second = write(tmp_path / "second.jsonl", range(100, 104))
    res = sync(reg, str(second), name="lab")
    (note,) = moved(res)
    assert "--name lab" in note["message"] and note["moved_from"] == str(first)
    done = synced(res)
    assert (done["added"], done["removed"], done["source"]) == (4, 3, "lab")
    assert f"url = {second}" in config_of(reg)
    assert len(all_indexes(reg)) == 2

    # an unreadable file moves nothing
    before = source_index(reg, str(second)).path.read_bytes()
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    res = sync(reg, str(broken), name="lab")
    assert synced(res)["status"] == "error" and moved(res) == []
    assert str(broken) in synced(res)["message"]
    assert f"url = {second}" in config_of(reg)
    assert source_index(reg, str(second)).path.read_bytes() == before
    assert not source_index(reg, str(broken)).exists()

    # a service cannot take a file source's name (nothing is asked of it)
    res = sync(reg, "http://127.0.0.1:9/", name="lab")
    assert synced(res)["status"] == "impossible"
    assert "a JSON Lines file" in synced(res)["message"]
    assert "a DataLad-Registry service" in synced(res)["message"]
    assert f"url = {second}" in config_of(reg)


def test_the_move_on_the_command_line(tmp_path):
    reg = tmp_path / "reg"
    old = write(tmp_path / "old.jsonl", range(4))
    new = write(tmp_path / "new.jsonl", range(5))
    for path in (old, new):
        proc = subprocess.run(["datalad", "registry-sync", "-d", str(reg),
                               str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("moved ") and str(old) in lines[0]
    assert lines[1].startswith("synced ") and "1 new" in lines[1]


def test_spellings_of_one_service_are_one_location():
    from datalad_registry_ext.remote import api_base
    assert {api_base(u) for u in (
        "http://h.example.org", "HTTP://H.example.org:80/",
        "http://h.example.org/api/v2/", "http://h.example.org:80/api/v2/"
        "dataset-urls")} == {"http://h.example.org"}
    assert {api_base(u) for u in ("https://h.example.org:443/x/api/v2",
                                  "https://user:pw@h.example.org/x/")} == \
        {"https://h.example.org/x"}
    # another port is another service
    assert api_base("http://h.example.org:8080") != api_base(
        "http://h.example.org")
    assert api_base("https://h.example.org:80") == "https://h.example.org:80"
