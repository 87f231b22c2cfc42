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

What a small patch costs is kept small (13,000 records, 100 changed):

- the ranks are computed from every record's order keys, as
  ``Builder._ranks`` does, but the keys come from a table of the patched
  database (``okey``: ``engine._order_values`` of each row, as JSON),
  filled by the first patch of a database as built and kept current by
  every patch: reading them from the light records again costs ~0.4 s.
  The table is trusted only when ``meta`` says it was written with the
  database's current fingerprint (a patch of another version, which
  would not keep it current, leaves another one);
- only the rank values that differ are written, column by column: an
  UPDATE of every rank of every row costs ~1 s (12 indexed columns);
- the copy of the database can be made in a thread (``background=True``)
  while the caller still reads the changes from the network;
- the full-text indexes change by one statement for all removed records
  and one for all added ones, in row order: FTS5 starts a new segment with
  every statement and whenever a row id goes down, and a build turns its
  merges off, so one statement per record left ~200 segments per patch
  of 100, and after ~10 patches FTS5's limit of 2000 segments made every
  further patch fail ("database or disk is full"). Now two per patch, and
  above :data:`FTS_SEGMENTS` a patch merges them all.

The file itself is never changed: readers open it ``immutable=1``, and the
copy replaces it atomically. Nothing is changed before :meth:`finish`:
leaving the block otherwise removes the copy.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
from contextlib import contextmanager

from datalad_registry_ext import engine as E
from datalad_registry_ext.engine import Engine, EngineError



def _fts_delete(n: int) -> list[str]:
    """The statements that remove the rows of ``n`` records (their rids
    the parameters, of each statement) from the full-text indexes: one
    statement for all, in row order -- FTS5 writes a new segment at the
    start of every statement and whenever a row id is lower than the last
    one (one statement per record: ~200 segments per patch of 100)."""
    rids = ", ".join(["(?)"] * n)
    return [
        f"INSERT INTO fts_rec(fts_rec, rowid, {', '.join(E.DEFAULT_COLUMNS)}) "
        f"SELECT 'delete', rid, "
        f"{', '.join(E._folded(c) for c in E.DEFAULT_COLUMNS)} FROM txt "
        f"WHERE rid IN ({', '.join('?' * n)}) ORDER BY rid",
        f"WITH r(rid) AS (VALUES {rids}) "
        f"INSERT INTO fts_md(fts_md, rowid, name_lc, js) SELECT 'delete', "
        f"mid, {E._folded('name_lc')}, {E._folded('js')} FROM r JOIN md ON "
        f"md.mid BETWEEN r.rid << {E._MID_BITS} AND (r.rid << {E._MID_BITS}) "
        f"+ {E._MAX_MD} ORDER BY mid",
    ]


#: FTS5 segments of a full-text index above which a patch merges them
FTS_SEGMENTS = 256
#: the order keys of each row (see the module doc)
_KEYS_SCHEMA = "CREATE TABLE IF NOT EXISTS okey(rid INTEGER PRIMARY KEY, k TEXT)"


class Patcher:
    """A patched copy of the search database ``db_path``, which must have
    been built from the data ``fingerprint`` names (else EngineStale or
    EngineDamaged, as :meth:`Engine.open`). With ``background``, the copy
    is made in a thread, and the first method that needs it waits for
    it."""

    def __init__(self, db_path, fingerprint: str, *,
                 background: bool = False):
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
        self._finished = False
        self._db = None
        self._copier = None
        self._copy_error = None
        #: {rid: order keys} of the rows added (engine._order_values)
        self._new_keys: dict = {}
        #: (first, last) rid of the rows added but not yet in the FTS
        self._unindexed = None
        self.removed = 0
        self.added = 0
        directory, name = os.path.split(os.path.abspath(self.db_path))
        fd, self.tmp_path = tempfile.mkstemp(prefix=name + ".",
                                             suffix=".tmp", dir=directory)
        os.close(fd)
        if background:
            # the copy (~0.3 s for 270 MB) is the kernel's work
            # (sendfile, no GIL held): it overlaps the caller's requests
            self._copier = threading.Thread(target=self._copy, daemon=True,
                                            name="patcher-copy")
            self._copier.start()
            return
        self._copy()
        self._ready()

    def _copy(self) -> None:
        try:
            shutil.copyfile(self.db_path, self.tmp_path)
        except OSError as e:  # reported by _ready(), in the caller's thread
            self._copy_error = e

    def _ready(self) -> sqlite3.Connection:
        """The connection to the copy, once the copy is complete."""
        if self._db is not None:
            return self._db
        if self._done:
            raise EngineError("this patcher is finished")
        if self._copier is not None:
            self._copier.join()
        with self._or_abort("copy"):
            if self._copy_error is not None:
                raise self._copy_error
            db = self._db = sqlite3.connect(self.tmp_path,
                                            isolation_level=None)
            db.create_function("fold", 1, E._fold_sql, deterministic=True)
            # a private copy until finish(): no journal needed
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-32768")
            db.execute("BEGIN")
            db.execute(_KEYS_SCHEMA)
            meta = dict(db.execute("SELECT key, value FROM meta"))
            if meta.get("okey") != meta.get("fingerprint"):
                # keys not written by the patch that made this database
                # (another version's, or none): not to be trusted
                db.execute("DELETE FROM okey")
            last = db.execute("SELECT max(rid) FROM doc").fetchone()[0]
            self._next = 0 if last is None else last + 1
        return db

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._done:
            self.abort()
        return False

    @contextmanager
    def _or_abort(self, doing: str):
        """On any failure of the step, discard the copy (the database stays
        as it was) and raise EngineError naming the file."""
        try:
            yield
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        except OSError as e:
            self.abort()
            raise EngineError(f"cannot {doing} the search database "
                              f"{self.db_path}: {e.strerror or e}") from e
        except BaseException:
            self.abort()
            raise

    def _failed(self, e) -> EngineError:
        return EngineError(f"cannot update the search database "
                           f"{self.db_path} (temporary file "
                           f"{self.tmp_path}): {e}")

    def rids(self, urls) -> list[int]:
        """The rows of the records with these URLs."""
        urls = [u for u in dict.fromkeys(urls) if isinstance(u, str)]
        self._ready()
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
        # in row order: FTS5 writes its pending changes out as a new
        # segment whenever a row id is lower than the last one (100 records
        # in any order: ~100 segments instead of one)
        rids = sorted(self.rids(urls))
        db = self._db
        try:
            self._fill_fts()  # what was added before goes first
            for i in range(0, len(rids), 500) if self.fts else ():
                chunk = rids[i:i + 500]
                for stmt in _fts_delete(len(chunk)):
                    db.execute(stmt, chunk)
            for rid in rids:
                for table in ("rec", "txt", "sub", "doc", "okey"):
                    db.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
                self._new_keys.pop(rid, None)
                db.execute(f"DELETE FROM md WHERE mid BETWEEN ? << "
                           f"{E._MID_BITS} AND (? << {E._MID_BITS}) + "
                           f"{E._MAX_MD}", (rid, rid))
                self._py.discard(rid)
            # mdid has no index on rid: one scan for many rows, not one
            # each (100 records: 0.25 s)
            for i in range(0, len(rids), 500):
                chunk = rids[i:i + 500]
                db.execute(f"DELETE FROM mdid WHERE rid IN "
                           f"({', '.join('?' * len(chunk))})", chunk)
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        self.removed += len(rids)
        return len(rids)

    def add(self, record: dict, json_text: str | None = None) -> None:
        """Add a record after the last one (as :meth:`Builder.add`)."""
        db = self._ready()
        rid = self._next
        problems: list = []
        try:
            rows = E._record_rows(rid, record, problems, json_text)
            keys = E._order_values(record)
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
        except sqlite3.Error as e:
            self.abort()
            raise self._failed(e) from e
        if py:
            self._py.add(rid)
        self._new_keys[rid] = keys
        if self.fts:
            # indexed all at once, by _fill_fts (see _fts_delete: one
            # statement, one segment)
            first = rid if self._unindexed is None else self._unindexed[0]
            self._unindexed = (first, rid)
        self._next += 1
        self.added += 1

    def _fill_fts(self) -> None:
        """Index the rows added since the last call (rids ascending, a
        range: rows are only added after the last one)."""
        if self._unindexed is not None:
            for stmt in E._FTS_FILL:
                self._db.execute(stmt, self._unindexed)
            self._unindexed = None

    def docs(self):
        """``(url, stored JSON text)`` of every record, in row order."""
        cur = self._ready().cursor()
        for url, full in cur.execute(
                'SELECT url, "full" FROM doc ORDER BY rid'):
            yield (json.loads(full).get("url") if url is None else url), full

    def stored(self, urls=None) -> dict:
        """``{url: stored JSON text}`` of the records with these URLs (None:
        of every record)."""
        if urls is None:
            return dict(self.docs())
        urls = [u for u in dict.fromkeys(urls) if isinstance(u, str)]
        self._ready()
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
        cur = self._ready().cursor()
        for full, in cur.execute('SELECT "full" FROM doc ORDER BY rid'):
            yield full

    def _keys(self):
        """(rids in row order, the order keys of each): those of the
        ``okey`` table and of the rows added; where rows lack them (a
        database as built), every row's from its light record, stored."""
        db = self._db
        rows = db.execute("SELECT rid, k FROM okey").fetchall()
        try:  # one parse: 13,000 json.loads calls cost ~0.25 s
            loaded = json.loads("[" + ",".join(k for _, k in rows) + "]")
            known = {rid: (tuple(tie), vals)
                     for (rid, _), (tie, vals) in zip(rows, loaded)}
        except (ValueError, TypeError):
            known = {}  # unreadable: computed again below
        known.update(self._new_keys)
        rids = [r for r, in db.execute("SELECT rid FROM doc ORDER BY rid")]
        if all(r in known for r in rids):
            keys = [known[r] for r in rids]
            stored = self._new_keys.items()
        else:
            rids, keys = self._light_keys()
            db.execute("DELETE FROM okey")
            stored = zip(rids, keys)
        # ASCII JSON: exact for every value _order_values gives (floats,
        # big ints, infinities, texts with lone surrogates)
        db.executemany("INSERT OR REPLACE INTO okey VALUES (?, ?)",
                       [(rid, json.dumps(k)) for rid, k in stored])
        return rids, keys

    def _light_keys(self):
        """(rids in row order, the order keys of each) from every row's
        light record."""
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
        return rids, keys

    def _ranks(self):
        """(rids in row order, a list per rank column of each row's rank),
        as Builder._ranks computes them from the same records in row
        order."""
        rids, keys = self._keys()
        n = len(keys)
        # Builder's sorts, with keys looked up in C (list.__getitem__)
        # rather than by lambdas: ~0.4 s less for 13,000 records
        ties = [k[0] for k in keys]
        by_tie = sorted(range(n), key=ties.__getitem__)
        columns = []
        for j in range(len(E.ORDER_KEYS)):
            values = [k[1][j] for k in keys]
            present = [i for i in by_tie if values[i] is not None]
            missing = [i for i in by_tie if values[i] is None]
            for reverse in (False, True):
                order = sorted(present, key=values.__getitem__,
                               reverse=reverse) + missing
                # the rank of each row: the inverse of the permutation
                # ``order``, which is its argsort
                columns.append(sorted(range(n), key=order.__getitem__))
        return rids, columns

    def finish(self, fingerprint: str) -> int:
        """Recompute the ranks, store ``fingerprint``, move the database
        into place; the number of records."""
        if self._done:
            raise EngineError("this patcher is finished")
        db = self._ready()
        with self._or_abort("write"):
            self._fill_fts()
            for t in ("fts_rec", "fts_md") if self.fts else ():
                # each patch leaves two FTS5 segments (the deletions, the
                # additions) that FTS5 does not merge here (a build turns
                # automatic merges off); at its limit of 2000 it answers
                # "database or disk is full". Now and then, one merge of
                # all (~3 s for 13,000 records)
                segments, = db.execute(f"SELECT count(DISTINCT segid) FROM "
                                       f"{t}_idx").fetchone()
                if segments > FTS_SEGMENTS:
                    db.execute(f"INSERT INTO {t}({t}) VALUES('optimize')")
            rids, columns = self._ranks()
            # rec has the rows of doc: the old ranks, in row order
            olds = list(zip(*db.execute(
                f"SELECT rid, {', '.join(E._RANK_COLUMNS)} FROM rec "
                "ORDER BY rid"))) or [()] * (1 + len(E._RANK_COLUMNS))
            if list(olds.pop(0)) != rids:
                raise EngineError(f"the search database {self.db_path} "
                                  "lacks rows of records")
            # only the ranks that differ, a column at a time: each column
            # has an index, which an UPDATE naming it rewrites
            for column, ranks, was in zip(E._RANK_COLUMNS, columns, olds):
                if list(was) != ranks:
                    db.executemany(
                        f"UPDATE rec SET {column} = ? WHERE rid = ?",
                        [(rank, rid) for rid, rank, before
                         in zip(rids, ranks, was) if rank != before])
            for column, ranking in E._GROUP_RANKS:
                db.execute("CREATE TEMP TABLE k(rid INTEGER PRIMARY KEY, v)")
                db.execute(f"INSERT INTO temp.k {ranking}")
                value = "(SELECT v FROM temp.k WHERE temp.k.rid = rec.rid)"
                db.execute(f"UPDATE rec SET {column} = {value} WHERE "
                           f"{column} IS NOT {value}")
                db.execute("DROP TABLE temp.k")
            n = db.execute("SELECT count(*) FROM doc").fetchone()[0]
            db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (fingerprint, "fingerprint"), (n, "count"),
                (json.dumps(sorted(self._py)), "py")])
            # the order keys are those of this state (see _ready)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('okey', ?)",
                       (fingerprint,))
            # no ANALYZE: the statistics of the copy (from its build) still
            # describe a database that changed by a few records
            db.execute("COMMIT")
            db.close()
            os.replace(self.tmp_path, self.db_path)
        self._done = self._finished = True
        return n

    def abort(self) -> None:
        """Discard the copy (idempotent; nothing once finished)."""
        if self._finished:  # the copy is the database now
            return
        self._done = True
        if self._copier is not None:
            self._copier.join()
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass
