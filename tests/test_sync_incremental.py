"""Incremental registry-sync of a service (mirror.py, engine_patch.py).

Against a real ``datalad registry-serve`` process on 127.0.0.1 serving
generated records; the primary's records are changed by importing a
modified JSON Lines file into the served registry, which the running server
shows at once. What a sync transfers is counted twice: by the result's own
counters and by a byte-counting TCP relay between client and server (the
sync talks to the relay's port; the relay only copies bytes).
"""
from __future__ import annotations

import copy
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
from datalad.api import registry_search, registry_sync

from datalad_registry_ext import engine, mirror, remote
from datalad_registry_ext.engine_patch import Patcher
from datalad_registry_ext.index import source_index
from datalad_registry_ext.locations import index_dir
from datalad_registry_ext.records import (
    dumps_storable,
    normalize_record,
    record_id,
)

from .fixtures import call
from .test_federation import Served, failures, index_files

N = 1500


# -- helpers -------------------------------------------------------------------------

class Relay:
    """A TCP relay from a port of its own to ``target`` (a port), counting
    the bytes the server sends; ``target`` can be changed (a restarted
    server) without the client noticing."""

    def __init__(self, target: int):
        self.target = target
        self.from_server = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()  # the server is down: the client sees it
                continue
            threading.Thread(target=self._pipe, args=(client, server, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True),
                             daemon=True).start()

    def _pipe(self, src, dst, count):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    with self._lock:
                        self.from_server += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def reset(self) -> None:
        with self._lock:
            self.from_server = 0

    def close(self):
        self.sock.close()


def asked(res: dict) -> int:
    """The requests a sync needed: a request repeated after a transient
    failure (a loaded machine, a dropped keep-alive connection) is the
    client's retry, counted in ``retries``, not a request of another kind."""
    return res["requests"] - res["retries"]


def sync(registry, source=None, **kw):
    return call(registry_sync, source, dataset=str(registry), **kw)


def generated(n: int = N) -> list[dict]:
    from benchmarks.generate import generate_records
    return list(generate_records(n, seed=5))


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def changed(records: list[dict], k: int, tag: str) -> set[str]:
    """Change ``k`` records in place, facts and metadata both; their URLs."""
    urls = set()
    for rec in random.Random(tag).sample(records, k):
        rec["annex_key_count"] = (rec.get("annex_key_count") or 0) + 1
        rec["metadata"] = (rec.get("metadata") or []) + [
            {"extractor_name": f"changed_{tag}",
             "extracted_metadata": {"note": f"changed {tag}"}}]
        urls.add(rec["url"])
    return urls


def stored_texts(registry, base) -> dict[str, str]:
    """``{url: stored text}`` of a source's index file (the store of
    record), source name left out."""
    return {r["url"]: dumps_storable(dict(r, source=None))
            for r in source_index(registry, base).records()}


def primary_texts(served) -> dict[str, str]:
    """The primary's records as /all serves them, normalised as a sync
    stores them (source left out)."""
    lines = requests.get(served.url + "/api/v2/dataset-urls/all",
                         params={"return_metadata": "true"}).text.splitlines()
    out = {}
    for line in lines:
        rec = normalize_record(json.loads(line), "x")
        out[rec["url"]] = dumps_storable(dict(rec, source=None))
    return out


def search_answers(registry, source):
    """What searches of the source answer: counts and first pages."""
    out = []
    for q in ("haxby", "container", "NOT haxby", "url:github",
              'metadata[bids_dataset]:""', "metadata[changed_one]:changed",
              "annex_key_count:>100"):
        res = call(registry_search, q, dataset=str(registry), source=source,
                   order_by="annex_key_count", limit=30)
        hits = [r for r in res if r.get("action") == "registry_search"
                and r["status"] == "ok"]
        out.append((q, [h["url"] for h in hits]))
    return out


@pytest.fixture
def primary(tmp_path):
    """A served registry of N generated records, imported from a JSON Lines
    file (re-importing the file changes the primary), behind a relay."""
    records = generated()
    src = tmp_path / "primary.jsonl"
    write(src, records)
    reg = tmp_path / "primary"
    assert sync(reg, str(src))[-1]["status"] == "ok"
    server = Served(reg)
    relay = Relay(server.port)
    yield dict(records=records, src=src, reg=reg, server=server,
               relay=relay)
    relay.close()
    server.stop()


def reimport(primary, records):
    write(primary["src"], records)
    res = sync(primary["reg"], str(primary["src"]))
    assert res[-1]["status"] == "ok", res


# -- the server's digests and ETag ------------------------------------------------------

def test_all_digests_and_etag(primary):
    url = primary["server"].url + "/api/v2/dataset-urls/all"
    r = requests.get(url, params={"digests": "true"})
    assert r.status_code == 200 and r.headers["ETag"].startswith('"')
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert len(lines) == N and set(lines[0]) == {"id", "url", "digest"}
    # the ids are the API's: /dataset-urls/{id} answers that URL
    one = requests.get(primary["server"].url
                       + f"/api/v2/dataset-urls/{lines[7]['id']}").json()
    assert one["url"] == lines[7]["url"]
    # ~100 bytes per record instead of ~3 KB
    full = requests.get(url, params={"return_metadata": "true"})
    assert len(r.content) * 10 < len(full.content)
    assert full.headers["ETag"] != r.headers["ETag"]  # another answer

    tag = r.headers["ETag"]
    again = requests.get(url, params={"digests": "true"},
                         headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    # asked again without the tag (another mirror): the answer kept by its
    # ETag, sent whole (a Content-Length, not streamed), the same bytes
    kept = requests.get(url, params={"digests": "true"})
    assert kept.headers["ETag"] == tag and kept.content == r.content
    assert int(kept.headers["Content-Length"]) == len(r.content)
    assert "content-length" not in r.headers  # the first one: streamed
    # another query is another collection
    other = requests.get(url, params={"digests": "true", "search": "haxby"},
                         headers={"If-None-Match": tag})
    assert other.status_code == 200

    # one record changed: a new ETag, and only its digest differs
    records = copy.deepcopy(primary["records"])
    (u,) = changed(records, 1, "etag")
    reimport(primary, records)
    after = requests.get(url, params={"digests": "true"},
                         headers={"If-None-Match": tag})
    assert after.status_code == 200 and after.headers["ETag"] != tag
    new = [json.loads(x) for x in after.text.splitlines()]
    differ = [b["url"] for a, b in zip(lines, new) if a != b]
    assert differ == [u]
    kept = requests.get(url, params={"digests": "true"})
    assert kept.headers["ETag"] == after.headers["ETag"]
    assert kept.content == after.content


def test_digest_lines_are_json_dumps():
    """The digests' lines are formatted directly (faster than json.dumps
    of each): the same text, whatever the URL holds."""
    pytest.importorskip("fastapi")
    from datalad_registry_ext.server.api import _line
    for rec in ({"id": 12, "url": "https://h/x", "digest": "ab" * 20},
                {"id": None, "url": 'a"b\\c\n\x00\u00e9\u2028/\ud800',
                 "digest": "0"},
                {"id": 2 ** 70, "url": "", "digest": ""},
                {"id": True, "url": "u", "digest": "d"},
                {"id": 1, "url": 5, "digest": "d"},
                {"id": 1, "url": "u", "digest": "d", "more": 1},
                {"url": "u", "id": 1, "digest": "d"}):
        assert _line(rec) == json.dumps(rec, ensure_ascii=False,
                                        separators=(",", ":")) + "\n", rec


# -- the whole cycle -----------------------------------------------------------------------

def test_incremental_cycle(tmp_path, primary):
    relay, server = primary["relay"], primary["server"]
    reg = tmp_path / "mirror"
    res = sync(reg, relay.url, name="primary")
    assert not failures(res), res
    (first,) = res
    assert first["status"] == "ok" and first["imported"] == N
    full_bytes = relay.from_server
    assert first["received"] > 3_000_000  # the records, with metadata

    # nothing changed: one conditional request, answered 304
    relay.reset()
    (again,) = sync(reg, "primary")
    assert again["status"] == "notneeded", again
    assert asked(again) == 1 and again["received"] == 0
    assert relay.from_server < 1000, relay.from_server
    assert again["unchanged"] == N and "unchanged" in again["message"]

    # 100 records changed, 40 deleted, 10 new on the primary
    records = copy.deepcopy(primary["records"])
    urls = changed(records, 100, "one")
    deleted = set(sorted(r["url"] for r in records[:200]
                         if r["url"] not in urls)[:40])
    extra = [dict(copy.deepcopy(r), url=r["url"] + "-new")
             for r in records[300:310]]
    records = [r for r in records if r["url"] not in deleted] + extra
    reimport(primary, records)
    before = index_files(reg)
    relay.reset()
    res = sync(reg, "primary")
    assert not failures(res), res
    (inc,) = res
    assert inc["status"] == "ok" and inc["how"] == "incremental"
    assert (inc["added"], inc["updated"], inc["removed"]) == (10, 100, 40)
    assert inc["fetched"] == 110 and inc["imported"] == N - 40 + 10
    # what was transferred: the digests (~100 bytes a record) and the 110
    # records, nowhere near the full download
    assert relay.from_server < full_bytes / 5, (relay.from_server,
                                                full_bytes)
    assert inc["received"] <= relay.from_server
    # the digests and one request for the 110 records (/all?ids=)
    assert asked(inc) == 1 + 1
    assert index_files(reg) != before

    # the mirror equals the primary, record for record
    base = remote.api_base(relay.url)
    mine = stored_texts(reg, base)
    assert mine == primary_texts(server)
    assert not list(index_dir(reg).rglob("*.tmp"))

    # and searches of the patched search database answer as a fresh full
    # sync's freshly built one does
    fresh = tmp_path / "fresh"
    assert sync(fresh, relay.url, name="primary")[-1]["status"] == "ok"
    assert stored_texts(fresh, base) == mine
    assert search_answers(reg, "primary") == search_answers(fresh, "primary")

    # unchanged again: 304
    relay.reset()
    (quiet,) = sync(reg, "primary")
    assert quiet["status"] == "notneeded" and asked(quiet) == 1

    # deleting only: records disappear
    gone = {r["url"] for r in records[-25:]}
    reimport(primary, records[:-25])
    (dele,) = sync(reg, "primary")
    assert dele["status"] == "ok" and dele["removed"] == 25, dele
    assert dele["fetched"] == 0 and asked(dele) == 1
    assert not gone & set(stored_texts(reg, base))
    assert stored_texts(reg, base) == primary_texts(server)

    # a rewrite that changes nothing: a new ETag, no record differs
    reimport(primary, records[:-25])
    (same,) = sync(reg, "primary")
    assert same["status"] == "notneeded" and same["fetched"] == 0, same
    (quiet,) = sync(reg, "primary")
    assert asked(quiet) == 1  # the new ETag was remembered

    # --all syncs it incrementally too; --remove drops the sync state
    (every,) = sync(reg, all_sources=True)
    assert every["status"] == "notneeded"
    state = mirror.state_path(source_index(reg, base))
    assert state.exists()
    assert sync(reg, remove="primary")[-1]["status"] == "ok"
    assert not state.exists()


def test_many_changes_and_another_query_sync_in_full(tmp_path, primary):
    relay = primary["relay"]
    reg = tmp_path / "mirror"
    assert sync(reg, relay.url, name="primary")[-1]["status"] == "ok"
    records = copy.deepcopy(primary["records"])
    changed(records, N // 2, "many")
    reimport(primary, records)
    (res,) = sync(reg, "primary")
    # too many to fetch one by one: the whole stream again
    assert res["status"] == "ok" and res["how"] == "stream", res
    assert res["updated"] == N // 2
    # another query: a full sync of what it finds
    (q,) = sync(reg, "primary", query="url:github")
    assert q["how"] == "stream" and q["removed"] > 0
    (q2,) = sync(reg, "primary")  # the remembered query
    assert q2["status"] == "notneeded" and asked(q2) == 1
    base = remote.api_base(relay.url)
    assert stored_texts(reg, base) == {
        u: t for u, t in primary_texts(primary["server"]).items()
        if "github" in u.lower()}


def test_interrupted_incremental_sync_keeps_the_previous_state(
        tmp_path, primary, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF", 0.01)
    relay, server = primary["relay"], primary["server"]
    reg = tmp_path / "mirror"
    assert sync(reg, relay.url, name="primary")[-1]["status"] == "ok"
    base = remote.api_base(relay.url)
    index = source_index(reg, base)
    records = copy.deepcopy(primary["records"])
    # two batches of /all?ids= (remote.BATCH_IDS at a time)
    changed(records, remote.BATCH_IDS + 10, "kill")
    reimport(primary, records)
    before = index_files(reg)
    assert mirror.state_path(index).exists()

    # the server dies (SIGKILL) when the second batch of the changed
    # records is asked for, the first one fetched (and the copy of the
    # search database begun)
    batches = []
    original = remote.Service._send

    def send(self, method, url, what, **kw):
        if "ids" in (kw.get("params") or {}):
            batches.append(kw["params"]["ids"].count(",") + 1)
            if len(batches) == 2:
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
        return original(self, method, url, what, **kw)
    monkeypatch.setattr(remote.Service, "_send", send)
    res = sync(reg, "primary")
    (err,) = failures(res)
    assert "cannot reach it" in err["message"] or "connection" in \
        err["message"], err
    assert batches[:2] == [remote.BATCH_IDS, 10]
    # nothing written: index, search database, sync state as they were
    assert index_files(reg) == before
    assert not list(index_dir(reg).rglob("*.tmp"))
    monkeypatch.setattr(remote.Service, "_send", original)

    # the server back (on another port, behind the same relay): the next
    # sync picks up where the last good one was
    restarted = Served(primary["reg"])
    try:
        relay.target = restarted.port
        (res,) = sync(reg, "primary")
        assert res["status"] == "ok" and res["updated"] == \
            remote.BATCH_IDS + 10, res
        assert stored_texts(reg, base) == primary_texts(restarted)
    finally:
        restarted.stop()


def test_stamps_without_digests(tmp_path, primary, monkeypatch):
    """A service without digests (DataLad-Registry): the reference pages
    tell what changed, the changed records are fetched by id; the others
    keep their metadata content and take the pages' facts."""
    monkeypatch.setattr(remote.Service, "digests",
                        lambda self, query=None, etag=None, **kw: None)
    relay, server = primary["relay"], primary["server"]
    reg = tmp_path / "mirror"
    assert sync(reg, relay.url, name="primary")[-1]["how"] == "stream"
    full_bytes = relay.from_server
    base = remote.api_base(relay.url)
    state = json.loads(mirror.state_path(source_index(reg, base))
                       .read_text())
    assert state["mode"] == "stamps" and len(state["entries"]) == N

    relay.reset()
    (same,) = sync(reg, "primary")
    assert same["status"] == "notneeded" and same["fetched"] == 0, same
    light_bytes = relay.from_server
    assert asked(same) == -(-N // remote.PER_PAGE)  # the pages only

    records = copy.deepcopy(primary["records"])
    urls = changed(records, 60, "stamps")
    # facts only (no new stamp): taken from the pages, nothing fetched
    facts_only = [r for r in records if r["url"] not in urls][:5]
    for r in facts_only:
        r["last_chk_dt"] = "2031-01-01T00:00:00+00:00"
    reimport(primary, records[:-3])
    (res,) = sync(reg, "primary")
    assert res["status"] == "ok" and res["compared"] == "stamps", res
    assert res["fetched"] == 60
    assert (res["updated"], res["removed"]) == (65, 3)
    assert asked(res) == -(-(N - 3) // remote.PER_PAGE) + 60
    assert stored_texts(reg, base) == primary_texts(server)
    # the reference pages: less than half the bytes of the records with
    # their metadata (generated records hold ~3 KB of metadata each)
    assert light_bytes * 2 < full_bytes, (light_bytes, full_bytes)


# -- the patched search database ------------------------------------------------------------

def test_patched_database_answers_as_a_rebuilt_one(tmp_path):
    records = [normalize_record(r, "src") for r in generated(1200)]
    texts = [dumps_storable(r) for r in records]
    db = tmp_path / "a.sqlite"
    engine.build(db, records, "one")
    rng = random.Random(3)
    picked = rng.sample(range(len(records)), 200)
    removed = {records[i]["url"] for i in picked[:80]}
    updated = []
    for i in picked[80:180]:
        r = copy.deepcopy(records[i])
        r["annex_key_count"] = (r.get("annex_key_count") or 0) + 12345
        r["head_describe"] = "patched-haxby"
        updated.append(r)
    added = [dict(copy.deepcopy(records[i]), url=records[i]["url"] + "/x")
             for i in picked[180:]]
    with pytest.raises(engine.EngineStale):
        Patcher(db, "other")
    with Patcher(db, "one") as p:
        assert p.remove(removed | {r["url"] for r in updated}) == 180
        for r in updated + added:
            p.add(r, dumps_storable(r))
        final = list(p.texts())
        p.finish("two")
    assert not list(tmp_path.glob("*.tmp"))
    # the same records, built afresh in the order texts() gave
    fresh = tmp_path / "b.sqlite"
    engine.build(fresh, [json.loads(t) for t in final], "two")
    assert sorted(final) == sorted(
        [t for r, t in zip(records, texts) if r["url"] not in removed
         and r["url"] not in {u["url"] for u in updated}]
        + [dumps_storable(r) for r in updated + added])
    with engine.Engine.open(db, "two") as a, \
            engine.Engine.open(fresh, "two") as b:
        assert len(a) == len(b) == 1200 - 80 + 20
        for q in ("haxby", "patched", "container", "NOT haxby",
                  "url:github", 'metadata[bids_dataset]:""', "url:/x",
                  "annex_key_count:>10000", "Müller"):
            assert a.count(q) == b.count(q), q
            assert a.stats(q) == b.stats(q), q
            for key in engine.ORDER_KEYS:
                for direction in ("asc", "desc"):
                    assert [r["url"] for r in a.page(q, key, direction, 40)] \
                        == [r["url"] for r in b.page(q, key, direction,
                                                     40)], (q, key)
        # ids of records added by the patch are found
        new_id = record_id("src", added[-1]["url"])
        assert a.by_ids([new_id])[new_id]["url"] == added[-1]["url"]


def test_a_sync_killed_while_patching_leaves_either_state(tmp_path, primary):
    """SIGKILL while the search database is copied (in a thread) and
    patched -- a temporary file in the index directory -- or a moment
    later: the mirror holds, and searches, the records of before or those
    of after, never a mix; the next sync completes it."""
    relay, server = primary["relay"], primary["server"]
    reg = tmp_path / "mirror"
    assert sync(reg, relay.url, name="primary")[-1]["status"] == "ok"
    base = remote.api_base(relay.url)
    before = stored_texts(reg, base)
    records = copy.deepcopy(primary["records"])
    changed(records, 100, "sigkill")
    reimport(primary, records)
    after = primary_texts(server)
    root = index_dir(reg)

    def marked():  # what a search of the patched database finds
        res = call(registry_search, "metadata[changed_sigkill]:changed",
                   dataset=str(reg), source="primary")
        return len([r for r in res if r.get("action") == "registry_search"
                    and r["status"] == "ok"])

    for delay in (0.0, 0.02, 0.1, 0.3, 0.6):
        # the last one killed left its copy (the next sync removes it)
        left = set(root.rglob("*.tmp"))
        proc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from datalad.api import registry_sync; "
             "registry_sync('primary', dataset=sys.argv[1], "
             "result_renderer='disabled')", str(reg)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline \
                    and not set(root.rglob("*.tmp")) - left:
                time.sleep(0.001)
            time.sleep(delay)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        now = stored_texts(reg, base)
        assert now in (before, after), delay
        assert marked() == (0 if now == before else 100), delay
        if now == after:
            break
    (res,) = sync(reg, "primary")
    assert res["status"] in ("ok", "notneeded"), res
    assert stored_texts(reg, base) == after and marked() == 100
    assert not list(root.rglob("*.tmp"))


# -- many records by id: /all?ids= ----------------------------------------------------------

def test_all_ids_answers_what_get_by_id_answers(primary):
    from datalad_registry_ext.server.listing import MAX_IDS
    base = primary["server"].url + "/api/v2/dataset-urls"
    digests = [json.loads(x) for x in requests.get(
        base + "/all", params={"digests": "true"}).text.splitlines()]
    ids = [d["id"] for d in digests[:7]] + [digests[3]["id"]]  # a repeat
    # unknown: no such record, beyond our ids' range, beyond 64 bits
    unknown = [1, 2 ** 48 + 1, 10 ** 19]
    asked = [ids[0], unknown[0]] + ids[1:] + unknown[1:]
    wanted = list(dict.fromkeys(ids))

    r = requests.get(base + "/all", params={
        "ids": ",".join(map(str, asked)), "return_metadata": "true"})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    got = [json.loads(x) for x in r.text.splitlines()]
    # in the order asked, each once, the unknown ones left out, record for
    # record what GET /dataset-urls/{id} answers
    assert [g["id"] for g in got] == wanted
    assert got == [requests.get(f"{base}/{i}").json() for i in wanted]
    assert all(g["metadata"] for g in got)
    for i in unknown:
        assert requests.get(f"{base}/{i}").status_code == 404
    # without return_metadata: the same records without metadata, as /all
    plain = [json.loads(x) for x in requests.get(base + "/all", params={
        "ids": ",".join(map(str, asked))}).text.splitlines()]
    assert plain == [{k: v for k, v in g.items() if k != "metadata"}
                     for g in got]
    # an ETag as every /all answer has
    again = requests.get(base + "/all", params={
        "ids": ",".join(map(str, asked)), "return_metadata": "true"},
        headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304

    # bounds: up to MAX_IDS ids; none, more, or anything but decimal
    # numbers of at most 20 digits is a 422 naming ids
    every = [d["id"] for d in digests]
    r = requests.get(base + "/all", params={
        "ids": ",".join(map(str, every[:MAX_IDS]))})
    assert r.status_code == 200 and len(r.text.splitlines()) == MAX_IDS
    for bad in (",".join(map(str, every[:MAX_IDS + 1])), "", " ", "abc",
                "1,,2", "-5", "1.0", "0x10", "1" * 21, "١٢"):
        r = requests.get(base + "/all", params={"ids": bad})
        assert r.status_code == 422, bad
        assert r.json()[0]["loc"] == ["ids"], bad
    # not with a search, a filter or digests: an id that does not match
    # would be absent like an unknown one
    for extra in ({"search": "haxby"}, {"url": digests[0]["url"]},
                  {"min_annex_key_count": "1"}, {"digests": "true"}):
        r = requests.get(base + "/all", params=dict(extra, ids=str(ids[0])))
        assert r.status_code == 422, extra

    # the client: the same records as one request per id, in one request
    with remote.Service(primary["server"].url) as service:
        one_by_one = service.fetch(asked)
        assert service.requests == len(set(asked))
        batched = service.fetch(asked, batch=True)
        assert service.requests == len(set(asked)) + 1
    assert batched == one_by_one
    assert [i for i, v in batched.items() if v is None] == unknown


def test_batch_fetch_falls_back_to_one_by_one():
    """A service whose /all ignores ``ids`` (it streams every record) or
    has no /all: the records are fetched one by one instead, the stream
    abandoned at its first record not asked for."""
    from .test_federation import JSON, Double, rec
    records = [dict(rec(i), id=1000 + i) for i in range(5)]
    mode = {"all": "ignores"}

    def respond(h, path, q):
        if path == "/api/v2/dataset-urls/all":
            if mode["all"] == "missing":
                return 404, JSON, b'{"code": 404, "name": "Not Found"}'
            return 200, {"Content-Type": "application/x-ndjson"}, b"".join(
                json.dumps(r).encode() + b"\n" for r in records)
        n = int(path.rsplit("/", 1)[1])
        for r in records:
            if r["id"] == n:
                return 200, JSON, json.dumps(r).encode()
        return 404, JSON, b'{"code": 404, "name": "Not Found"}'

    with Double(respond) as double:
        # the stream's first record asked for or not, 99 unknown
        for asked in ([1003, 1001, 99], [1000, 1002]):
            for mode["all"] in ("ignores", "missing"):
                with remote.Service(double.url) as service:
                    got = service.fetch(asked, batch=True)
                    assert service.requests == 1 + len(asked)
                assert got == {i: next((r for r in records if r["id"] == i),
                                       None) for i in asked}


def test_patches_of_patches_answer_as_rebuilt_ones(tmp_path):
    """Later patches take the order keys from the database (``okey``),
    written by the patch before; keys a patch did not write (another
    version's, say: ``meta`` names another state) are computed again."""
    import sqlite3
    records = [normalize_record(r, "src") for r in generated(900)]
    db = tmp_path / "a.sqlite"
    engine.build(db, records, "v0")
    current = {r["url"]: r for r in records}
    rng = random.Random(11)
    for step in range(1, 4):
        urls = rng.sample(sorted(current), 60)
        with Patcher(db, f"v{step - 1}") as p:
            assert p.remove(urls[:40]) == 40
            for u in urls[:40]:
                del current[u]
            for u in urls[40:]:  # updated: order keys changed
                r = copy.deepcopy(current[u])
                r["annex_key_count"] = (r.get("annex_key_count") or 0) \
                    + 1000 * step
                r["last_update_dt"] = f"20{10 + step}-01-01T00:00:00+00:00"
                p.remove([u])
                p.add(r, dumps_storable(r))
                current[u] = r
            for i in range(15):  # new
                r = dict(copy.deepcopy(records[i]),
                         url=f"{records[i]['url']}/new{step}")
                r["annex_key_count"] = step * 7 + i
                p.add(r, dumps_storable(r))
                current[r["url"]] = r
            final = list(p.texts())
            p.finish(f"v{step}")
        if step == 1:
            # keys this code did not write: garbage, and meta says so
            con = sqlite3.connect(db)
            con.execute("UPDATE okey SET k = '[[\"\", \"\"], "
                        "[null, null, null, null, null, null]]'")
            con.execute("UPDATE meta SET value = 'other' WHERE key = 'okey'")
            con.commit()
            con.close()
        fresh = tmp_path / f"fresh{step}.sqlite"
        engine.build(fresh, [json.loads(t) for t in final], f"v{step}")
        with engine.Engine.open(db, f"v{step}") as a, \
                engine.Engine.open(fresh, f"v{step}") as b:
            assert len(a) == len(b) == len(current)
            for q in ("", "haxby", "NOT haxby", "annex_key_count:>500"):
                assert a.stats(q) == b.stats(q), (step, q)
                for key in engine.ORDER_KEYS:
                    for direction in ("asc", "desc"):
                        assert [r["url"] for r in a.page(q, key, direction,
                                                         900)] == \
                            [r["url"] for r in b.page(q, key, direction,
                                                      900)], (step, q, key)


def test_patches_keep_the_full_text_segments_bounded(tmp_path, monkeypatch):
    """FTS5 fails ("database or disk is full") at 2000 segments: a patch
    adds two (one statement for the deletions, one for the additions), and
    above engine_patch.FTS_SEGMENTS merges them."""
    import sqlite3
    from datalad_registry_ext import engine_patch
    records = [normalize_record(r, "src") for r in generated(400)]
    db = tmp_path / "a.sqlite"
    engine.build(db, records, "v0")

    def segments():
        con = sqlite3.connect(db)
        try:
            return [con.execute(f"SELECT count(DISTINCT segid) FROM {t}_idx")
                    .fetchone()[0] for t in ("fts_rec", "fts_md")]
        finally:
            con.close()
    with engine.Engine.open(db, "v0") as eng:
        if not int(eng.fts):
            pytest.skip("this SQLite has no FTS5")
    rng = random.Random(5)
    for step in (1, 2, 3):
        before = segments()
        if step == 3:
            monkeypatch.setattr(engine_patch, "FTS_SEGMENTS", 2)
        picked = rng.sample(records, 50)  # removed and added in any order
        with Patcher(db, f"v{step - 1}") as p:
            p.remove([r["url"] for r in picked])
            for r in picked:
                p.add(r, dumps_storable(r))
            p.finish(f"v{step}")
        after = segments()
        if step < 3:
            assert all(a <= b + 2 for a, b in zip(after, before)), \
                (before, after)
        else:
            assert after == [1, 1], after
    # the same records as before, merged or not: the same answers as a
    # fresh build of them
    fresh = tmp_path / "fresh.sqlite"
    engine.build(fresh, records, "v3")
    with engine.Engine.open(db, "v3") as a, \
            engine.Engine.open(fresh, "v3") as b:
        assert len(a) == len(b) == 400
        for q in ("haxby", "container", 'metadata[bids_dataset]:""'):
            assert a.count(q) == b.count(q), q


def _same_answers(db, fresh, fingerprint, n, queries=("", "haxby",
                                                         "NOT haxby")):
    with engine.Engine.open(db, fingerprint) as a, \
            engine.Engine.open(fresh, fingerprint) as b:
        assert len(a) == len(b) == n
        for q in queries:
            assert a.stats(q) == b.stats(q), q
            for key in engine.ORDER_KEYS:
                for direction in ("asc", "desc"):
                    assert [r["url"] for r in a.page(q, key, direction,
                                                     n)] == \
                        [r["url"] for r in b.page(q, key, direction, n)], \
                        (q, key, direction)


def test_a_build_keeps_the_order_keys_for_the_first_patch(tmp_path):
    """A build writes the order keys (``okey``) a patch ranks by: the first
    patch of a database as built does not read them from every record
    (~0.4 s of 13,000), it finds them current."""
    import sqlite3
    records = [normalize_record(r, "src") for r in generated(300)]
    db = tmp_path / "a.sqlite"
    engine.build(db, records, "v0")
    con = sqlite3.connect(db)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        keys = dict(con.execute("SELECT rid, k FROM okey"))
    finally:
        con.close()
    assert meta["okey"] == meta["fingerprint"] == "v0"
    assert keys == {i: json.dumps(engine._order_values(r))
                    for i, r in enumerate(records)}
    with Patcher(db, "v0") as p:
        p._light_keys = None  # not called: the build's keys are current
        r = dict(records[3], annex_key_count=10 ** 6)
        p.remove([r["url"]])
        p.add(r, dumps_storable(r))
        final = list(p.texts())
        p.finish("v1")
    fresh = tmp_path / "fresh.sqlite"
    engine.build(fresh, [json.loads(t) for t in final], "v1")
    _same_answers(db, fresh, "v1", 300)


def test_updates_alone_keep_the_ranks_of_unchanged_order_keys(
        tmp_path, monkeypatch):
    """Records updated, none removed or added: by an order key whose value
    no updated record changed, every row keeps its rank and the new row of
    a record takes its old one (only those are written); by the others
    the ranks are computed afresh. Either way the answers are a fresh
    build's, ties of values included."""
    records = [normalize_record(r, "src") for r in generated(700)]
    db = tmp_path / "a.sqlite"
    engine.build(db, records, "v0")
    current = {r["url"]: r for r in records}
    rng = random.Random(17)
    sorted_by = []  # the order keys ranked afresh
    ranks = Patcher._ranks
    monkeypatch.setattr(Patcher, "_ranks", staticmethod(
        lambda keys, j, by_tie: sorted_by.append(engine.ORDER_KEYS[j])
        or ranks(keys, j, by_tie)))
    for step in range(1, 4):
        urls = rng.sample(sorted(current), 45)
        others = rng.sample(sorted(current), 15)
        with Patcher(db, f"v{step - 1}") as p:
            assert p.remove(urls) == 45
            for i, u in enumerate(urls):
                r = copy.deepcopy(current[u])
                if step > 1 and i % 3 == 0:
                    # an order key changed: to another record's value (a
                    # tie, broken by URL) or to nothing
                    donor = current[others[i % 15]]
                    r["annex_key_count"] = donor.get("annex_key_count") \
                        if i % 2 else None
                    r["last_update_dt"] = donor.get("last_update_dt")
                else:  # no order key changed
                    r["metadata"] = (r.get("metadata") or []) + [
                        {"extractor_name": f"x{step}",
                         "extracted_metadata": {"n": i}}]
                p.add(r, dumps_storable(r))
                current[u] = r
            final = list(p.texts())
            sorted_by.clear()
            p.finish(f"v{step}")
        assert sorted_by == ([] if step == 1 else
                             ["annex_key_count", "last_update_dt"]), step
        fresh = tmp_path / f"fresh{step}.sqlite"
        engine.build(fresh, [json.loads(t) for t in final], f"v{step}")
        _same_answers(db, fresh, f"v{step}", 700,
                      ("", "haxby", f'metadata[x{step}]:""', "NOT haxby"))
