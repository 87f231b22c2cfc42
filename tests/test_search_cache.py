"""Answers kept per process (search.RESULT_CACHE_SIZE): the same answers as
computing them, never a stale one after a change, never changed by a caller."""
import gzip
import json

import pytest

from datalad_registry_ext import search as S
from datalad_registry_ext.sources import import_jsonl

QUERIES = ["", "haxby", "NOT haxby", "url:github", 'metadata[bids_dataset]:""']


@pytest.fixture
def synced(tmp_path, bench_file):
    registry = tmp_path / "registry"
    registry.mkdir()
    import_jsonl(registry, bench_file)
    S.clear_cache()
    yield registry, bench_file
    S.clear_cache()


def _answer(registry, q):
    r = S.search(registry, q, limit=20, stats=True)
    return r.total, [h["url"] for h in r.hits], r.stats


def test_kept_answers_equal_computed_ones(synced, monkeypatch):
    registry, _ = synced
    kept = [_answer(registry, q) for q in QUERIES]
    again = [_answer(registry, q) for q in QUERIES]   # from the cache
    assert len(S._results) >= len(QUERIES) * 3
    monkeypatch.setattr(S, "RESULT_CACHE_SIZE", 0)
    computed = [_answer(registry, q) for q in QUERIES]
    assert kept == again == computed
    assert any(total for total, _, _ in computed)


def test_a_caller_cannot_change_a_kept_answer(synced):
    registry, _ = synced
    first = S.search(registry, "haxby", limit=5, stats=True)
    first.stats["summary"]["ds_count"] = -1
    first.hits[0]["url"] = "changed"
    second = S.search(registry, "haxby", limit=5, stats=True)
    assert second.stats["summary"]["ds_count"] == second.total
    assert second.hits[0]["url"] != "changed"


def test_a_changed_source_is_never_answered_from_the_cache(synced, tmp_path):
    registry, bench_file = synced
    before = S.search(registry, "", limit=3, stats=True)
    with gzip.open(bench_file, "rt") as f:
        lines = f.read().splitlines()
    # a second source, then the same source with fewer records
    bench_copy = bench_file.parent / "copy.jsonl"
    bench_copy.write_text("\n".join(lines) + "\n")
    import_jsonl(registry, bench_copy)
    both = S.search(registry, "", limit=3, stats=True)
    assert both.total == 2 * before.total
    bench_copy.write_text("\n".join(lines[:10]) + "\n")
    import_jsonl(registry, bench_copy)
    after = S.search(registry, "", limit=3, stats=True)
    assert after.total == before.total + 10
    assert after.stats["summary"]["ds_count"] == after.total
    assert json.loads(lines[0])["url"]  # the data is what we think it is
