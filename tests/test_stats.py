"""Collection statistics in DataLad-Registry's collection_stats shape."""
import json

import pytest

from datalad_registry_ext.stats import collection_stats

ANNEX = {"main": {"hexsha": "a"}, "git-annex": {"hexsha": "b"}}
PLAIN = {"main": {"hexsha": "a"}}


def rec(url, ds_id=None, size=None, count=None, branches=ANNEX):
    return {"url": url, "ds_id": ds_id, "annexed_files_in_wt_size": size,
            "annexed_files_in_wt_count": count, "branches": branches}


def test_empty_collection():
    assert collection_stats([]) == {
        "datalad_ds_stats": {"unique_ds_stats": {"ds_count": 0},
                             "stats": {"ds_count": 0}},
        "pure_annex_ds_stats": {"ds_count": 0},
        "non_annex_ds_stats": {"ds_count": 0},
        "summary": {"unique_ds_count": 0, "ds_count": 0},
    }


def test_upstream_example_shape_and_numbers():
    # the numbers of the example response in DataLad-Registry's docs
    records = [
        rec("u1", "id1", 500, 100), rec("u2", "id1", 400, 50),
        rec("u3", "id2", 600, 150), rec("u4", "id2", 600, 170),
        rec("u5", "id3", 301, 30), rec("u6", "id3", 0, 170),
        rec("p1", None, 600, 100),
        rec("n1", None, None, None, branches=PLAIN),
        rec("x1", None, None, None, branches=None),
    ]
    assert collection_stats(records) == {
        "datalad_ds_stats": {
            "unique_ds_stats": {"ds_count": 3, "annexed_files_size": 1401,
                                "annexed_file_count": 300},
            "stats": {"ds_count": 6, "annexed_files_size": 2401,
                      "annexed_file_count": 670},
        },
        "pure_annex_ds_stats": {"ds_count": 1, "annexed_files_size": 600,
                                "annexed_file_count": 100},
        "non_annex_ds_stats": {"ds_count": 1},
        "summary": {"unique_ds_count": 3, "ds_count": 9},
    }


def test_null_sums_are_omitted():
    stats = collection_stats([rec("a", "id", None, None),
                              rec("b", None, None, None)])
    assert stats["datalad_ds_stats"]["stats"] == {"ds_count": 1}
    assert stats["datalad_ds_stats"]["unique_ds_stats"] == {"ds_count": 1}
    assert stats["pure_annex_ds_stats"] == {"ds_count": 1}


def test_size_without_count_keeps_only_size():
    stats = collection_stats([rec("a", "id", 10, None)])
    assert stats["datalad_ds_stats"]["stats"] == {"ds_count": 1,
                                                  "annexed_files_size": 10}


def test_zero_is_not_null():
    stats = collection_stats([rec("a", "id", 0, 0)])
    assert stats["datalad_ds_stats"]["stats"] == {
        "ds_count": 1, "annexed_files_size": 0, "annexed_file_count": 0}


def test_unique_picks_largest_size_then_largest_count():
    stats = collection_stats([
        rec("a", "id", 10, 1), rec("b", "id", 30, 2), rec("c", "id", 30, 5),
        rec("d", "id", 20, 99),
    ])
    assert stats["datalad_ds_stats"]["unique_ds_stats"] == {
        "ds_count": 1, "annexed_files_size": 30, "annexed_file_count": 5}


def test_unique_prefers_any_size_over_null_size():
    stats = collection_stats([rec("a", "id", None, 50), rec("b", "id", 5, 1)])
    assert stats["datalad_ds_stats"]["unique_ds_stats"] == {
        "ds_count": 1, "annexed_files_size": 5, "annexed_file_count": 1}


def test_unique_without_sizes_takes_max_count():
    stats = collection_stats([rec("a", "id", None, 3), rec("b", "id", None, 7),
                              rec("c", "id", None, None)])
    assert stats["datalad_ds_stats"]["unique_ds_stats"] == {
        "ds_count": 1, "annexed_file_count": 7}


def test_unique_count_null_loses_to_count_at_same_size():
    stats = collection_stats([rec("a", "id", 5, None), rec("b", "id", 5, 2)])
    assert stats["datalad_ds_stats"]["unique_ds_stats"]["annexed_file_count"] == 2


def test_unique_is_computed_within_given_records_only():
    everything = [rec("a", "id", None, 3), rec("b", "id", 100, 9)]
    only_a = collection_stats(everything[:1])
    # upstream would join in "b" (outside the filter); we must not
    assert only_a["datalad_ds_stats"]["unique_ds_stats"] == {
        "ds_count": 1, "annexed_file_count": 3}


def test_summary_counts_distinct_ds_ids_and_all_records():
    stats = collection_stats([rec("a", "x"), rec("b", "x"), rec("c", "y"),
                              rec("d"), rec("e", branches=None)])
    assert stats["summary"] == {"unique_ds_count": 2, "ds_count": 5}


def test_pure_annex_requires_annex_branch_and_no_ds_id():
    stats = collection_stats([rec("a", None, 1, 1), rec("b", "id", 2, 2),
                              rec("c", None, 4, 4, branches=PLAIN)])
    assert stats["pure_annex_ds_stats"] == {
        "ds_count": 1, "annexed_files_size": 1, "annexed_file_count": 1}


def test_non_annex_includes_datalad_datasets_without_annex():
    # categories overlap as upstream: a DataLad dataset without git-annex
    # counts as DataLad dataset and as non-annex repository
    stats = collection_stats([rec("a", "id", None, None, branches=PLAIN)])
    assert stats["datalad_ds_stats"]["stats"]["ds_count"] == 1
    assert stats["non_annex_ds_stats"] == {"ds_count": 1}


def test_null_branches_count_only_in_summary():
    stats = collection_stats([rec("a", None, 5, 5, branches=None)])
    assert stats["pure_annex_ds_stats"] == {"ds_count": 0}
    assert stats["non_annex_ds_stats"] == {"ds_count": 0}
    assert stats["summary"] == {"unique_ds_count": 0, "ds_count": 1}


def test_missing_keys_are_nulls():
    stats = collection_stats([{"url": "a"}])
    assert stats["summary"] == {"unique_ds_count": 0, "ds_count": 1}
    assert stats["non_annex_ds_stats"] == {"ds_count": 0}


def test_empty_branches_is_non_annex():
    stats = collection_stats([rec("a", branches={})])
    assert stats["non_annex_ds_stats"] == {"ds_count": 1}


def test_branches_as_list_of_names():
    stats = collection_stats([rec("a", branches=["master", "git-annex"]),
                              rec("b", branches=["master"])])
    assert stats["pure_annex_ds_stats"]["ds_count"] == 1
    assert stats["non_annex_ds_stats"] == {"ds_count": 1}


def test_accepts_any_iterable():
    stats = collection_stats(rec(f"u{i}", f"id{i}", 1, 1) for i in range(3))
    assert stats["summary"] == {"unique_ds_count": 3, "ds_count": 3}


def test_stats_over_generated_records(bench_records):
    # realistic records (benchmarks/generate.py), checked against a plain
    # computation over the same records
    records = bench_records
    stats = collection_stats(records)
    with_id = [r for r in records if r.get("ds_id") is not None]
    assert stats["summary"]["ds_count"] == len(records)
    assert stats["datalad_ds_stats"]["stats"]["ds_count"] == len(with_id)
    assert stats["datalad_ds_stats"]["stats"].get("annexed_files_size") == sum(
        r["annexed_files_in_wt_size"] for r in with_id
        if r.get("annexed_files_in_wt_size") is not None)
    assert stats["summary"]["unique_ds_count"] == len({r["ds_id"]
                                                      for r in with_id})
    pure = [r for r in records if r.get("ds_id") is None
            and r.get("branches") is not None and "git-annex" in r["branches"]]
    assert stats["pure_annex_ds_stats"]["ds_count"] == len(pure)
    non_annex = [r for r in records if r.get("branches") is not None
                 and "git-annex" not in r["branches"]]
    assert stats["non_annex_ds_stats"]["ds_count"] == len(non_annex)
    # one record per ds_id: largest size (any over none), then largest count
    best = {}
    for r in with_id:
        size, count = (r.get("annexed_files_in_wt_size"),
                       r.get("annexed_files_in_wt_count"))
        rank = (size is not None, size or 0, count is not None, count or 0)
        if r["ds_id"] not in best or rank > best[r["ds_id"]][0]:
            best[r["ds_id"]] = (rank, size, count)
    unique = stats["datalad_ds_stats"]["unique_ds_stats"]
    assert unique["ds_count"] == len(best)
    assert unique.get("annexed_files_size") == sum(
        size for _, size, _ in best.values() if size is not None)
    assert unique.get("annexed_file_count") == sum(
        count for _, _, count in best.values() if count is not None)
    # the records exercise every category and the choice among copies
    assert pure and non_annex and len(best) < len(with_id)
    json.dumps(stats)  # plain JSON


# -- check_stats: registry-update's failed checks (ours) ---------------------------------

def checked(url, n=None, last_chk=None, last_failed=None, **kw):
    r = rec(url, **kw)
    r.update(n_failed_chks=n, last_chk_dt=last_chk,
             last_failed_chk_dt=last_failed)
    return r


DT = "2024-01-01T00:00:00+00:00"


def test_check_stats_absent_without_failures():
    # checked records, none failing: upstream's shape, no key of ours
    stats = collection_stats([checked("a", None, DT), checked("b", 0, DT),
                              checked("c")])
    assert "check_stats" not in stats
    assert set(stats) == {"datalad_ds_stats", "pure_annex_ds_stats",
                          "non_annex_ds_stats", "summary"}


def test_check_stats_counts():
    records = [
        checked("ok", None, DT),              # checked, fine
        checked("never"),                     # never checked
        checked("one", 1, DT, DT),            # failing
        checked("nine", 9, None, DT),         # failing, below the default 10
        checked("ten", 10, DT, DT),           # unreachable at the default
        checked("many", 25, None, DT),        # unreachable
        checked("zero", 0, DT, DT),           # reset: not failing
    ]
    assert collection_stats(records)["check_stats"] == {
        "checked_count": 6, "failing_count": 4, "unreachable_count": 2}
    # the threshold is the configured update-max-failures, given by the caller
    assert collection_stats(records, 3)["check_stats"] == {
        "checked_count": 6, "failing_count": 4, "unreachable_count": 3}
    assert collection_stats(records, 100)["check_stats"][
        "unreachable_count"] == 0
    # 0 or less (nonsense) makes every failing record unreachable, never a
    # record without failures
    assert collection_stats(records, 0)["check_stats"][
        "unreachable_count"] == 4
    json.dumps(collection_stats(records))


def test_check_stats_reads_counts_as_sizes_are_read():
    # numbers, texts of integers; bools, other texts, lists: no failure
    records = [checked("a", "3"), checked("b", 2.5), checked("c", True),
               checked("d", "x"), checked("e", [4]), checked("f", -2),
               checked("g", "12")]
    assert collection_stats(records)["check_stats"] == {
        "checked_count": 0, "failing_count": 3, "unreachable_count": 1}


def _failure_records():
    """Records with assorted check-failure values, incl. None, odd types
    and values SQLite cannot hold (matched in Python by the engine)."""
    import random
    rnd = random.Random(7)
    recs = []
    for i in range(300):
        r = {"url": f"https://f.org/{i}", "metadata": [],
             "tags": [{"name": rnd.choice(["v1", "v2"])}],
             "ds_id": rnd.choice([None, "A", "B", f"u{i}"]),
             "branches": rnd.choice([None, ANNEX, PLAIN]),
             "annexed_files_in_wt_size": rnd.choice([None, 0, 10])}
        for key, values in (
                ("n_failed_chks", [None, None, 0, 1, 2, 3, 9, 10, 11, 250,
                                   "4", "x", True, 1.5, -1]),
                ("last_chk_dt", [None, DT, "not a date"]),
                ("last_failed_chk_dt", [None, DT])):
            if rnd.random() < 0.85:
                r[key] = rnd.choice(values)
        recs.append(r)
    recs += [{"url": "https://f.org/huge", "n_failed_chks": 2 ** 70,
              "metadata": []},
             {"url": "https://f.org/nan", "n_failed_chks": float("nan"),
              "last_chk_dt": DT, "metadata": []},
             {"url": "https://f.org/inf", "n_failed_chks": float("inf"),
              "metadata": []}]
    return recs


@pytest.mark.parametrize("query", ["", "tags:v1", "NOT tags:v1", "url:1",
                                   "url:huge OR url:nan", "n_failed_chks:>2",
                                   "url:nothing"])
def test_engine_check_stats_equal_collection_stats(tmp_path_factory, query):
    from datalad_registry_ext.engine import Engine, build, merge_stats
    from datalad_registry_ext.query import SearchView, parse

    recs = _failure_records()
    matching = [recs[i] for i in SearchView(recs).search(query)]
    whole = tmp_path_factory.mktemp("checks") / "all.sqlite"
    build(whole, recs, "fp")
    parts_paths = []
    for k in range(3):
        path = tmp_path_factory.mktemp("checks") / f"p{k}.sqlite"
        build(path, recs[k::3], "fp")
        parts_paths.append(path)
    for most in (10, 3, 1, 0, 2 ** 70):
        expected = collection_stats(matching, most)
        with Engine.open(whole, "fp") as eng:
            assert merge_stats([eng.stats(parse(query), True, most)]) == \
                expected, most
            assert merge_stats([eng.stats(parse(query), False, most)]) == \
                expected, most
        parts = []
        for path in parts_paths:
            with Engine.open(path, "fp") as eng:
                parts.append(json.loads(json.dumps(
                    eng.stats(query, True, most))))
        assert merge_stats(parts) == expected, most
    if query in ("", "n_failed_chks:>2"):
        assert collection_stats(matching)["check_stats"]["failing_count"] > 0
        assert collection_stats(matching)["check_stats"][
            "unreachable_count"] > 0


def test_engine_stats_refuses_a_non_int_threshold(tmp_path):
    from datalad_registry_ext.engine import Engine, build
    build(tmp_path / "x.sqlite", [checked("a", 3)], "fp")
    with Engine.open(tmp_path / "x.sqlite", "fp") as eng:
        for bad in ("10", 1.5, True, None):
            with pytest.raises(TypeError):
                eng.stats("", True, bad)
