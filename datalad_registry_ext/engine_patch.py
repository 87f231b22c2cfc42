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
:meth:`texts`), the order ranks and the unique statistics' ranks are those
a build computes, and the full-text indexes lose the rows of removed
records through FTS5's ``delete`` command, given exactly the folded texts
they were filled with (``engine._FTS_FILL``). Only the row ids differ from
a fresh build (removed rows leave gaps), and nothing depends on them being
dense.

The file itself is never changed: readers open it ``immutable=1`` (and map
it), so a change in place would show them pages of two states; the copy
replaces it atomically. Nothing is changed before :meth:`finish`: leaving
the block otherwise removes the copy.

What a small patch costs is kept small (13,000 records, 100 changed). The
copy (~270 MB) is the one cost that grows with the database, so everything
else is done while it is made, in a thread (``background=True``; the
kernel's work, no GIL held), and what does not depend on the changes is
read in another one meanwhile (the rows, their ranks and order keys; the
caller waits for the service then):

- :meth:`remove` and :meth:`add` only take note (the rows of an added
  record are rendered at once, in Python); what they ask of the database
  -- which rows hold a URL, the stored texts (:meth:`stored`,
  :meth:`texts`, the index file's content) -- is read from the database
  as it is, on a read-only connection of its own, never from the copy;
- :meth:`finish` first computes, from the database as it is, everything
  the copy is to be changed by: the order ranks of every record, as
  ``Builder._ranks`` does, from the order keys of a table of the database
  (``okey``: ``engine._order_values`` of each row, as JSON, written by the
  build and kept current by every patch -- reading them from the records
  again cost the first patch of a database ~0.4 s; the table is trusted
  only when ``meta`` says it was written with the database's current
  fingerprint) -- except where records were only updated and kept their
  value of an order key: by that key every row keeps its rank, and the new
  row of a record takes the old one's (:meth:`Patcher._twins`); and the
  unique statistics' ranks (``engine._GROUP_RANKS``, the same SQL over
  temporary views of the rows to be); then, the copy complete, it writes
  the rows and only the rank values that differ (an UPDATE of every rank
  of every row costs ~1 s: 12 indexed columns);
- the full-text indexes change by one statement for all removed records
  and one for all added ones, in row order: FTS5 starts a new segment with
  every statement and whenever a row id goes down, and a build turns its
  merges off, so one statement per record left ~200 segments per patch
  of 100, and after ~10 patches FTS5's limit of 2000 segments made every
  further patch fail ("database or disk is full"). Now two per patch, and
  above :data:`FTS_SEGMENTS` a patch merges them all.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading

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
#: the order keys of each row (see the module doc), in a database built
#: before the build wrote them
_KEYS_SCHEMA = E._OKEY_SCHEMA
#: rows per statement where a statement names many (SQLite's limit of
#: parameters was 999 before 3.32)
_CHUNK = 500


def _chunks(items: list):
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class _Added:
    """The rows of a record :meth:`Patcher.add` took note of."""
    __slots__ = ("rid", "url", "rec", "txt", "sub", "md", "doc", "mdid",
                 "keys", "py")

    def __init__(self, rid, url, rows, keys, api_id, md_ids):
        self.rid, self.url, self.keys = rid, url, keys
        self.rec, self.txt, self.sub, self.md, doc, self.py = rows
        self.doc = doc + (api_id,)
        self.mdid = md_ids

    @property
    def text(self) -> str:
        return self.doc[3]


class Patcher:
    """A patched copy of the search database ``db_path``, which must have
    been built from the data ``fingerprint`` names (else EngineStale or
    EngineDamaged, as :meth:`Engine.open`). With ``background``, the copy
    is made in a thread, and :meth:`finish` waits for it. Call with the
    index's lock held: the database must not be replaced meanwhile."""

    def __init__(self, db_path, fingerprint: str, *,
                 background: bool = False):
        self.db_path = os.fspath(db_path)
        eng = Engine.open(self.db_path, fingerprint)
        try:
            self.fts = bool(int(eng.fts))
            self._py = set(eng._py_rids)
        finally:
            eng.close()
        self.problems: list = []
        self._done = False
        self._finished = False
        self._db = None
        self._src = None
        self._copier = None
        self._copy_error = None
        self._reader = None
        #: what the ranks are computed from (_base), or its exception
        self._base_result = None
        #: rids of the database's rows removed
        self._removed: set = set()
        #: {rid: _Added} of the rows added, rids ascending
        self._added: dict = {}
        self.removed = 0
        self.added = 0
        # the database as it is, read-only: what the patch asks of it is
        # read here, while the copy is made
        try:
            src = self._src = self._connect_source()
            meta = dict(src.execute("SELECT key, value FROM meta"))
            tables = {r for r, in src.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            last = src.execute("SELECT max(rid) FROM doc").fetchone()[0]
        except sqlite3.Error as e:
            self._close_src()
            raise EngineError(f"cannot read the search database "
                              f"{self.db_path}: {e}") from e
        if int(meta["fts"]) and not self.fts:
            # its FTS index cannot be kept current here: rebuild instead
            self._close_src()
            raise EngineError(f"the search database {self.db_path} has a "
                              "full-text index this SQLite cannot update")
        # keys not written by the patch or build that made this database
        # (another version's, or none): not to be trusted
        self._okey = "okey" in tables and meta.get("okey") is not None \
            and meta.get("okey") == meta.get("fingerprint")
        self._next = 0 if last is None else last + 1
        directory, name = os.path.split(os.path.abspath(self.db_path))
        try:
            fd, self.tmp_path = tempfile.mkstemp(prefix=name + ".",
                                                 suffix=".tmp", dir=directory)
        except OSError as e:
            self._close_src()
            raise EngineError(f"cannot copy the search database "
                              f"{self.db_path}: {e.strerror or e}") from e
        os.close(fd)
        if background:
            # the copy (~0.1-0.5 s for 270 MB) is the kernel's work
            # (sendfile, no GIL held): it overlaps the caller's requests
            # and everything but the writing of the changes
            self._copier = threading.Thread(target=self._copy, daemon=True,
                                            name="patcher-copy")
            self._copier.start()
            # and what the ranks are computed from is read meanwhile (the
            # caller waits for the service: ~0.1 s of Python off its way)
            self._reader = threading.Thread(target=self._read_base,
                                            daemon=True, name="patcher-read")
            self._reader.start()
            return
        self._copy()
        self._ready()

    def _connect_source(self) -> sqlite3.Connection:
        """A read-only connection to the database as it is."""
        src = sqlite3.connect(E._uri(self.db_path), uri=True,
                              check_same_thread=False, isolation_level=None)
        try:
            # not mapped (as Engine's are): a patch reads most of the file
            # once, and mapped pages would count as this process's memory
            src.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error:
            src.close()
            raise
        return src

    def _close_src(self) -> None:
        if self._src is not None:
            try:
                self._src.close()
            except sqlite3.Error:  # pragma: no cover
                pass
            self._src = None

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
        return db

    def _source(self) -> sqlite3.Connection:
        if self._done:
            raise EngineError("this patcher is finished")
        return self._src

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._done:
            self.abort()
        return False

    def _or_abort(self, doing: str):
        """On any failure of the step, discard the copy (the database stays
        as it was) and raise EngineError naming the file."""
        return E.aborting(self, doing)

    def _failed(self, e) -> EngineError:
        return EngineError(f"cannot update the search database "
                           f"{self.db_path} (temporary file "
                           f"{self.tmp_path}): {e}")

    # -- the records as they are to be ----------------------------------------

    def _py_urls(self):
        """``(rid, url, stored text)`` of the database's rows without a url
        column (a URL SQLite cannot hold: read from the record)."""
        for rid, full in self._source().execute(
                'SELECT rid, "full" FROM doc WHERE url IS NULL'):
            if rid not in self._removed:
                yield rid, json.loads(full).get("url"), full

    def _find(self, urls) -> list:
        """``(rid, url, stored text)`` of the rows holding these URLs, those
        of the database (not removed) first, then those added."""
        urls = [u for u in dict.fromkeys(urls) if isinstance(u, str)]
        src = self._source()
        found = []
        with self._or_abort("read"):
            for chunk in _chunks(urls):
                found += [r for r in src.execute(
                    f'SELECT rid, url, "full" FROM doc WHERE url IN '
                    f'({_marks(len(chunk))})', chunk)
                    if r[0] not in self._removed]
            if self._py and urls:
                wanted = set(urls)
                found += [r for r in self._py_urls() if r[1] in wanted]
        if self._added:
            wanted = set(urls)
            found += [(a.rid, a.url, a.text) for a in self._added.values()
                      if a.url in wanted]
        return found

    def rids(self, urls) -> list[int]:
        """The rows of the records with these URLs."""
        return [rid for rid, _, _ in self._find(urls)]

    def remove(self, urls) -> int:
        """Remove the records with these URLs; how many there were."""
        self._source()
        rids = self.rids(urls)
        for rid in rids:
            if self._added.pop(rid, None) is None:
                self._removed.add(rid)
            self._py.discard(rid)
        self.removed += len(rids)
        return len(rids)

    def add(self, record: dict, json_text: str | None = None) -> None:
        """Add a record after the last one (as :meth:`Builder.add`)."""
        self._source()
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
        added = _Added(rid, record.get("url"), rows, keys, api_id, md_ids)
        self._added[rid] = added
        if added.py:
            self._py.add(rid)
        self._next += 1
        self.added += 1

    def docs(self):
        """``(url, stored JSON text)`` of every record, in row order."""
        cur = self._source().cursor()
        removed = self._removed
        for rid, url, full in cur.execute(
                'SELECT rid, url, "full" FROM doc ORDER BY rid'):
            if rid not in removed:
                yield (json.loads(full).get("url") if url is None
                       else url), full
        for a in list(self._added.values()):
            yield a.url, a.text

    def stored(self, urls=None) -> dict:
        """``{url: stored JSON text}`` of the records with these URLs (None:
        of every record)."""
        if urls is None:
            return dict(self.docs())
        return {url: text for _, url, text in self._find(urls)}

    def texts(self):
        """The stored JSON texts of every record, in row order: what the
        index file is to hold, in this order."""
        cur = self._source().cursor()
        removed = self._removed
        for rid, full in cur.execute(
                'SELECT rid, "full" FROM doc ORDER BY rid'):
            if rid not in removed:
                yield full
        for a in list(self._added.values()):
            yield a.text

    # -- what the copy is to be changed by -----------------------------------

    def _read_base(self) -> None:
        """_base(), on a connection of its own (in a thread)."""
        try:
            src = self._connect_source()
            try:
                self._base_result = self._base(src)
            finally:
                src.close()
        except BaseException as e:  # raised by _plan(), in its thread
            self._base_result = e

    def _base(self, src) -> dict:
        """What the ranks are computed from, whatever changes: every row's
        ranks as they are (``rec``), the rows (``doc``) and their order
        keys -- those of the ``okey`` table where it is current and
        complete, else every row's from its light record (``rewrite``:
        okey is to be written afresh)."""
        group = [c for c, _ in E._GROUP_RANKS]
        columns = ", ".join(E._RANK_COLUMNS + group)
        ranks = src.execute(f"SELECT rid, {columns} FROM rec "
                            f"ORDER BY rid").fetchall()
        rids = [r for r, in src.execute("SELECT rid FROM doc ORDER BY rid")]
        known = {}
        if self._okey:
            rows = src.execute("SELECT rid, k FROM okey").fetchall()
            try:  # one parse: 13,000 json.loads calls cost ~0.25 s
                loaded = json.loads("[" + ",".join(k for _, k in rows) + "]")
                known = {rid: (tuple(tie), vals)
                         for (rid, _), (tie, vals) in zip(rows, loaded)}
            except (ValueError, TypeError):
                known = {}  # unreadable: computed again below
        rewrite = not all(r in known for r in rids)
        if rewrite:
            known = dict(self._light_keys(src))
        return dict(ranks=ranks, rids=rids, known=known, rewrite=rewrite)

    def _light_keys(self, src):
        """(rid, the order keys) of every row of the database, from its
        light record."""
        # the order keys by json_extract (SQLite parses, in C), each with
        # its JSON type; a record with a type that json_extract renders
        # otherwise than json.loads (true/false, objects, arrays) is
        # parsed in Python: the keys are exactly Builder's
        names = ("url", "source") + tuple(
            k for k in E.ORDER_KEYS if k != "url")
        cols = ", ".join(f"json_extract(light, '$.\"{k}\"'), "
                         f"json_type(light, '$.\"{k}\"')" for k in names)
        odd = {"true", "false", "object", "array"}
        for rid, *row in src.execute(
                f"SELECT rid, {cols} FROM doc ORDER BY rid"):
            if odd.intersection(row[1::2]):
                light, = src.execute(
                    "SELECT light FROM doc WHERE rid = ?", (rid,)).fetchone()
                yield rid, E._order_values(json.loads(light))
            else:
                yield rid, E._order_values(dict(zip(names, row[0::2])))

    @staticmethod
    def _ranks(keys: list, j: int, by_tie: list) -> list:
        """The ranks (ascending, descending) by order key ``j`` of each row,
        as Builder._ranks computes them from the same order keys, in row
        order; ``by_tie``: the rows sorted by their tie-break key."""
        n = len(keys)
        # Builder's sorts, with keys looked up in C (list.__getitem__)
        # rather than by lambdas: ~0.4 s less for 13,000 records
        values = [k[1][j] for k in keys]
        present = [i for i in by_tie if values[i] is not None]
        missing = [i for i in by_tie if values[i] is None]
        columns = []
        for reverse in (False, True):
            order = sorted(present, key=values.__getitem__,
                           reverse=reverse) + missing
            # the rank of each row: the inverse of the permutation
            # ``order``, which is its argsort
            columns.append(sorted(range(n), key=order.__getitem__))
        return columns

    def _twins(self, known: dict, keys: list) -> dict | None:
        """``{added rid: removed rid}`` where every added row replaces a
        removed one of the same tie-break key (a record updated: the same
        URL and source), tie-break keys unique among the rows to be; else
        None. By an order key whose value a twin kept, every row keeps its
        rank and the added one takes its twin's: the order compares the
        rows' positions only between rows of equal value and tie-break key,
        of which there are none."""
        removed = self._removed
        if len(removed) != len(self._added) \
                or not all(r in known for r in removed):
            return None
        ties = [k[0] for k in keys]
        gone = {known[r][0]: r for r in removed}
        if len(gone) != len(removed) or len(set(ties)) != len(ties):
            return None
        twins = {}
        for a in self._added.values():
            r = gone.get(a.keys[0])
            if r is None:
                return None
            twins[a.rid] = r
        return twins

    def _group_ranks(self) -> list:
        """``[(column, {rid: value})]`` of engine._GROUP_RANKS over the rows
        to be: its statements, run on the database as it is with temporary
        views of the same names in front of ``txt`` and ``rec`` (unqualified
        names find the temp schema first) -- the rows not removed and
        those added."""
        src = self._src
        added = list(self._added.values())
        try:
            src.execute("CREATE TEMP TABLE p_del(rid INTEGER PRIMARY KEY)")
            src.executemany("INSERT INTO temp.p_del VALUES (?)",
                            [(r,) for r in self._removed])
            for table, columns, rows in (
                    ("txt", E._TXT_COLUMNS, [a.txt for a in added]),
                    ("rec", E._REC_COLUMNS, [a.rec for a in added])):
                # the same columns, with the same (absent) affinities
                src.execute(f"CREATE TEMP TABLE p_{table} AS SELECT * FROM "
                            f"main.{table} WHERE 0")
                src.executemany(
                    f"INSERT INTO temp.p_{table}({', '.join(columns)}) "
                    f"VALUES ({_marks(len(columns))})", rows)
                src.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM "
                            f"main.{table} WHERE rid NOT IN temp.p_del "
                            f"UNION ALL SELECT * FROM temp.p_{table}")
            return [(column, dict(src.execute(ranking)))
                    for column, ranking in E._GROUP_RANKS]
        finally:
            for kind, name in (("VIEW", "txt"), ("VIEW", "rec"),
                               ("TABLE", "p_txt"), ("TABLE", "p_rec"),
                               ("TABLE", "p_del")):
                src.execute(f"DROP {kind} IF EXISTS temp.{name}")

    def _plan(self) -> dict:
        """Everything the copy is to be changed by, read from the database
        as it is (see the module doc)."""
        if self._reader is not None:
            self._reader.join()
            got = self._base_result
            if isinstance(got, BaseException):
                raise got
        else:
            got = self._base(self._src)
        removed = self._removed
        group = [c for c, _ in E._GROUP_RANKS]
        # the rows with their ranks as they are
        olds, gone = [], {}
        for r in got["ranks"]:
            if r[0] in removed:
                gone[r[0]] = r
            else:
                olds.append(r)
        kept = [r for r in got["rids"] if r not in removed]
        if [r[0] for r in olds] != kept or len(gone) != len(removed):
            raise EngineError(f"the search database {self.db_path} "
                              "lacks rows of records")
        added = list(self._added.values())
        known, rewrite = got["known"], got["rewrite"]
        keys = [known[r] for r in kept] + [a.keys for a in added]
        rids = kept + [a.rid for a in added]
        twins = self._twins(known, keys)
        none = (None,) * (len(E._RANK_COLUMNS) + len(group))
        olds += [(a.rid,) + none for a in added]
        # only the ranks that differ, a column at a time: each column has
        # an index, which an UPDATE naming it rewrites
        updates, by_tie = [], None
        for j in range(len(E.ORDER_KEYS)):
            if twins is not None and all(
                    known[twins[a.rid]][1][j] == a.keys[1][j] for a in added):
                # every twin of the same value: the ranks as they were
                columns = [[(gone[twins[a.rid]][2 * j + d + 1], a.rid)
                            for a in added] for d in (0, 1)]
            else:
                if by_tie is None:
                    ties = [k[0] for k in keys]
                    by_tie = sorted(range(len(keys)), key=ties.__getitem__)
                columns = [[(rank, old[0]) for rank, old in zip(ranks, olds)
                            if rank != old[2 * j + d + 1]]
                           for d, ranks in enumerate(
                               self._ranks(keys, j, by_tie))]
            for d, changed in enumerate(columns):
                if changed:
                    updates.append((E._RANK_COLUMNS[2 * j + d], changed))
        base = 1 + len(E._RANK_COLUMNS)
        for j, (column, values) in enumerate(self._group_ranks()):
            changed = [(values.get(old[0]), old[0]) for old in olds
                       if values.get(old[0]) != old[base + j]]
            if changed:
                updates.append((column, changed))
        return dict(rids=rids, keys=keys, rewrite_keys=rewrite,
                    updates=updates)

    # -- writing -------------------------------------------------------------

    def _write(self, db, plan: dict) -> None:
        """Change the copy: the rows, the full-text indexes, the ranks."""
        removed = sorted(self._removed)
        added = list(self._added.values())
        # the deleted rows' texts go first (FTS5 needs the very texts it
        # indexed), then the rows; many rows per statement
        for chunk in _chunks(removed) if self.fts else ():
            for stmt in _fts_delete(len(chunk)):
                db.execute(stmt, chunk)
        for chunk in _chunks(removed):
            for table in ("rec", "txt", "sub", "doc", "okey", "mdid"):
                db.execute(f"DELETE FROM {table} WHERE rid IN "
                           f"({_marks(len(chunk))})", chunk)
        db.executemany(f"DELETE FROM md WHERE mid BETWEEN ? << "
                       f"{E._MID_BITS} AND (? << {E._MID_BITS}) + "
                       f"{E._MAX_MD}", [(rid, rid) for rid in removed])
        if added:
            db.executemany(
                f"INSERT INTO rec({', '.join(E._REC_COLUMNS)}) VALUES "
                f"({_marks(len(E._REC_COLUMNS))})", [a.rec for a in added])
            db.executemany(
                f"INSERT INTO txt({', '.join(E._TXT_COLUMNS)}) VALUES "
                f"({_marks(len(E._TXT_COLUMNS))})", [a.txt for a in added])
            db.executemany("INSERT INTO sub VALUES (?, ?, ?)",
                           [row for a in added for row in a.sub])
            db.executemany("INSERT INTO md VALUES (?, ?, ?, ?)",
                           [row for a in added for row in a.md])
            db.executemany("INSERT INTO doc VALUES (?, ?, ?, ?, ?)",
                           [a.doc for a in added])
            db.executemany("INSERT INTO mdid VALUES (?, ?, ?)",
                           [row for a in added for row in a.mdid])
            if self.fts:
                # all at once, in row order: one segment (see _fts_delete)
                for stmt in E._FTS_FILL:
                    db.execute(stmt, (added[0].rid, added[-1].rid))
        for t in ("fts_rec", "fts_md") if self.fts else ():
            # each patch leaves two FTS5 segments (the deletions, the
            # additions) that FTS5 does not merge here (a build turns
            # automatic merges off); at its limit of 2000 it answers
            # "database or disk is full". Now and then, one merge of all
            # (~3 s for 13,000 records)
            segments, = db.execute(f"SELECT count(DISTINCT segid) FROM "
                                   f"{t}_idx").fetchone()
            if segments > FTS_SEGMENTS:
                db.execute(f"INSERT INTO {t}({t}) VALUES('optimize')")
        for column, changed in plan["updates"]:
            db.executemany(f"UPDATE rec SET {column} = ? WHERE rid = ?",
                           changed)
        # ASCII JSON: exact for every value _order_values gives (floats,
        # big ints, infinities, texts with lone surrogates)
        if plan["rewrite_keys"]:
            db.execute("DELETE FROM okey")
            stored = zip(plan["rids"], plan["keys"])
        else:
            stored = ((a.rid, a.keys) for a in added)
        db.executemany("INSERT OR REPLACE INTO okey VALUES (?, ?)",
                       [(rid, json.dumps(k)) for rid, k in stored])

    def finish(self, fingerprint: str) -> int:
        """Recompute the ranks, store ``fingerprint``, move the database
        into place; the number of records."""
        if self._done:
            raise EngineError("this patcher is finished")
        with self._or_abort("read"):
            plan = self._plan()  # while the copy is made
        db = self._ready()
        with self._or_abort("write"):
            self._write(db, plan)
            n = len(plan["rids"])
            db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (fingerprint, "fingerprint"), (n, "count"),
                (json.dumps(sorted(self._py)), "py")])
            # the order keys are those of this state (see _base)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('okey', ?)",
                       (fingerprint,))
            # no ANALYZE: the statistics of the copy (from its build) still
            # describe a database that changed by a few records
            db.execute("COMMIT")
            db.close()
            self._close_src()
            os.replace(self.tmp_path, self.db_path)
        self._done = self._finished = True
        return n

    def abort(self) -> None:
        """Discard the copy (idempotent; nothing once finished)."""
        if self._finished:  # the copy is the database now
            return
        self._done = True
        for thread in (self._copier, self._reader):
            if thread is not None:
                thread.join()
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:  # pragma: no cover
                pass
        self._close_src()
        try:
            os.unlink(self.tmp_path)
        except OSError:
            pass
