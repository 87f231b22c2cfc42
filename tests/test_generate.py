"""benchmarks/generate.py: the generator of realistic registry records.

The frequencies are checked on 2,000 records (seed 0) within bounds around
the shares of a real-shaped registry: loose enough for 2,000 records, tight
enough to notice a generator that drifted.
"""
from __future__ import annotations

import gzip
import json
import re
import tracemalloc
from collections import Counter
from datetime import datetime

import pytest

from benchmarks.generate import generate_records, main, write_jsonl
from datalad_registry_ext.records import normalize_record

N = 2000
ISO_DT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
HEXSHA = re.compile(r"^[0-9a-f]{40}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                  r"-[0-9a-f]{12}$")
METADATA_KEYS = ["extractor_name", "extractor_version", "extraction_parameter",
                 "extracted_metadata", "dataset_version", "dataset_describe"]
PROCESSED_KEYS = {"url", "id", "head_describe", "last_update_dt",
                  "git_objects_kb", "processed", "last_chk_dt", "metadata",
                  "head", "head_dt", "branches", "tags"}
ANNEX_KEYS = {"annex_key_count", "annexed_files_in_wt_count",
              "annexed_files_in_wt_size"}


@pytest.fixture(scope="module")
def records():
    return list(generate_records(N))


def category(rec) -> str:
    if not rec["processed"]:
        return "unprocessed"
    if "ds_id" in rec:
        return "ds"
    return "annex" if "annex_uuid" in rec else "git"


def share(records, pred) -> float:
    return sum(1 for r in records if pred(r)) / len(records)


def has_extractor(rec, name) -> bool:
    return any(m["extractor_name"] == name for m in rec["metadata"])


# -- determinism, prefix, streaming ---------------------------------------------------

def test_deterministic(records):
    assert list(generate_records(N)) == records


def test_seed_changes_the_records(records):
    other = list(generate_records(100, seed=1))
    assert other != records[:100]
    assert list(generate_records(100, seed=1)) == other


def test_record_i_does_not_depend_on_n(records):
    assert list(generate_records(700)) == records[:700]
    assert list(generate_records(0)) == []


def test_streaming_is_lazy():
    it = generate_records(10 ** 9)
    first = next(it)
    assert first["id"] == 1


def test_memory_does_not_grow_with_n():
    # all 2,500 records held at once would take well over 50 MB
    tracemalloc.start()
    try:
        for _ in generate_records(2500):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 2 ** 20


# -- shape ----------------------------------------------------------------------------

def test_every_record_normalizes(records):
    for rec in records:
        out = normalize_record(rec, "x")
        assert out["url"] == rec["url"]
        assert out["source"] == "x"


def test_ids_and_unique_urls(records):
    assert [r["id"] for r in records] == list(range(1, N + 1))
    canonical = {r["url"].lower().removesuffix(".git") for r in records}
    assert len(canonical) == N
    assert all(re.match(r"^https?://[a-z0-9.-]+/[^/]+/[^/]+$", r["url"])
               for r in records)


def test_fields_by_category(records):
    for rec in records:
        keys = set(rec)
        kind = category(rec)
        if kind == "unprocessed":
            assert keys == {"url", "id", "processed", "metadata"}
            assert rec["metadata"] == []
            continue
        optional = {"annex_uuid", "subdatasets"}
        expected = PROCESSED_KEYS | {"ds": {"ds_id"} | ANNEX_KEYS,
                                     "annex": ANNEX_KEYS, "git": set()}[kind]
        assert expected <= keys <= expected | optional, rec["url"]
        assert HEXSHA.match(rec["head"])
        assert rec["branches"][next(iter(rec["branches"]))]["hexsha"] == \
            rec["head"]
        assert ("git-annex" in rec["branches"]) == (kind != "git")
        if kind == "ds":
            assert UUID.match(rec["ds_id"])
        if "annex_uuid" in rec:
            assert UUID.match(rec["annex_uuid"])
        for tag in rec["tags"]:
            assert set(tag) == {"name", "hexsha"}
        if rec["tags"]:
            assert rec["head_describe"].startswith(rec["tags"][-1]["name"])
        else:
            assert rec["head_describe"] == rec["head"][:7]


def test_dates(records):
    for rec in records:
        if not rec["processed"]:
            continue
        dates = [rec["head_dt"], rec["last_update_dt"], rec["last_chk_dt"]]
        dates += [b["last_commit_dt"] for b in rec["branches"].values()]
        assert all(ISO_DT.match(d) for d in dates), dates
        head, update, check = map(datetime.fromisoformat, dates[:3])
        assert head <= update <= check
        assert rec["last_update_dt"].endswith("+00:00")


def test_metadata_entries(records):
    names = Counter()
    for rec in records:
        for m in rec["metadata"]:
            assert list(m) == METADATA_KEYS
            assert m["extraction_parameter"] == {}
            assert m["dataset_version"] == rec["head"]
            assert m["dataset_describe"] == rec["head_describe"]
            names[m["extractor_name"]] += 1
        assert len({m["extractor_name"] for m in rec["metadata"]}) == \
            len(rec["metadata"])
    assert set(names) == {"metalad_core", "bids_dataset", "datacite_gin",
                          "metalad_studyminimeta", "dandi"}


def _first(records, name):
    return next(m["extracted_metadata"] for r in records
                for m in r["metadata"] if m["extractor_name"] == name)


def test_metadata_content_shapes(records):
    core = _first(records, "metalad_core")
    assert set(core) == {"@context", "@graph"}
    dataset = [g for g in core["@graph"] if g["@type"] == "Dataset"]
    assert len(dataset) == 1
    assert {"identifier", "version", "dateCreated", "dateModified",
            "hasContributor", "distribution"} <= set(dataset[0])
    bids = _first(records, "bids_dataset")
    assert {"Name", "BIDSVersion", "License", "Authors", "description",
            "entities", "variables", "@context"} <= set(bids)
    assert bids["entities"]["subject"]
    datacite = _first(records, "datacite_gin")
    assert {"title", "authors", "keywords", "license", "description",
            "@context"} <= set(datacite)
    dandi = _first(records, "dandi")
    assert dandi["identifier"].startswith("DANDI:")
    assert {"contributor", "assetsSummary", "schemaVersion"} <= set(dandi)
    study = _first(records, "metalad_studyminimeta")
    assert [g["@id"] for g in study["@graph"]][:1] == ["#study"]


def test_contexts_are_the_project_extractors():
    from benchmarks import generate
    from datalad_registry_ext.extractors.bids import BIDS_CONTEXT
    from datalad_registry_ext.extractors.datacite_gin import DATACITE_CONTEXT
    assert generate.BIDS_CONTEXT == BIDS_CONTEXT
    assert generate.DATACITE_CONTEXT == DATACITE_CONTEXT


def test_copies_share_a_dataset(records):
    by_id = {}
    for rec in records:
        if "ds_id" in rec:
            by_id.setdefault(rec["ds_id"], []).append(rec)
    groups = [g for g in by_id.values() if len(g) > 1]
    assert len(groups) > 100
    for group in groups:
        names = [[m["extractor_name"] for m in r["metadata"]] for r in group]
        assert all(n == names[0] for n in names)  # the same dataset
        assert len({r["url"] for r in group}) == len(group)


def test_subdatasets(records):
    with_field = [r for r in records if "subdatasets" in r]
    for rec in with_field:
        subs = rec["subdatasets"]
        assert subs and [s["path"] for s in subs] == sorted(s["path"]
                                                             for s in subs)
        for s in subs:
            assert set(s) == {"path", "url", "ds_id"}
    # some point at other generated records ...
    ds_id_of = {r["url"]: r.get("ds_id") for r in records}
    hits = [s for r in with_field for s in r["subdatasets"]
            if s["url"] in ds_id_of and ds_id_of[s["url"]] == s["ds_id"]]
    assert hits
    # ... and many datasets share a container collection
    shared = Counter(s["ds_id"] for r in with_field for s in r["subdatasets"]
                     if s["path"] == "code/containers")
    assert max(shared.values()) >= 3


# -- frequencies ----------------------------------------------------------------------

def test_categories(records):
    kinds = Counter(category(r) for r in records)
    assert 0.92 <= kinds["ds"] / N <= 0.975
    assert 0.015 <= kinds["git"] / N <= 0.05
    assert 0.003 <= kinds["annex"] / N <= 0.02
    assert 0.003 <= kinds["unprocessed"] / N <= 0.02
    assert 0.25 <= share(records, lambda r: "annex_uuid" in r) <= 0.40


def test_url_hosts(records):
    def url_has(word):
        return share(records, lambda r: word in r["url"].lower())
    assert 0.60 <= url_has("github.com") <= 0.72
    assert 0.075 <= url_has("openneuro") <= 0.125
    assert 0.17 <= url_has("gin.g-node.org") <= 0.27
    assert 0.08 <= url_has("hub.datalad.org") <= 0.15
    assert 0.02 <= url_has("dandisets") <= 0.06
    other = share(records, lambda r: not re.search(
        r"//(github\.com|gin\.g-node\.org|hub\.datalad\.org)/", r["url"]))
    assert 0.003 <= other <= 0.04


def test_extractor_shares(records):
    def ex(name):
        return share(records, lambda r: has_extractor(r, name))
    assert 0.92 <= ex("metalad_core") <= 0.975
    assert 0.25 <= ex("bids_dataset") <= 0.36
    assert 0.06 <= ex("datacite_gin") <= 0.14
    assert 0.03 <= ex("metalad_studyminimeta") <= 0.09
    assert 0.03 <= ex("dandi") <= 0.08
    assert 0.15 <= share(records, lambda r: has_extractor(r, "bids_dataset")
                         and "openneuro" not in r["url"].lower()) <= 0.26


def test_word_shares(records):
    texts = [json.dumps(r, ensure_ascii=False) for r in records]
    lower = [t.lower() for t in texts]

    def word(w):
        return sum(w in t for t in lower) / N
    assert 0.0005 <= word("haxby") <= 0.006   # 1 to 12 of 2,000
    # copies of one dataset carry the same words, so small samples vary more
    # than independent records would
    assert 0.02 <= word("container") <= 0.065
    assert 0.08 <= word("openneuro") <= 0.15
    nonascii = sum(any(ord(c) > 127 for c in t) for t in texts) / N
    assert 0.05 <= nonascii <= 0.25
    assert any(re.search(r"[\u4e00-\u9fff\uac00-\ud7af]", t) for t in texts)


def test_sizes_and_subdataset_share(records):
    sizes = [len(json.dumps(r, ensure_ascii=False).encode()) for r in records]
    assert 2200 <= sum(sizes) / N <= 4500
    assert 0.02 <= share(records, lambda r: "subdatasets" in r) <= 0.08
    ids = Counter(r["ds_id"] for r in records if "ds_id" in r)
    # about a quarter of the datasets are further copies
    assert 0.65 <= len(ids) / sum(ids.values()) <= 0.85


# -- files and the command line ------------------------------------------------------

def test_write_jsonl_gz(tmp_path, records):
    path = tmp_path / "r.jsonl.gz"
    assert write_jsonl(path, 300) == 300
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == records[:300]
    first = path.read_bytes()
    write_jsonl(path, 300)
    assert path.read_bytes() == first  # no time stamp in the gzip header


def test_cli_plain(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    assert main(["40", str(path), "--seed", "3"]) == 0
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == \
        list(generate_records(40, seed=3))
    assert "wrote 40 records" in capsys.readouterr().err
