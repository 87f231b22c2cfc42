"""Extractor names: unknown names are refused before any record is touched,
short names are aliases of the full ones, and recorded failures can be
cleared. On real datasets and registries."""
from datalad.api import registry_extract, registry_search

from datalad_registry_ext import metadata
from datalad_registry_ext.config import DEFAULT_EXTRACTORS
from datalad_registry_ext.index import local_index

from .fixtures import call, record


def _by_extractor(res):
    return {r["extractor"]: r for r in res
            if r["action"] == "registry_extract" and r.get("extractor")}


def test_unknown_names_are_refused_before_touching_records(registry_with):
    ds, registry = registry_with
    index_file = local_index(registry).path
    before = index_file.read_bytes()
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["no_such_extractor", "neither_this"], force=True)
    assert [(r["status"], r["extractor"]) for r in res] == [
        ("impossible", "no_such_extractor"), ("impossible", "neither_this")]
    msg = res[0]["message"]
    assert "'no_such_extractor' is not installed" in msg
    for name in DEFAULT_EXTRACTORS:
        assert name in msg
    assert "bids_dataset (bids)" in msg
    assert index_file.read_bytes() == before
    assert "no_such_extractor" not in (
        record(registry, ds.path).get("extraction_failures") or {})


def test_unknown_names_do_not_stop_known_ones(registry_with):
    ds, registry = registry_with
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["no_such_extractor", "bids"], force=True)
    ex = _by_extractor(res)
    assert ex["no_such_extractor"]["status"] == "impossible"
    assert ex["bids_dataset"]["status"] == "ok"
    # one refusal, not one per dataset; nothing recorded for it
    assert sum(r.get("extractor") == "no_such_extractor" for r in res) == 1
    rec = record(registry, ds.path)
    assert not rec.get("extraction_failures")


def test_short_names_run_the_full_extractors(registry_with):
    ds, registry = registry_with
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["bids", "gin,core"], force=True)
    assert {n: r["status"] for n, r in _by_extractor(res).items()} == {
        "bids_dataset": "ok", "datacite_gin": "ok", "metalad_core": "ok"}
    names = [m["extractor_name"] for m in record(registry, ds.path)["metadata"]]
    assert "bids" not in names and "bids_dataset" in names
    # the search engine (SQLite) sees the full names too
    found = call(registry_search, 'metadata[bids]:"" metadata[gin].title:title',
                 dataset=str(registry))
    assert [r["url"] for r in found] == [ds.path]


def test_configured_short_and_unknown_names(registry_with, monkeypatch):
    import datalad
    ds, registry = registry_with
    monkeypatch.setenv("DATALAD_REGISTRY_EXTRACTORS", "bids, smm not_one")
    datalad.cfg.reload(force=True)
    try:
        assert metadata.configured_extractors() == [
            "bids_dataset", "metalad_studyminimeta", "not_one"]
        res = call(registry_extract, [ds.path], dataset=str(registry),
                   force=True)
    finally:
        monkeypatch.delenv("DATALAD_REGISTRY_EXTRACTORS")
        datalad.cfg.reload(force=True)
    ex = _by_extractor(res)
    assert ex["not_one"]["status"] == "impossible"
    assert ex["bids_dataset"]["status"] == "ok"
    assert ex["metalad_studyminimeta"]["status"] == "notneeded"  # no file
    assert not record(registry, ds.path).get("extraction_failures")


def test_force_clears_a_failure_once_extraction_succeeds(registry_with,
                                                          max_bytes_env):
    ds, registry = registry_with
    max_bytes_env(10)   # datacite.yml is larger: extraction fails
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["datacite"], force=True)
    assert _by_extractor(res)["datacite_gin"]["status"] == "error"
    rec = record(registry, ds.path)
    assert rec["extraction_failures"]["datacite_gin"]["count"] == 1
    max_bytes_env(10 * 1024 * 1024)
    # same HEAD: without --force there is nothing to do
    res = call(registry_extract, dataset=str(registry))
    assert [r["status"] for r in res] == ["notneeded"]
    assert record(registry, ds.path)["extraction_failures"]
    # --force without DATASET arguments runs on every registered dataset
    res = call(registry_extract, dataset=str(registry), force=True)
    assert _by_extractor(res)["datacite_gin"]["status"] == "ok"
    assert not record(registry, ds.path)["extraction_failures"]
    assert call(registry_search, 'extraction_failures:""',
                dataset=str(registry)) == []


def test_force_drops_failures_recorded_under_unusable_names(registry_with):
    """Records written before unknown names were refused may carry failures
    for them (e.g. ``-e bids``); --force drops those."""
    ds, registry = registry_with
    index = local_index(registry)
    with index.transaction() as txn:
        rec = txn.get(ds.path)
        rec["extraction_failures"] = {
            "bids": {"message": "extractor 'bids' is not installed",
                     "time": "2024-01-01T00:00:00+00:00", "count": 3},
            "gone_extractor": {"message": "not installed",
                               "time": "2024-01-01T00:00:00+00:00",
                               "count": 1}}
        txn.put(rec)
    assert len(call(registry_search, 'extraction_failures:""',
                    dataset=str(registry))) == 1
    res = call(registry_extract, [ds.path], dataset=str(registry),
               extractor=["bids"], force=True)
    assert _by_extractor(res)["bids_dataset"]["status"] == "ok"
    assert not record(registry, ds.path)["extraction_failures"]
    assert call(registry_search, 'extraction_failures:""',
                dataset=str(registry)) == []
