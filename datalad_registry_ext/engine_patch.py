"""Changing a search database in place of rebuilding it (:mod:`engine`).

A rebuild of 13,000 records costs ~10 s, nearly all of it FTS5 indexing;
an incremental ``registry-sync`` changes a few records of a source, so it
patches a copy of the source's database instead::

    with Patcher(db_path, old_fingerprint) as p:   # a copy, next to db_path
        p.remove(urls)                  # records gone or changed
        for rec, text in changed:
            p.add(rec, text)            # records new or changed
        index.write_records(p.texts(), meta)   # the store of record, same order
        p.finish(index.fingerprint())   # atomically replaces db_path

The patched database answers every query as a build from the records
:meth:`Patcher.texts` yields, in that order, would: the kept records keep
their rows, added ones get rows after the last one (their position in
:meth:`texts`), the order ranks and the unique statistics' ranks are
recomputed for every record, and the full-text indexes lose the rows of
removed records through FTS5's ``delete`` command, given exactly the folded
texts they were filled with (``engine._FTS_FILL``). Only the row ids differ
from a fresh build (removed rows leave gaps), and nothing depends on them
being dense.

Nothing is changed before :meth:`finish`: leaving the block otherwise
removes the copy.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile

from datalad_registry_ext import engine as E
from datalad_registry_ext.engine import Engine, EngineError

_FTS_DELETE = [
    f"INSERT INTO fts_rec(fts_rec, rowid, {', '.join(E.DEFAULT_COLUMNS)}) "
    f"SELECT 'delete', rid, "
    f"{', '.join(E._folded(c) for c in E.DEFAULT_COLUMNS)} FROM txt "
    "WHERE rid = ?",
    f"INSERT INTO fts_md(fts_md, rowid, name_lc, js) SELECT 'delete', mid, "
    f"{E._folded('name_lc')}, {E._folded('js')} FROM md WHERE mid BETWEEN "
    f"? << {E._MID_BITS} AND (? << {E._MID_BITS}) + {E._MAX_MD}",
]


class Patcher:
    """A patched copy of the search database ``db_path``, which must have
    been built from the data ``fingerprint`` names (else EngineStale or
    EngineDamaged, as :meth:`Engine.open`)."""

    def __init__(self, db_path, fingerprint: str):
        self.db_path = os.fspath(db_path)
        eng = Engine.open(self.db_path, fingerprint)
        try:
            self.fts = bool(int(eng.fts))
            self._py = set(eng._py_rids)
        finally:
            eng.close()
        db = sqlite3.connect(E._uri(self.db_path), uri=True)
        try:
            built_fts = int(dict(db.execute("SELECT key, value FROM meta"))
                            ["fts"])
        finally:
            db.close()
        if built_fts and not self.fts:
            # its FTS index cannot be kept current here: rebuild instead
            raise EngineError(f"the search database {self.db_path} has a "
                              "full-text index this SQLite cannot update")
        self.problems: list = []
        self._done = False
        self._db = None
        directory, name = os.path.split(os.path.abspath(self.db_path))
        fd, self.tmp_path = tempfile.mkstemp(prefix=name + ".",
                                             suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            shutil.copyfile(self.db_path, self.tmp_path)
            db = self._db = sqlite3.connect(self.tmp_path,
                                            isolation_level=None)
            db.create_function("fold", 1, E._fold_sql, deterministic=True)
            # a private copy until finish(): no journal needed
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-32768")
            db.execute("BEGIN")
            last = db.execute("SELECT max(rid) FROM doc").fetchone()[0]
            self._next = 0 if last is None else last + 1
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        except BaseException:
            self.abort()
            raise
        self.removed = 0
        self.added = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._done:
            self.abort()
        return False

    def _failed(self, e) -> EngineError:
        return EngineError(f"cannot update the search database "
                           f"{self.db_path} (temporary file "
                           f"{self.tmp_path}): {e}")

    def rids(self, urls) -> list[int]:
        """The rows of the records with these URLs."""
        urls = [u for u in dict.fromkeys(urls) if isinstance(u, str)]
        found = []
        for i in range(0, len(urls), 500):
            chunk = urls[i:i + 500]
            found += [r for r, in self._db.execute(
                f"SELECT rid FROM doc WHERE url IN "
                f"({', '.join('?' * len(chunk))})", chunk)]
        if self._py:
            # a URL SQLite cannot hold has no url column: read the record
            wanted = set(urls)
            for rid, full in self._db.execute(
                    'SELECT rid, "full" FROM doc WHERE url IS NULL'):
                if json.loads(full).get("url") in wanted:
                    found.append(rid)
        return found

    def remove(self, urls) -> int:
        """Remove the records with these URLs; how many there were."""
        db = self._db
        rids = self.rids(urls)
        try:
            for rid in rids:
                if self.fts:
                    db.execute(_FTS_DELETE[0], (rid,))
                    db.execute(_FTS_DELETE[1], (rid, rid))
                for table in ("rec", "txt", "sub", "doc", "mdid"):
                    db.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
                db.execute(f"DELETE FROM md WHERE mid BETWEEN ? << "
                           f"{E._MID_BITS} AND (? << {E._MID_BITS}) + "
                           f"{E._MAX_MD}", (rid, rid))
                self._py.discard(rid)
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        self.removed += len(rids)
        return len(rids)

    def add(self, record: dict, json_text: str | None = None) -> None:
        """Add a record after the last one (as :meth:`Builder.add`)."""
        rid = self._next
        problems: list = []
        try:
            rows = E._record_rows(rid, record, problems, json_text)
            api_id, md_ids = E._api_ids(rid, record)
        # as Builder.add: odd values are a skipped record, not a failure
        except (TypeError, ValueError, AttributeError, KeyError, IndexError,
                RecursionError, OverflowError) as e:
            self.problems.append((rid, record.get("url"),
                                  f"skipped: {type(e).__name__}: {e}"[:300]))
            return
        for p in problems:
            self.problems.append((rid, record.get("url"), p))
        rec, txt, sub, md, doc, py = rows
        db = self._db
        try:
            db.execute(f"INSERT INTO rec({', '.join(E._REC_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(E._REC_COLUMNS))})", rec)
            db.execute(f"INSERT INTO txt({', '.join(E._TXT_COLUMNS)}) VALUES "
                       f"({', '.join('?' * len(E._TXT_COLUMNS))})", txt)
            db.executemany("INSERT INTO sub VALUES (?, ?, ?)", sub)
            db.executemany("INSERT INTO md VALUES (?, ?, ?, ?)", md)
            db.execute("INSERT INTO doc VALUES (?, ?, ?, ?, ?)",
                       doc + (api_id,))
            db.executemany("INSERT INTO mdid VALUES (?, ?, ?)", md_ids)
            if self.fts:
                for stmt in E._FTS_FILL:
                    db.execute(stmt, (rid, rid))
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        if py:
            self._py.add(rid)
        self._next += 1
        self.added += 1

    def docs(self):
        """``(url, stored JSON text)`` of every record, in row order."""
        cur = self._db.cursor()
        for url, full in cur.execute(
                'SELECT url, "full" FROM doc ORDER BY rid'):
            yield (json.loads(full).get("url") if url is None else url), full

    def stored(self, urls=None) -> dict:
        """``{url: stored JSON text}`` of the records with these URLs (None:
        of every record)."""
        if urls is None:
            return dict(self.docs())
        urls = [u for u in dict.fromkeys(urls) if isinstance(u, str)]
        found = {}
        for i in range(0, len(urls), 500):
            chunk = urls[i:i + 500]
            found.update(self._db.execute(
                f'SELECT url, "full" FROM doc WHERE url IN '
                f'({", ".join("?" * len(chunk))})', chunk))
        if self._py and len(found) < len(urls):
            wanted = set(urls) - set(found)
            for rid, full in self._db.execute(
                    'SELECT rid, "full" FROM doc WHERE url IS NULL'):
                url = json.loads(full).get("url")
                if url in wanted:
                    found[url] = full
        return found

    def texts(self):
        """The stored JSON texts of every record, in row order: what the
        index file is to hold, in this order."""
        cur = self._db.cursor()
        for full, in cur.execute('SELECT "full" FROM doc ORDER BY rid'):
            yield full

    def _ranks(self):
        """(ranks..., rid) of every record, as Builder._ranks computes
        them from the same records in row order."""
        rids, keys = [], []
        # the order keys by json_extract (SQLite parses, in C), each with
        # its JSON type; a record with a type that json_extract renders
        # otherwise than json.loads (true/false, objects, arrays) is
        # parsed in Python: the keys are exactly Builder's
        names = ("url", "source") + tuple(
            k for k in E.ORDER_KEYS if k != "url")
        cols = ", ".join(f"json_extract(light, '$.\"{k}\"'), "
                         f"json_type(light, '$.\"{k}\"')" for k in names)
        odd = {"true", "false", "object", "array"}
        for rid, *row in self._db.execute(
                f"SELECT rid, {cols} FROM doc ORDER BY rid"):
            rids.append(rid)
            if odd.intersection(row[1::2]):
                light, = self._db.execute(
                    "SELECT light FROM doc WHERE rid = ?", (rid,)).fetchone()
                keys.append(E._order_values(json.loads(light)))
            else:
                keys.append(E._order_values(dict(zip(names, row[0::2]))))
        n = len(keys)
        by_tie = sorted(range(n), key=lambda i: keys[i][0])
        columns = []
        for j in range(len(E.ORDER_KEYS)):
            present = [i for i in by_tie if keys[i][1][j] is not None]
            missing = [i for i in by_tie if keys[i][1][j] is None]
            for reverse in (False, True):
                order = sorted(present, key=lambda i: keys[i][1][j],
                               reverse=reverse) + missing
                rank = [0] * n
                for pos, i in enumerate(order):
                    rank[i] = pos
                columns.append(rank)
        return zip(*columns, rids)

    def finish(self, fingerprint: str) -> int:
        """Recompute the ranks, store ``fingerprint``, move the database
        into place; the number of records."""
        if self._done:
            raise EngineError("this patcher is finished")
        db = self._db
        try:
            sets = ", ".join(f"{c} = ?" for c in E._RANK_COLUMNS)
            db.executemany(f"UPDATE rec SET {sets} WHERE rid = ?",
                           self._ranks())
            for column, ranking in E._GROUP_RANKS:
                db.execute("CREATE TEMP TABLE k(rid INTEGER PRIMARY KEY, v)")
                db.execute(f"INSERT INTO temp.k {ranking}")
                db.execute(f"UPDATE rec SET {column} = (SELECT v FROM temp.k "
                           "WHERE temp.k.rid = rec.rid)")
                db.execute("DROP TABLE temp.k")
            n = db.execute("SELECT count(*) FROM doc").fetchone()[0]
            db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (fingerprint, "fingerprint"), (n, "count"),
                (json.dumps(sorted(self._py)), "py")])
            # no ANALYZE: the statistics of the copy (from its build) still
            # describe a database that changed by a few records
            db.execute("COMMIT")
            db.close()
            os.replace(self.tmp_path, self.db_path)
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        except OSError as e:
            self.abort()
            raise EngineError(f"cannot write the search database "
                              f"{self.db_path}: {e.strerror or e}") from e
        except BaseException:
            self.abort()
            raise
        self._done = True
        return n

    def abort(self) -> None:
        """Discard the copy (idempotent)."""
        self._done = True
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass
