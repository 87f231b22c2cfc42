"""Where the extension keeps its files (all under platformdirs' user dirs).

- the default registry superdataset: ``<user data dir>/registry``
- the index of a registry:            ``<user cache dir>/index/<key>/``
- the clone cache, one per user, shared by all registries:
  ``<user cache dir>/clones/by-url/<path>@<hash of the canonical URL>``
- the lock taken while a registry is created (its own lock lives in its
  ``.git``, which does not exist yet): ``<user cache dir>/index/<key>/create.lock``

``<key>`` is derived from the registry's absolute path, so that every
registry has its own index and two registries never mix. Earlier versions
kept one clone cache per registry, ``<user cache dir>/clones/<key>/<path>``
(:func:`legacy_clone_cache_dir`); a clone found there is moved into the
shared cache when its registry next uses it.
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


def clone_cache_dir() -> Path:
    """The user's clone cache, shared by all registries (a directory of its
    own below ``clones/``, so the per-registry caches of earlier versions
    beside it are never mistaken for shared clones)."""
    return user_cache_dir() / "clones" / "by-url"


def legacy_clone_cache_dir(registry_path: Path | str) -> Path:
    """Where earlier versions kept the clones of one registry."""
    return user_cache_dir() / "clones" / registry_key(registry_path)


def creation_lock_path(registry_path: Path | str) -> Path:
    """The lock file that serialises creating the registry at
    ``registry_path`` (one per registry, outside the registry itself)."""
    return index_dir(registry_path) / "create.lock"
