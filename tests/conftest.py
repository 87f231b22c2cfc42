
import pytest

# Git identity, isolated HOME/gitconfig and DataLad's test UI.
from datalad.conftest import setup_package  # noqa: F401


@pytest.fixture(autouse=True)
def isolated_user_dirs(tmp_path, monkeypatch):
    """Never let a test touch the real user data/cache dirs.

    platformdirs follows XDG_* on Linux; each test gets its own.
    """
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.delenv("DATALAD_REGISTRY_DATASET", raising=False)
    yield
