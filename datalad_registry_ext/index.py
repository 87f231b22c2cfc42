"""The index: the local cache of registry records (TinyDB).

Layout, one directory per registry (see :mod:`locations`)::

    <user cache dir>/index/<registry key>/
        local.json          the registry's own records (TinyDB)
        local.json.lock     the file lock that serialises its writers
        local.json.sqlite   its search database (derived, see :mod:`engine`)
        sources/<name>-<hash>.json   records synced from one source

Each source of records (the registry itself, every synced source) has a
database file of its own, so that writing one source never rewrites the
others.

The index is derived data and TinyDB is its store of record. Every write
happens in a :meth:`Index.transaction`: the file lock is taken, the database
is read fresh from disk, changed in memory, and written back once, atomically
(:func:`files.atomic_file`). A crash therefore leaves either the old or the
new index, and two processes never lose each other's records. A whole source
can also be replaced by streaming its records (:meth:`Index.write_records`),
without holding them all in memory.

A file that cannot be read as an index (truncated, corrupt, written by
something else) raises :class:`IndexCorrupt`; nothing is ever silently
treated as empty.
"""
from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from datalad_registry_ext.errors import RegistryExtError, storage_error
from datalad_registry_ext.files import (
    atomic_file,
    locked,
    remove_stale_temporaries,
)
from datalad_registry_ext.locations import index_dir
from datalad_registry_ext.records import dumps_storable

RECORDS_TABLE = "records"
META_TABLE = "meta"
FORMAT_VERSION = 1


class IndexCorrupt(RegistryExtError):
    """The index file exists but cannot be read."""


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
        #: the derived search database of this index (see :mod:`engine`)
        self.engine_path = self.path.with_name(self.path.name + ".sqlite")

    # -- reading ---------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def fingerprint(self) -> str | None:
        """Changes whenever the file is rewritten (every write renames a new
        file into place); None when there is no file."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise storage_error(e, self.path, "read") from e
        return f"{st.st_size}-{st.st_mtime_ns}-{st.st_ino}"

    def load(self) -> dict:
        """The raw TinyDB data: ``{table: {doc_id: document}}``."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except UnicodeDecodeError as e:
            raise IndexCorrupt(
                f"the index {self.path} is not UTF-8 text (byte {e.start})"
            ) from e
        except OSError as e:
            raise IndexCorrupt(f"cannot read the index {self.path}: {e}") from e
        if not text.strip():
            raise IndexCorrupt(f"the index {self.path} is empty (truncated?)")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise IndexCorrupt(
                f"the index {self.path} is not valid JSON ({e})") from e
        if not isinstance(data, dict) or not all(
                isinstance(t, dict) for t in data.values()):
            raise IndexCorrupt(
                f"the index {self.path} does not hold TinyDB tables")
        return data

    def records(self) -> list[dict]:
        """Every record; IndexCorrupt if one is not a record at all."""
        return _checked_records(self.path, self.load())

    def meta(self) -> dict:
        meta = self.load().get(META_TABLE, {}).get("1", {})
        if not isinstance(meta, dict):
            raise IndexCorrupt(f"the index {self.path} has a meta table of "
                               "the wrong shape")
        return dict(meta)

    # -- writing ---------------------------------------------------------------
    @contextmanager
    def locked(self):
        """Hold the index's file lock (serialises writers across processes).

        Temporary files that a writer killed mid-write left behind are
        removed once the lock is ours.
        """
        with locked(self.lock_path, what=f"the index {self.path}") as since:
            remove_stale_temporaries(self.path, since)
            remove_stale_temporaries(self.engine_path, since)
            yield

    @contextmanager
    def transaction(self, fresh: bool = False) -> Iterator["IndexTransaction"]:
        """Lock, load fresh, yield an editable view, write atomically once.

        With ``fresh``, start from an empty database instead of the file (for
        a rebuild, which must work even when the file is corrupt). If the
        block raises, nothing is written.
        """
        with self.locked():
            data = {} if fresh else self.load()
            if not fresh:
                _checked_records(self.path, data)
            storage = _MemoryStorage(data)
            if fresh:
                storage.dirty = True
            db = TinyDB(storage=lambda: storage)
            txn = IndexTransaction(db)
            yield txn
            if storage.dirty:
                with atomic_file(self.path, "w") as f:
                    f.write(dumps_storable(storage.data))

    def write_records(self, records: Iterable[str], meta: dict) -> int:
        """Replace every record and the meta table with ``records`` (each
        the JSON text of one record), streamed: one record in memory at a
        time. Call with :meth:`locked` held. Returns the record count."""
        n = 0
        with atomic_file(self.path, "w") as f:
            f.write('{"%s":{' % RECORDS_TABLE)
            for text in records:
                if n:
                    f.write(",")
                n += 1
                f.write(f'"{n}":')
                f.write(text)
            f.write('},"%s":{"1":' % META_TABLE)
            f.write(json.dumps(dict(meta, format=FORMAT_VERSION),
                               ensure_ascii=False, separators=(",", ":")))
            f.write("}}")
        return n


def _checked_records(path: Path, data: dict) -> list[dict]:
    records = list(data.get(RECORDS_TABLE, {}).values())
    for rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("url"), str):
            raise IndexCorrupt(f"the index {path} holds a record of the "
                               f"wrong shape ({str(rec)[:60]!r})")
    return records


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
    return Index(index_dir(registry_path) / "local.json")


def source_index(registry_path, source: str) -> Index:
    """The index of the records synced from one source (file or URL)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.rstrip("/").rsplit("/", 1)[-1])
    digest = hashlib.sha256(source.encode()).hexdigest()[:10]
    return Index(index_dir(registry_path) / "sources" / f"{stem[:40]}-{digest}.json")


def all_indexes(registry_path) -> list[Index]:
    """The registry's own index first, then every synced source's."""
    sources = sorted((index_dir(registry_path) / "sources").glob("*.json"))
    return [local_index(registry_path), *(Index(p) for p in sources)]
