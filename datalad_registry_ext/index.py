"""The index: the local cache of registry records (TinyDB).

Layout, one directory per registry (see :mod:`locations`)::

    <user cache dir>/index/<registry key>/
        local.json          the registry's own records (TinyDB)
        local.json.lock     the file lock that serialises its writers
        sources/<name>-<hash>.json   records synced from one source

Each source of records (the registry itself, later every synced remote
registry) has a database file of its own, so that writing one source never
rewrites the others.

The index is derived data. Every write happens in a :func:`Index.transaction`:
the file lock is taken, the database is read fresh from disk, changed in
memory, and written back once, to a temporary file that is then renamed over
the old one. A crash therefore leaves either the old or the new index, never
a half-written one, and two processes never lose each other's records.

A file that cannot be read as an index (truncated, corrupt, written by
something else) raises :class:`IndexCorrupt`; nothing is ever silently
treated as empty.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

RECORDS_TABLE = "records"
META_TABLE = "meta"
FORMAT_VERSION = 1

# waiting longer than this for another writer means something is stuck
LOCK_TIMEOUT = 600


# marshal's format is Python-version specific: a new Python rebuilds the cache
_SEARCH_CACHE_FORMAT = f"registry-ext-search-1-py{sys.version_info[0]}.{sys.version_info[1]}"


def light_record(record: dict) -> dict:
    """A record without metadata content: ``extractors`` lists the names."""
    light = {k: v for k, v in record.items() if k != "metadata"}
    light["extractors"] = sorted({m.get("extractor_name") for m in
                                  record.get("metadata") or []
                                  if isinstance(m, dict)} - {None})
    return light


class IndexCorrupt(RuntimeError):
    """The index file exists but cannot be read."""


class IndexLocked(RuntimeError):
    """Another process held the index lock for too long."""


class _MemoryStorage(Storage):
    """TinyDB storage over a dict loaded once and written back by us.

    TinyDB calls ``read``/``write`` around every operation; holding the data in
    memory makes a batch of N updates one disk write instead of N.
    """

    def __init__(self, data: dict):
        self.data = data
        self.dirty = False

    def read(self):
        return self.data

    def write(self, data):
        self.data = data
        self.dirty = True


class Index:
    """One TinyDB database of records, e.g. a registry's own records."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # -- reading ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict:
        """The raw TinyDB data: ``{table: {doc_id: document}}``."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise IndexCorrupt(f"cannot read the index {self.path}: {e}") from e
        if not text.strip():
            raise IndexCorrupt(f"the index {self.path} is empty (truncated?)")
        try:
            data = json.loads(text)
        except ValueError as e:
            raise IndexCorrupt(
                f"the index {self.path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or not all(
                isinstance(t, dict) for t in data.values()):
            raise IndexCorrupt(
                f"the index {self.path} does not hold TinyDB tables")
        return data

    def records(self) -> list[dict]:
        return list(self.load().get(RECORDS_TABLE, {}).values())

    # -- searching -------------------------------------------------------------
    @property
    def search_cache_path(self) -> Path:
        return self.path.with_name(self.path.name + ".search")

    def _fingerprint(self):
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def searchable(self):
        """``(SearchView, light records)`` of this index, fast.

        The precomputed search state and the records without metadata
        content are kept in a derived file next to the index
        (``<index>.search``, Python's marshal format), valid as long as the
        index file is unchanged; otherwise it is rebuilt from the index and
        rewritten. Light records carry ``extractors`` (names) instead of
        ``metadata``; :meth:`full_records` gives the complete ones.
        """
        from datalad_registry_ext.query import SearchView
        fingerprint = self._fingerprint()
        if fingerprint is None:
            return SearchView([]), []
        cached = self._read_search_cache(fingerprint)
        if cached is not None:
            return SearchView.from_state(cached["state"]), cached["light"]
        records = self.records()
        view = SearchView(records)
        light = [light_record(r) for r in records]
        # only cache what matches the file as it still is
        if self._fingerprint() == fingerprint:
            self._write_search_cache(fingerprint, view.to_state(), light)
        return view, light

    def _read_search_cache(self, fingerprint):
        import marshal
        try:
            data = marshal.loads(self.search_cache_path.read_bytes())
        except (OSError, EOFError, ValueError, TypeError):
            return None
        if not isinstance(data, dict) or data.get("format") != _SEARCH_CACHE_FORMAT \
                or data.get("fingerprint") != fingerprint:
            return None
        return data

    def _write_search_cache(self, fingerprint, state, light) -> None:
        import marshal
        payload = marshal.dumps({"format": _SEARCH_CACHE_FORMAT,
                                 "fingerprint": fingerprint, "state": state,
                                 "light": light})
        target = self.search_cache_path
        try:
            fd, tmp = tempfile.mkstemp(prefix=target.name + ".",
                                       suffix=".tmp", dir=target.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            os.replace(tmp, target)
        except OSError:
            # a cache we cannot write only costs time
            if "tmp" in locals() and os.path.exists(tmp):
                os.unlink(tmp)

    def meta(self) -> dict:
        return dict(self.load().get(META_TABLE, {}).get("1", {}))

    # -- writing ---------------------------------------------------------------
    @contextmanager
    def locked(self, timeout: float = LOCK_TIMEOUT):
        """Hold the index's file lock (serialises writers across processes)."""
        from fasteners import InterProcessLock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = InterProcessLock(str(self.lock_path))
        if not lock.acquire(timeout=timeout):
            raise IndexLocked(
                f"another process has held the index lock {self.lock_path} "
                f"for more than {timeout:.0f} s")
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def transaction(self, fresh: bool = False) -> Iterator["IndexTransaction"]:
        """Lock, load fresh, yield an editable view, write atomically once.

        With ``fresh``, start from an empty database instead of the file (for
        a rebuild, which must work even when the file is corrupt). If the
        block raises, nothing is written.
        """
        with self.locked():
            storage = _MemoryStorage({} if fresh else self.load())
            if fresh:
                storage.dirty = True
            db = TinyDB(storage=lambda: storage)
            txn = IndexTransaction(db)
            yield txn
            if storage.dirty:
                self._write_atomically(storage.data)

    def _write_atomically(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


class IndexTransaction:
    """Record-level operations on an index inside a transaction.

    Records are identified by their ``url``.
    """

    def __init__(self, db: TinyDB):
        self.db = db
        self.table = db.table(RECORDS_TABLE)
        self._ids = {doc["url"]: doc.doc_id for doc in self.table.all()}

    def get(self, url: str) -> dict | None:
        doc_id = self._ids.get(url)
        if doc_id is None:
            return None
        return dict(self.table.get(doc_id=doc_id))

    def all(self) -> list[dict]:
        return [dict(d) for d in self.table.all()]

    def put(self, record: dict) -> None:
        """Insert or replace the record with this ``url``."""
        doc_id = self._ids.get(record["url"])
        if doc_id is None:
            self._ids[record["url"]] = self.table.insert(record)
        else:
            self.table.remove(doc_ids=[doc_id])
            self.table.insert(Document(record, doc_id=doc_id))

    def remove(self, url: str) -> bool:
        doc_id = self._ids.pop(url, None)
        if doc_id is None:
            return False
        self.table.remove(doc_ids=[doc_id])
        return True

    def replace_all(self, records) -> None:
        records = list(records)
        self.table.truncate()
        ids = self.table.insert_multiple(records)
        self._ids = {rec["url"]: i for rec, i in zip(records, ids)}

    def set_meta(self, **values) -> None:
        meta = self.db.table(META_TABLE)
        current = dict(meta.get(doc_id=1) or {})
        current.update(values, format=FORMAT_VERSION)
        meta.upsert(Document(current, doc_id=1))

    def meta(self) -> dict:
        return dict(self.db.table(META_TABLE).get(doc_id=1) or {})


def local_index(registry_path) -> Index:
    """The index of a registry's own records."""
    from datalad_registry_ext.locations import index_dir
    return Index(index_dir(registry_path) / "local.json")


def source_index(registry_path, source: str) -> Index:
    """The index of the records synced from one source (file or URL)."""
    import hashlib
    import re
    from datalad_registry_ext.locations import index_dir
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.rstrip("/").rsplit("/", 1)[-1])
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return Index(index_dir(registry_path) / "sources" / f"{stem[:40]}-{digest}.json")


def all_indexes(registry_path) -> list[Index]:
    """The registry's own index first, then every synced source's."""
    from datalad_registry_ext.locations import index_dir
    sources = sorted((index_dir(registry_path) / "sources").glob("*.json"))
    return [local_index(registry_path), *(Index(p) for p in sources)]
