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
import random
import signal
import socket
import threading

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
    assert again["requests"] == 1 and again["received"] == 0
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
    assert inc["requests"] == 1 + 110
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
    assert quiet["status"] == "notneeded" and quiet["requests"] == 1

    # deleting only: records disappear
    gone = {r["url"] for r in records[-25:]}
    reimport(primary, records[:-25])
    (dele,) = sync(reg, "primary")
    assert dele["status"] == "ok" and dele["removed"] == 25, dele
    assert dele["fetched"] == 0 and dele["requests"] == 1
    assert not gone & set(stored_texts(reg, base))
    assert stored_texts(reg, base) == primary_texts(server)

    # a rewrite that changes nothing: a new ETag, no record differs
    reimport(primary, records[:-25])
    (same,) = sync(reg, "primary")
    assert same["status"] == "notneeded" and same["fetched"] == 0, same
    (quiet,) = sync(reg, "primary")
    assert quiet["requests"] == 1  # the new ETag was remembered

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
    assert q2["status"] == "notneeded" and q2["requests"] == 1
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
    changed(records, 100, "kill")
    reimport(primary, records)
    before = index_files(reg)
    assert mirror.state_path(index).exists()

    # the server dies (SIGKILL) while the changed records are fetched
    fetched = []
    original = remote.Service.exchange

    def exchange(self, method, url, what, **kw):
        if "/dataset-urls/" in url and not url.endswith("/all"):
            fetched.append(url)
            if len(fetched) == 30:
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
        return original(self, method, url, what, **kw)
    monkeypatch.setattr(remote.Service, "exchange", exchange)
    res = sync(reg, "primary")
    (err,) = failures(res)
    assert "cannot reach it" in err["message"] or "connection" in \
        err["message"], err
    assert len(fetched) == 30
    # nothing written: index, search database, sync state as they were
    assert index_files(reg) == before
    assert not list(index_dir(reg).rglob("*.tmp"))
    monkeypatch.setattr(remote.Service, "exchange", original)

    # the server back (on another port, behind the same relay): the next
    # sync picks up where the last good one was
    restarted = Served(primary["reg"])
    try:
        relay.target = restarted.port
        (res,) = sync(reg, "primary")
        assert res["status"] == "ok" and res["updated"] == 100, res
        assert stored_texts(reg, base) == primary_texts(restarted)
    finally:
        restarted.stop()


def test_stamps_without_digests(tmp_path, primary, monkeypatch):
    """A service without digests (DataLad-Registry): the reference pages
    tell what changed, the changed records are fetched by id; the others
    keep their metadata content and take the pages' facts."""
    monkeypatch.setattr(remote.Service, "digests",
                        lambda self, query=None, etag=None: None)
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
    assert same["requests"] == -(-N // remote.PER_PAGE)  # the pages only

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
    assert res["requests"] == -(-(N - 3) // remote.PER_PAGE) + 60
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
