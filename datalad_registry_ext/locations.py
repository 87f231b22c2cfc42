"""Where the extension keeps its files (all under platformdirs' user dirs).

- the default registry superdataset: ``<user data dir>/registry``
- the index of a registry:            ``<user cache dir>/index/<key>/``
- the clone cache:                    ``<user cache dir>/clones/<key>/<path>``

``<key>`` is derived from the registry's absolute path, so that every
registry has its own index and clones and two registries never mix.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import platformdirs

APPNAME = "datalad-registry-ext"


def user_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APPNAME, appauthor=False))


def user_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir(APPNAME, appauthor=False))


def default_registry_path() -> Path:
    return user_data_dir() / "registry"


def registry_key(registry_path: Path | str) -> str:
    """A readable, unique directory name for one registry."""
    path = Path(registry_path).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.name) or "registry"
    return f"{name}-{digest}"


def index_dir(registry_path: Path | str) -> Path:
    return user_cache_dir() / "index" / registry_key(registry_path)


def clone_cache_dir(registry_path: Path | str) -> Path:
    return user_cache_dir() / "clones" / registry_key(registry_path)
