"""Where records come from besides ``registry-submit``: JSON Lines files.

A JSON Lines file holds one record per line in DataLad-Registry's API v2
shape, with metadata content (the shape of DataLad-Registry's bulk export and
of ``registry-search --export``). Plain or gzip-compressed (recognised by its
content, not its name).

Importing a file replaces every record previously imported from the same
file (records gone from the file are removed) and touches no other source.
Lines that are not valid records are reported with their line number and
skipped; when a URL appears on several lines, the last one wins and the
earlier ones are reported as skipped. A file that cannot be read to its end
(missing, truncated gzip, over a size cap) changes nothing.

The file is read as a stream, twice: once to validate every line and find
the last line of each URL, once to write the source's index file and its
search database (:mod:`engine`) side by side. No more than one record is in
memory at a time.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from urllib.parse import unquote, urlsplit
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator

from datalad import cfg

from datalad_registry_ext import config
from datalad_registry_ext import engine as engine_mod
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.files import atomic_file
from datalad_registry_ext.index import Index, IndexCorrupt, source_index
from datalad_registry_ext.index_sync import rebuild_index
from datalad_registry_ext.records import (
    LOCAL_SOURCE,
    dumps_storable,
    loads_strict,
    normalize_record,
    now_iso,
    scrub,
)
from datalad_registry_ext.registry import is_registry

#: the compression ratio is only judged past this many decompressed bytes
#: (small files compress well for innocent reasons)
RATIO_GRACE = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def _limit(item: str) -> int:
    return int(cfg.obtain(item))


class SourceError(RegistryExtError):
    """A source cannot be read."""


@dataclass
class ImportSummary:
    source: str
    imported: int = 0
    added: int = 0
    removed: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[tuple[int, str]] = field(default_factory=list)


def _open(path: Path) -> tuple[IO[bytes], IO[bytes]]:
    """``(raw file, reader)``: the reader decompresses a gzip file."""
    try:
        raw = open(path, "rb")
        magic = raw.read(2)
        raw.seek(0)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from e
    if magic == b"\x1f\x8b":
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")
    return raw, raw


def _lines(path: Path) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, line)`` of a plain or gzipped file, streamed; a line
    over the record size cap comes as ``(line number, None)``. Raises
    SourceError for a damaged file or one over the size or ratio caps."""
    record_max = _limit(config.RECORD_MAX_BYTES)
    total_max = _limit(config.IMPORT_MAX_BYTES)
    ratio_max = _limit(config.IMPORT_MAX_RATIO)
    raw, f = _open(path)
    total = 0

    def read(limit: int) -> bytes:
        nonlocal total
        try:
            data = f.readline(limit)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(
                f"{path} is a damaged or truncated gzip file ({e}); "
                "nothing was imported") from e
        total += len(data)
        if total > total_max:
            raise SourceError(
                f"{path} holds more than {total_max} bytes "
                f"({config.IMPORT_MAX_BYTES}); nothing was imported")
        if f is not raw and total > RATIO_GRACE \
                and total > ratio_max * max(raw.tell(), 1):
            raise SourceError(
                f"{path} decompresses to more than {ratio_max} times its "
                f"size (a decompression bomb? see {config.IMPORT_MAX_RATIO}); "
                "nothing was imported")
        return data

    n = 0
    try:
        while True:
            line = read(record_max + 1)
            if not line:
                return
            n += 1
            if len(line) > record_max and not line.endswith(b"\n"):
                # too long: skip to the end of the line, a chunk at a time
                while line and not line.endswith(b"\n"):
                    line = read(_CHUNK)
                yield n, None
                continue
            yield n, line
    finally:
        f.close()
        raw.close()


def _records(path: Path, source: str
             ) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line number, record, None)`` or ``(line number, None, problem)``."""
    for n, line in _lines(path):
        if line is None:
            yield n, None, (f"longer than {_limit(config.RECORD_MAX_BYTES)} "
                            f"bytes ({config.RECORD_MAX_BYTES})")
            continue
        if not line.strip():
            continue
        try:
            obj = loads_strict(line)
        except (ValueError, UnicodeDecodeError) as e:
            yield n, None, f"not valid JSON ({e})"
            continue
        except RecursionError:
            yield n, None, "nested too deeply to be read"
            continue
        try:
            yield n, normalize_record(obj, source), None
        except ValueError as e:
            yield n, None, str(e)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _serialize(rec: dict) -> str:
    """A record as the index file stores it (also what its digest is of)."""
    return dumps_storable(rec)


def _scan(path: Path, source: str):
    """``{url: last line}`` and the problems (a URL's earlier lines among
    them: the last line of a URL replaces the earlier ones)."""
    last: dict[str, int] = {}
    problems = []
    for n, rec, problem in _records(path, source):
        if rec is None:
            problems.append((n, problem))
            continue
        url = rec["url"]
        if url in last:
            problems.append((last[url], f"{url} appears again on line {n}, "
                                        "which replaces this line"))
        last[url] = n
    problems.sort()
    return last, problems


def _previous_digests(index: Index) -> dict[str, str]:
    """``{url: digest}`` of what the source's index holds now: from the
    texts its search database stored (no record is parsed), else from the
    index file."""
    fingerprint = index.fingerprint()
    if fingerprint is None:
        return {}
    try:
        with engine_mod.Engine.open(index.engine_path, fingerprint) as eng:
            return {url: _digest(text)
                    for url, text in eng.stored_texts().items()}
    except engine_mod.EngineError:
        pass
    try:
        return {r["url"]: _digest(_serialize(r)) for r in index.records()}
    except IndexCorrupt:  # a damaged previous import is simply replaced
        return {}


class _Repeated(Exception):
    """A URL is on more than one line: import again, knowing the last."""


def import_jsonl(registry: Path, path: Path | str) -> ImportSummary:
    """Replace the records of the source ``path`` in the registry's index."""
    path = Path(path).absolute()
    source = str(path)
    index = source_index(registry, source)
    with index.locked():
        old = _previous_digests(index)
        try:
            return _import(index, path, source, old)
        except _Repeated:
            last, problems = _scan(path, source)
            return _import(index, path, source, old, last, problems)


def _import(index: Index, path: Path, source: str, old: dict[str, str],
            last: dict[str, int] | None = None, problems=None
            ) -> ImportSummary:
    """One pass over the file: each chosen record goes to the index file and
    to its search database. Without ``last`` (which line of each URL to
    keep), a URL seen twice raises _Repeated and nothing is written."""
    summary = ImportSummary(source=source, problems=list(problems or []))
    seen: set[str] = set()
    old = dict(old)
    with engine_mod.Builder(index.engine_path) as builder:
        def chosen() -> Iterator[str]:
            for n, rec, problem in _records(path, source):
                if rec is None:
                    if last is None:
                        summary.problems.append((n, problem))
                    continue
                url = rec["url"]
                if last is None:
                    if url in seen:
                        raise _Repeated(url)
                    seen.add(url)
                elif last.get(url) != n:
                    continue
                text = _serialize(rec)
                prev = old.pop(url, None)
                if prev is None:
                    summary.added += 1
                elif prev == _digest(text):
                    summary.unchanged += 1
                else:
                    summary.updated += 1
                builder.add(rec, text)
                yield text

        summary.imported = index.write_records(chosen(), dict(
            source=source, kind="jsonl", synced=now_iso()))
        builder.finish(index.fingerprint())
    summary.removed = len(old)
    return summary


def _strict_json(rec: dict) -> str:
    """One line of strict JSON: a NaN that reached an index (a legacy
    extractor's own file reading) is written as null, infinities as
    strings."""
    try:
        text = json.dumps(rec, ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(loads_strict(json.dumps(rec)), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them
        text = json.dumps(loads_strict(text), ensure_ascii=True)
    return text


def export_jsonl(records: Iterable[dict], path: Path | str) -> int:
    """Write records as JSON Lines (gzip if the name ends in ``.gz``),
    atomically (:func:`files.atomic_file`). Returns the count."""
    path = Path(path)
    n = 0
    with atomic_file(path, "wb") as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) \
            if path.name.endswith(".gz") else raw
        for rec in records:
            out.write(_strict_json(rec).encode() + b"\n")
            n += 1
        if out is not raw:
            out.close()
    return n


# -- registry-sync ---------------------------------------------------------------------

ACTION = "registry_sync"


def sync(location: Path, source: str | None = None) -> Iterator[dict]:
    """What ``registry-sync`` does: import SOURCE (a JSON Lines file, also
    as a ``file://`` URL), or without one, rebuild the index of the
    registry's own records from the registry. Yields result-shaped
    outcomes."""
    location = Path(location)
    if source is None:
        yield from _rebuild(location)
        return
    path = _source_path(source)
    if path is None:
        yield {"action": ACTION, "path": str(location), "type": "dataset",
               "status": "impossible", "source": scrub(source),
               "message": f"cannot sync from {scrub(source)}: only JSON Lines "
                          "files are supported as sources so far"}
        return
    base = {"action": ACTION, "path": str(path), "type": "file",
            "source": str(path)}
    if path.is_file():
        # -d promises a registry "created on first use"; a missing or
        # unreadable file is reported by the import and creates nothing
        from datalad_registry_ext.registry import ensure_registry
        try:
            ensure_registry(location)
        except RegistryExtError as e:
            yield {"action": ACTION, "path": str(location), "type": "dataset",
                   "source": str(path), "status": e.status, "message": str(e)}
            return
    try:
        summary = import_jsonl(location, path)
    except SourceError as e:
        yield dict(base, status="error", message=str(e))
        return
    for line, problem in summary.problems:
        yield dict(base, status="error", line=line,
                   message=f"{path} line {line}: {problem} (skipped)")

    yield dict(
        base, status="ok", imported=summary.imported, added=summary.added,
        updated=summary.updated, removed=summary.removed,
        unchanged=summary.unchanged, skipped=len(summary.problems),
        message=(f"imported {_count(summary.imported, 'record')} from {path} "
                 f"({summary.added} new, {summary.updated} updated, "
                 f"{summary.removed} removed, "
                 f"{_count(len(summary.problems), 'line')} skipped)"))


def _count(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def _source_path(source: str) -> Path | None:
    """The local file a SOURCE names, or None for a URL of another kind."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(unquote(parts.path)).absolute()
    if parts.scheme and len(parts.scheme) > 1 and parts.netloc:
        return None  # http(s)://, ssh://, ... (a drive letter is not a scheme)
    return Path(source).expanduser().absolute()


def _rebuild(location: Path) -> Iterator[dict]:
    base = {"action": ACTION, "path": str(location), "type": "dataset"}
    if not is_registry(location):
        yield dict(base, status="impossible",
                   message=f"there is no registry at {location} to rebuild "
                           "the index from (registry-submit creates one)")
        return
    n = rebuild_index(location)
    yield dict(base, status="ok", source=LOCAL_SOURCE, records=n,
               message=f"rebuilt the index of {location}: "
                       f"{_count(n, 'record')}")
