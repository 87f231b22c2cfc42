"""Where records come from besides ``registry-submit``: JSON Lines files.

A JSON Lines file holds one record per line in DataLad-Registry's API v2
shape, with metadata content (the shape of DataLad-Registry's bulk export).
Plain or gzip-compressed (recognised by its content, not its name).

Importing a file replaces every record previously imported from the same
file (records gone from the file are removed) and touches no other source.
Lines that are not valid records are reported with their line number and
skipped. A file that cannot be read to its end (missing, truncated gzip)
changes nothing.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from datalad_registry_ext.index import source_index
from datalad_registry_ext.records import normalize_record, now_iso


class SourceError(RuntimeError):
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


def read_jsonl(path: Path | str, source: str) -> tuple[list[dict], list[tuple[int, str]]]:
    """Records of a JSON Lines file, and ``(line number, problem)`` pairs."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(
                f"{path} is a damaged or truncated gzip file ({e}); "
                "nothing was imported") from e
    records, problems, seen = [], [], {}
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            problems.append((n, f"not valid JSON ({e})"))
            continue
        try:
            rec = normalize_record(obj, source)
        except ValueError as e:
            problems.append((n, str(e)))
            continue
        if rec["url"] in seen:
            line, pos = seen[rec["url"]]
            problems.append((n, f"{rec['url']} was already on line {line}; "
                                "this line replaces it"))
            records[pos] = rec
            continue
        seen[rec["url"]] = (n, len(records))
        records.append(rec)
    return records, problems


def import_jsonl(registry: Path, path: Path | str) -> ImportSummary:
    """Replace the records of the source ``path`` in the registry's index."""
    path = Path(path).absolute()
    source = str(path)
    records, problems = read_jsonl(path, source)
    summary = ImportSummary(source=source, problems=problems,
                            imported=len(records))
    index = source_index(registry, source)
    with index.transaction(fresh=True) as txn:
        try:
            old = {r["url"]: r for r in index.records()}
        except Exception:  # a corrupt previous import is simply replaced
            old = {}
        for rec in records:
            prev = old.pop(rec["url"], None)
            if prev is None:
                summary.added += 1
            elif prev == rec:
                summary.unchanged += 1
            else:
                summary.updated += 1
        summary.removed = len(old)
        txn.replace_all(records)
        txn.set_meta(source=source, kind="jsonl", synced=now_iso(),
                     count=len(records))
    # prepare the search cache now, so the first search is fast too
    index.searchable()
    return summary


def export_jsonl(records: Iterable[dict], path: Path | str) -> int:
    """Write records as JSON Lines (gzip if the name ends in ``.gz``).

    Written to a temporary file and renamed, like every write of ours.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp",
                               dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "wb") as raw:
            out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) \
                if path.name.endswith(".gz") else raw
            for rec in records:
                out.write(json.dumps(rec, ensure_ascii=False).encode() + b"\n")
                n += 1
            if out is not raw:
                out.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n
