"""Fixtures shared by the test modules, each built once.

Expensive fixtures that tests only read are session-scoped here; a test that
changes what it is given gets its own copy or builds its own. Helpers and
constants are in ``fixtures.py``.
"""
import json

import pytest

# Git identity, isolated HOME/gitconfig and DataLad's test UI.
from datalad.conftest import setup_package  # noqa: F401

from datalad_registry_ext.config import DEFAULT_EXTRACTORS

from .fixtures import FULL_FILES, make_dataset, read_jsonl_gz, run, set_user_dirs

#: records in the generated bench file
BENCH_N = 1000


@pytest.fixture(scope="session", autouse=True)
def session_user_dirs(tmp_path_factory):
    """User dirs for session- and module-scoped fixtures.

    Those are built outside any test's monkeypatch; they must not touch the
    real user dirs either. Tests get their own (``isolated_user_dirs``).
    """
    with pytest.MonkeyPatch.context() as mp:
        set_user_dirs(mp, tmp_path_factory.mktemp("session-user-dirs"))
        yield


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch):
    """Never let a test touch the real user data/cache dirs.

    platformdirs follows XDG_* on Linux; each test gets its own.
    """
    set_user_dirs(monkeypatch, tmp_path)
    yield


@pytest.fixture
def max_bytes_env(monkeypatch):
    """Set datalad.registry.metadata-max-bytes through the environment."""
    import datalad

    def set_limit(value):
        # DATALAD_<section>_<name>: '_' -> '.', '__' -> '-'
        monkeypatch.setenv("DATALAD_REGISTRY_METADATA__MAX__BYTES", str(value))
        datalad.cfg.reload(force=True)
    yield set_limit
    monkeypatch.delenv("DATALAD_REGISTRY_METADATA__MAX__BYTES",
                       raising=False)
    datalad.cfg.reload(force=True)


# -- datasets ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def full_ds(tmp_path_factory):
    """A DataLad dataset with a metadata file for every default extractor.

    Read-only: a test that changed it would change every later test's input,
    so teardown checks that it is as it was built.
    """
    ds = make_dataset(tmp_path_factory.mktemp("full") / "full", FULL_FILES,
                      to_git=True)
    head = ds.repo.get_hexsha()
    yield ds
    assert ds.repo.get_hexsha() == head, "a test committed to full_ds"
    assert run("git", "status", "--porcelain", "--ignored", cwd=ds.path) == "", \
        "a test changed full_ds's work tree"


@pytest.fixture(scope="session")
def full_outcomes(full_ds):
    """All default extractors run on ``full_ds`` (read-only)."""
    from datalad_registry_ext.extraction import extract_dataset
    outcomes = extract_dataset(full_ds.path, DEFAULT_EXTRACTORS)
    frozen = json.dumps(outcomes, sort_keys=True)
    yield outcomes
    assert json.dumps(outcomes, sort_keys=True) == frozen, \
        "a test changed full_outcomes"


# -- generated registry records (benchmarks/generate.py) ---------------------------

@pytest.fixture(scope="session")
def bench_file(tmp_path_factory):
    """BENCH_N generated API v2 records as gzipped JSON Lines."""
    from benchmarks.generate import write_jsonl
    path = tmp_path_factory.mktemp("bench") / "registry-1k.jsonl.gz"
    assert write_jsonl(path, BENCH_N) == BENCH_N
    return path


@pytest.fixture(scope="session")
def bench_records(bench_file):
    """The records of ``bench_file``, read back plainly (read-only)."""
    records = read_jsonl_gz(bench_file)
    frozen = json.dumps(records, sort_keys=True)
    yield records
    assert json.dumps(records, sort_keys=True) == frozen, \
        "a test changed bench_records"


@pytest.fixture
def registry_with(tmp_path):
    """A registry holding one dataset with BIDS and DataCite metadata,
    extracted: ``(dataset, registry path)``. Function-scoped: tests change
    both."""
    from datalad.api import registry_submit

    from .fixtures import DATASET_DESCRIPTION, call
    ds = make_dataset(tmp_path / "ds", {
        "dataset_description.json": json.dumps(DATASET_DESCRIPTION),
        "datacite.yml": "title: First title\nauthors: []\n"}, to_git=True)
    registry = tmp_path / "registry"
    res = call(registry_submit, [ds.path], dataset=str(registry))
    assert res[0]["status"] == "ok"
    return ds, registry
