"""Where records come from besides ``registry-submit``: JSON Lines files
and DataLad-Registry services; ``registry-sync``, named sources,
``registry-submit --to``.

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

A DataLad-Registry service (:mod:`remote`) is synced the same way: under
the source index's lock its records are downloaded to a temporary JSON Lines
file next to the index file (``*.download.tmp``, removed as a stale
temporary file if the process dies) and imported as above only when the
download is complete, so a failure leaves the previous records in place.

Every source has a *name*, the records' ``source`` field: a service's is
``--name`` or its host[:port]; a JSON Lines file's is ``--name`` or, when
unnamed, its absolute path (as before names existed). Named sources are
remembered in the registry's local git config
(``datalad.registry.source.<name>.url`` and ``.query``). A source's index
file is keyed by its *location* (a file's absolute path, a service's base
URL, :func:`remote.api_base`), so every spelling of one location is one
source.

One source can also move to another location, and is then recognised, not
duplicated: ``--name`` of a source of the same kind synced from elsewhere
moves it there; a registry superdataset is recognised by its dataset id
(:mod:`superdatasets`); a JSON Lines file at a new path, unnamed, is the
earlier file source whose URLs it mostly repeats (:data:`SAME_FILE_SOURCE`,
a newer export of the same collection). A moved source's index moves with
it (:func:`_adopt`), so the sync counts what changed against its records.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from urllib.parse import unquote, urlsplit
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from datalad import cfg

from datalad_registry_ext import config, gitcmd, mirror, remote, superdatasets
from datalad_registry_ext import engine as engine_mod
from datalad_registry_ext.errors import RegistryExtError, os_error_message
from datalad_registry_ext.files import TMP_SUFFIX, atomic_file
from datalad_registry_ext.index import (
    Index,
    IndexCorrupt,
    all_indexes,
    local_index,
    source_index,
)
from datalad_registry_ext.index_sync import rebuild_index
from datalad_registry_ext.records import (
    LOCAL_SOURCE,
    dumps_storable,
    loads_strict,
    normalize_record,
    now_iso,
    scrub,
    strip_credentials,
)
from datalad_registry_ext.registry import is_registry

#: a JSON Lines file at a path not synced before is the same source as an
#: earlier file source when the URLs both have make at least this share of
#: the URLs either has (their Jaccard index): a newer export of the same
#: collection is, a subset or a superset of half the size or less is not
SAME_FILE_SOURCE = 0.5
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


def import_jsonl(registry: Path, path: Path | str, *, name: str | None = None,
                 scanned=None, renamed_from: str | None = None
                 ) -> ImportSummary:
    """Replace the records of the source ``path`` in the registry's index.
    The records' ``source`` is ``name``, by default the file's absolute
    path. ``scanned``: what :func:`_scan` found in the file, if it ran;
    ``renamed_from``: the name the source's records had (an unnamed source
    moved to a new path), so that only that is no change."""
    path = Path(path).absolute()
    index = source_index(registry, str(path))
    with index.locked():
        return _replace(index, path, name or str(path),
                        dict(location=str(path), kind=JSONL), scanned,
                        renamed_from)


def _replace(index: Index, path: Path, source: str, meta: dict,
             scanned=None, renamed_from: str | None = None) -> ImportSummary:
    """Replace the records of ``index`` with those of the JSON Lines file
    ``path``, as records of ``source``. Call with the index's lock held."""
    old = _previous_digests(index)
    if scanned is not None:
        return _import(index, path, source, old, *scanned, meta=meta,
                       renamed_from=renamed_from)
    try:
        return _import(index, path, source, old, meta=meta,
                       renamed_from=renamed_from)
    except _Repeated:
        last, problems = _scan(path, source)
        return _import(index, path, source, old, last, problems, meta=meta,
                       renamed_from=renamed_from)


def _import(index: Index, path: Path, source: str, old: dict[str, str],
            last: dict[str, int] | None = None, problems=None, *,
            meta: dict | None = None, renamed_from: str | None = None
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
                elif prev == _digest(text) or (
                        renamed_from is not None and prev == _digest(
                            _serialize(dict(rec, source=renamed_from)))):
                    summary.unchanged += 1
                else:
                    summary.updated += 1
                builder.add(rec, text)
                yield text

        summary.imported = index.write_records(chosen(), dict(
            meta or {}, source=source, synced=now_iso()))
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
#: the kinds of source (the index meta's ``kind``; a superdataset's is
#: :data:`superdatasets.KIND`)
JSONL = "jsonl"
SERVICE = "datalad-registry"
_KIND_WORDS = {JSONL: "a JSON Lines file", SERVICE: "a DataLad-Registry service",
               superdatasets.KIND: "a registry superdataset"}

#: a source name: what ``--name`` accepts (and config subsections hold)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,99}$")
_CONFIG = "datalad.registry.source"
_CONFIG_KEY = re.compile(r"^datalad\.registry\.source\.(.+)\.(url|query|kind)$",
                         re.DOTALL)

Progress = Callable[[str, int, int], None]


def sync(location: Path, source: str | None = None, *,
         name: str | None = None, query: str | None = None,
         all_sources: bool = False, remove: str | None = None,
         progress: Progress | None = None) -> Iterator[dict]:
    """What ``registry-sync`` does. Yields result-shaped outcomes.

    - ``source``: a JSON Lines file (a path or ``file://`` URL), a
      DataLad-Registry service (an http(s) URL, recognised by its answers)
      or the name of a remembered source; its records replace those it
      gave before. ``name`` names it (remembered in the registry's git
      config); ``query`` mirrors only a service's matching records.
    - ``all_sources``: sync every remembered source again.
    - ``remove``: drop a source's records and forget it.
    - nothing: rebuild the index of the registry's own records.
    """
    location = Path(location)
    if remove is not None or all_sources:
        extra = [f for f, v in (("a SOURCE", source), ("--name", name),
                                ("--query", query)) if v is not None]
        if remove is not None and all_sources:
            extra.insert(0, "--all")
        if extra:
            option = "--remove" if remove is not None else "--all"
            yield _refusal(location, f"{option} cannot be combined with "
                           f"{' or '.join(extra)}")
            return
    if remove is not None:
        yield from _remove_source(location, remove)
        return
    if all_sources:
        yield from _sync_all(location, progress)
        return
    if source is None:
        if name is not None or query is not None:
            yield _refusal(location, "--name and --query need a SOURCE")
            return
        yield from _rebuild(location)
        return
    yield from _sync_given(location, source, name, query, progress)


def _refusal(location: Path, message: str, **fields) -> dict:
    return {"action": ACTION, "path": str(location), "type": "dataset",
            "status": "impossible", "message": scrub(message), **fields}


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


def _location_key(url: str) -> str:
    """The one spelling of a source's location (the key of its index)."""
    if remote.is_http_url(url):
        return remote.api_base(url)
    if superdatasets.is_git_address(url):  # ssh://, host:path
        return superdatasets.location_key(url)
    path = _source_path(url)
    return str(path) if path is not None else url


# -- remembered sources (the registry's git config) --------------------------------

def remembered(location: Path) -> dict[str, dict]:
    """``{name: {"url": ..., "query": ...}}`` of the sources remembered in
    the registry's local git config (``datalad.registry.source.<name>.*``)."""
    location = Path(location)
    if not is_registry(location):
        return {}
    out = gitcmd.git(["config", "--local", "-z", "--get-regexp",
                      r"^datalad\.registry\.source\..*\.(url|query|kind)$"],
                     location, check=False)
    found: dict[str, dict] = {}
    for item in out.split("\0"):
        key, _, value = item.partition("\n")
        m = _CONFIG_KEY.match(key)
        if m:
            found.setdefault(m[1], {})[m[2]] = value
    return {n: e for n, e in found.items() if e.get("url")}


def _remember(location: Path, name: str, url: str, query: str | None,
              kind: str | None = None):
    gitcmd.git(["config", "--local", f"{_CONFIG}.{name}.url", url], location)
    if kind:  # what the source is, so that syncing it again needs no probe
        gitcmd.git(["config", "--local", f"{_CONFIG}.{name}.kind", kind],
                   location)
    if query:
        gitcmd.git(["config", "--local", f"{_CONFIG}.{name}.query", query],
                   location)
    else:
        gitcmd.git(["config", "--local", "--unset-all",
                    f"{_CONFIG}.{name}.query"], location, check=False)


def _forget(location: Path, name: str) -> None:
    gitcmd.git(["config", "--local", "--remove-section", f"{_CONFIG}.{name}"],
               location, check=False)


class SourceNameError(SourceError):
    status = "impossible"


def _kind_of(entry: dict) -> str:
    """What a remembered source is (services and files are told by their
    URL; a superdataset is remembered with its kind)."""
    if entry.get("kind"):
        return entry["kind"]
    return SERVICE if remote.is_http_url(entry["url"]) else JSONL


def _choose_name(known: dict[str, dict], key: str, name: str | None,
                 derived: str | None, kind: str
                 ) -> tuple[str | None, str | None]:
    """``(name, moved from)``: the name to sync ``key`` (a source location
    of ``kind``) under: ``name`` if given and free or a source of the same
    kind elsewhere (which then moves here: its location key is the second
    item), else the name it is remembered under, else ``derived`` (made
    unique with ``-2``, ``-3``, ...)."""
    mine = [n for n, e in known.items() if _location_key(e["url"]) == key]
    if name is not None:
        if name == LOCAL_SOURCE or not _NAME.match(name):
            raise SourceNameError(
                f"{name!r} cannot name a source: use letters, digits and "
                "'._:@+-' (at most 100, starting with a letter or digit), "
                f"and not {LOCAL_SOURCE!r}")
        if mine and name not in mine:
            raise SourceNameError(
                f"{scrub(key)} is already synced as {mine[0]!r}; sync it "
                f"under that name, or drop it first with registry-sync "
                f"--remove {mine[0]}")
        other = known.get(name)
        if other is not None and _location_key(other["url"]) != key:
            if _kind_of(other) != kind:
                raise SourceNameError(
                    f"the source name {name!r} is taken by "
                    f"{scrub(other['url'])}, {_KIND_WORDS[_kind_of(other)]};"
                    f" {scrub(key)} is {_KIND_WORDS[kind]}, so it cannot "
                    "take its place: choose another --name, or drop it "
                    f"first with registry-sync --remove {name}")
            return name, _location_key(other["url"])
        return name, None
    if mine:
        return mine[0], None
    if derived is None:
        return None, None
    candidate, i = derived, 2
    while candidate in known or candidate == LOCAL_SOURCE:
        candidate, i = f"{derived}-{i}", i + 1
    return candidate, None


def _adopt(location: Path, name: str | None, old_key: str, index: Index,
           kind: str, new_key: str, query: str | None = None) -> None:
    """Move the source at ``old_key`` to ``index`` (its new location
    ``new_key``; the caller holds ``index``'s lock): its index file and
    search database move, so the next import replaces its records and counts
    what changed. A named source is remembered at the new location at once,
    so that no crash leaves its config and its index apart. Its incremental
    sync state stays behind: a new location is synced in full once."""
    old = source_index(location, old_key)
    with old.locked():
        # the index file first: its records are at one place or the other,
        # never at both or neither (its database is derived, and a moved
        # file keeps the fingerprint it was built for)
        for a, b in ((old.path, index.path),
                     (old.engine_path, index.engine_path)):
            try:
                os.replace(a, b)
            except FileNotFoundError:
                pass
        mirror.forget(old)
    if name is not None:
        _remember(location, name, new_key, query,
                  kind=kind if kind == superdatasets.KIND else None)


def _derived_name(base: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._:@+-]", "-", remote.default_name(base))
    return name.lstrip("._:@+-")[:100] or "registry"


def service_of(location: Path, name_or_url: str) -> tuple[str, str]:
    """``(name, base URL)`` of a remembered source's name or a service's
    URL (for ``--to`` and ``--at``). SourceError when it is neither."""
    known = remembered(location)
    if name_or_url in known and remote.is_http_url(known[name_or_url]["url"]):
        return name_or_url, remote.api_base(known[name_or_url]["url"])
    if remote.is_http_url(name_or_url):
        base = remote.api_base(name_or_url)
        mine = [n for n, e in known.items()
                if _location_key(e["url"]) == base]
        return (mine[0] if mine else _derived_name(base)), base
    services = sorted(n for n, e in known.items()
                      if remote.is_http_url(e["url"]))
    err = SourceError(
        f"{scrub(name_or_url)} is neither an http(s) URL nor the name of a "
        "remembered DataLad-Registry service"
        + (f" (remembered: {', '.join(services)})" if services else ""))
    err.status = "impossible"
    raise err


def index_of(location: Path, name: str) -> Index:
    """The index holding the records of the source ``name``: ``local``
    (the registry's own), a remembered source, or an unnamed file source
    by its path. SourceError (impossible) for an unknown name."""
    if name == LOCAL_SOURCE:
        return local_index(location)
    known = remembered(location)
    if name in known:
        return source_index(location, _location_key(known[name]["url"]))
    index = source_index(location, _location_key(name))
    if index.exists():
        return index
    err = SourceError(
        f"there is no source named {name!r} in {location} (sources: "
        f"{', '.join([LOCAL_SOURCE, *sorted(known)])})")
    err.status = "impossible"
    raise err


# -- syncing one source ---------------------------------------------------------------

def _sync_given(location: Path, source: str, name: str | None,
                query: str | None, progress: Progress | None
                ) -> Iterator[dict]:
    known = remembered(location)
    if source in known and not Path(source).expanduser().exists():
        # a remembered source's name: sync it as remembered
        entry = known[source]
        if name is not None and name != source:
            yield _refusal(location, f"{source} is a source name; it cannot "
                           f"be synced as {name!r} (registry-sync --remove "
                           f"{source}, then sync its URL under the new name)")
            return
        name = source
        query = entry.get("query") if query is None else query
        source = entry["url"]
    yield from _sync_one(location, source, name, query, known, progress)


def _sync_all(location: Path, progress: Progress | None) -> Iterator[dict]:
    known = remembered(location)
    if not known:
        yield {"action": ACTION, "path": str(location), "type": "dataset",
               "status": "notneeded",
               "message": f"no sources are remembered in {location} "
                          "(registry-sync SOURCE syncs and remembers one)"}
        return
    for name, entry in sorted(known.items()):
        yield from _sync_one(location, entry["url"], name,
                             entry.get("query"), known, progress)


def _sync_one(location: Path, source: str, name: str | None,
              query: str | None, known: dict, progress: Progress | None
              ) -> Iterator[dict]:
    """Sync one source; its failures are results naming it (the next
    source of ``--all`` still runs)."""
    public = scrub(source)
    try:
        if _is_superdataset(source, name, known):
            if query is not None:
                yield _refusal(location, "--query selects records of a "
                               "DataLad-Registry service; a registry "
                               "superdataset is synced whole",
                               source=name or public)
                return
            yield from _sync_superdataset(location, source, name, known)
            return
        if remote.is_http_url(source):
            yield from _sync_service(location, source, name, query, known,
                                     progress)
            return
        path = _source_path(source)
        if path is None:
            yield _refusal(
                location, f"cannot sync from {public}: a source is a JSON "
                "Lines file or a DataLad-Registry API (http:// or https://)",
                source=name or public)
            return
        if query is not None:
            yield _refusal(location, "--query selects records of a "
                           "DataLad-Registry service; a JSON Lines file is "
                           "imported whole", source=name or str(path))
            return
        yield from _sync_file(location, path, name, known)
    except (RegistryExtError, OSError) as e:
        message = str(e) if isinstance(e, RegistryExtError) else \
            os_error_message(e, e.filename or location, "use")
        yield {"action": ACTION, "path": str(location), "type": "dataset",
               "source": name or public, "status": getattr(e, "status", "error"),
               "message": scrub(message)}


def _is_superdataset(source: str, name: str | None, known: dict) -> bool:
    """A remembered source is what it was remembered as (no probe);
    anything else is recognised by what it is (superdatasets)."""
    key = _location_key(source)
    kinds = [e.get("kind") for n, e in known.items()
             if _location_key(e["url"]) == key and name in (None, n)]
    if kinds:
        return kinds[0] == superdatasets.KIND
    return superdatasets.is_superdataset(source)


def _sync_superdataset(location: Path, source: str, name: str | None,
                       known: dict) -> Iterator[dict]:
    key = superdatasets.location_key(source)
    given = name
    name, moved = _choose_name(known, key, name,
                               superdatasets.derived_name(key),
                               superdatasets.KIND)
    others = {n: _location_key(e["url"]) for n, e in known.items()
              if _kind_of(e) == superdatasets.KIND
              and _location_key(e["url"]) != key}

    def recognise(ds_id: str) -> tuple[str, str] | None:
        # a source named on the command line is what it is named
        if given is not None or any(_location_key(e["url"]) == key
                                    for e in known.values()):
            return None
        same = [(other, other_key) for other, other_key in others.items()
                if superdatasets.imported_dataset_id(location, other_key)
                == ds_id]
        # one dataset kept apart under several names on purpose: no guess
        return same[0] if len(same) == 1 else None

    def adopt(as_name: str, old_key: str, index: Index) -> None:
        _adopt(location, as_name, old_key, index, superdatasets.KIND, key)

    for res in superdatasets.sync(location, source, name, importer=_replace,
                                  moved_from=moved, recognise=recognise,
                                  adopt=adopt):
        if res["action"] == ACTION and res["status"] in ("ok", "notneeded"):
            _remember(location, res["source"], key, None,
                      kind=superdatasets.KIND)
        yield res


def _sync_file(location: Path, path: Path, name: str | None, known: dict
               ) -> Iterator[dict]:
    key = str(path)
    given = name
    name, moved = _choose_name(known, key, name, None, JSONL)
    base = {"action": ACTION, "path": key, "type": "file",
            "source": name or key}
    index = source_index(location, key)
    if path.is_file():
        # -d promises a registry "created on first use"; a missing or
        # unreadable file is reported by the import and creates nothing
        from datalad_registry_ext.registry import ensure_registry
        try:
            ensure_registry(location)
        except RegistryExtError as e:
            yield {"action": ACTION, "path": str(location), "type": "dataset",
                   "source": key, "status": e.status, "message": str(e)}
            return
    scanned = found = None
    try:
        if given is None and name is None and path.is_file() \
                and not index.exists():
            # a file at a new path: perhaps a newer export of a source
            # synced before from another file
            scanned = _scan(path, key)
            found = _same_file_source(location, set(scanned[0]), known, key)
            if found is not None:
                name, moved = found[0], found[1]
                base["source"] = name or key
        if moved is not None:
            if scanned is None:  # nothing moves for a file that is unreadable
                scanned = _scan(path, name or key)
            with index.locked():
                _adopt(location, name, moved, index, JSONL, key)
            how = (f"{found[2]} of the {found[3]} URLs in either are in "
                   "both" if found else f"--name {name}")
            yield dict(base, action="registry_source_moved",
                       moved_from=scrub(moved), status="ok", message=(
                           f"{key} is the source {name or ''}"
                           f"{' ' if name else ''}synced before from "
                           f"{scrub(moved)} ({how}): its records are replaced"
                           + (" (give --name to keep both)" if found else "")))
        summary = import_jsonl(
            location, path, name=name, scanned=scanned,
            renamed_from=moved if moved is not None and name is None
            else None)
    except SourceError as e:
        yield dict(base, status="error", message=str(e))
        return
    if name is not None:
        _remember(location, name, str(path), None)
    for line, problem in summary.problems:
        yield dict(base, status="error", line=line,
                   message=f"{path} line {line}: {problem} (skipped)")
    yield dict(base, status="ok", **_counts(summary),
               message=_summary_message(summary, str(path), "line"))


def _same_file_source(location: Path, urls: set[str], known: dict,
                      key: str) -> tuple[str | None, str, int, int] | None:
    """``(name or None, location key, URLs in both, URLs in either)`` of the
    earlier JSON Lines file source whose records ``urls`` (a file's, at
    ``key``) mostly repeat (:data:`SAME_FILE_SOURCE`), or None."""
    if not urls:
        return None
    others = {source_index(location, _location_key(e["url"])).path
              for e in known.values() if _kind_of(e) != JSONL}
    others.add(source_index(location, key).path)
    best = None
    for candidate in all_indexes(location)[1:]:
        if candidate.path in others:
            continue
        theirs = _urls_of(candidate)
        both, either = len(urls & theirs), len(urls | theirs)
        if both / either >= SAME_FILE_SOURCE and (
                best is None or both / either > best[1] / best[2]):
            best = (candidate, both, either)
    if best is None:
        return None
    try:
        meta = best[0].meta()
    except IndexCorrupt:
        return None
    old_key = meta.get("location") or meta.get("source")
    if meta.get("kind", JSONL) != JSONL or not isinstance(old_key, str) \
            or source_index(location, old_key).path != best[0].path:
        return None
    names = [n for n, e in known.items() if _location_key(e["url"]) == old_key]
    return (names[0] if names else None), old_key, best[1], best[2]


def _urls_of(index: Index) -> set[str]:
    """The URLs of a source's records: from its search database when it is
    current (nothing parsed), else from its index file."""
    fingerprint = index.fingerprint()
    if fingerprint is None:
        return set()
    try:
        with engine_mod.Engine.open(index.engine_path, fingerprint) as eng:
            return eng.urls()
    except engine_mod.EngineError:
        pass
    try:
        return {r["url"] for r in index.records()}
    except IndexCorrupt:
        return set()


def _counts(summary: ImportSummary) -> dict:
    return dict(imported=summary.imported, added=summary.added,
                updated=summary.updated, removed=summary.removed,
                unchanged=summary.unchanged, skipped=len(summary.problems))


def _summary_message(summary: ImportSummary, where: str, unit: str) -> str:
    return (f"imported {_count(summary.imported, 'record')} from {where} "
            f"({summary.added} new, {summary.updated} updated, "
            f"{summary.removed} removed, "
            f"{_count(len(summary.problems), unit)} skipped)")


def _sync_service(location: Path, url: str, name: str | None,
                  query: str | None, known: dict, progress: Progress | None
                  ) -> Iterator[dict]:
    base = remote.api_base(url)
    name, moved = _choose_name(known, base, name, _derived_name(base),
                               SERVICE)
    query = query if query and query.strip() else None
    result = {"action": ACTION, "path": str(location), "type": "dataset",
              "source": name, "url": base}
    if query:
        result["query"] = query
    if moved is not None:
        result["moved_from"] = scrub(moved)
    with remote.Service(base, token=remote.token_for(name), label=base,
                        name=name) as service:
        index = source_index(location, base)
        meta = dict(location=base, kind=SERVICE, query=query)
        if index.exists():
            # synced before: transfer only what changed since (mirror.py)
            done = mirror.sync_changes(
                service, index, name, query, progress=progress,
                max_bytes=_limit(config.IMPORT_MAX_BYTES),
                importer=lambda spool: _replace(index, spool, name, dict(
                    meta, how="incremental")))
            if done is not None:
                # unless remembered so already (two git processes)
                entry = known.get(name) or {}
                if moved is not None or entry.get("url") != base \
                        or entry.get("query") != query:
                    _remember(location, name, base, query)
                for r in done:
                    yield dict(r, path=str(location))
                return
        first = service.probe(query)  # before anything is created
        from datalad_registry_ext.registry import ensure_registry
        ensure_registry(location)
        stage = f"Syncing {name}"
        # the digests (registry-serve) before the records they describe
        digests = mirror.before_full(service, query)
        with index.locked():
            fd, spool = tempfile.mkstemp(
                prefix=index.path.name + ".", suffix=".download" + TMP_SUFFIX,
                dir=index.path.parent)
            try:
                with os.fdopen(fd, "w+b") as out:
                    got = service.download(
                        out, query, first=first,
                        max_bytes=_limit(config.IMPORT_MAX_BYTES),
                        progress=(lambda done, total: progress(
                            stage, done, total)) if progress else None)
                if moved is not None:  # downloaded: now it may move here
                    _adopt(location, name, moved, index, SERVICE, base,
                           query)
                summary = _replace(index, Path(spool), name, dict(
                    meta, how=got.how))
                mirror.after_full(index, base, name, query, digests,
                                  Path(spool))
            finally:
                try:
                    os.unlink(spool)
                except OSError:
                    pass
    _remember(location, name, base, query)
    for line, problem in summary.problems:
        yield dict(result, status="error", line=line, where=got.where(line),
                   message=f"{base} {got.where(line)}: {problem} (skipped)")
    how = "record stream" if got.how == "stream" else \
        f"{_count(len(got.pages), 'page')}"
    yield dict(result, status="ok", **_counts(summary), how=got.how,
               requests=service.requests, received=service.received,
               message=(
                   f"imported {_count(summary.imported, 'record')} from "
                   f"{name} ({base}, {how}"
                   + (f", query {query!r}" if query else "") + "): "
                   f"{summary.added} new, {summary.updated} updated, "
                   f"{summary.removed} removed, "
                   f"{_count(len(summary.problems), 'record')} skipped"
                   + (f"; moved here from {scrub(moved)}" if moved else "")))


def _remove_source(location: Path, name: str) -> Iterator[dict]:
    base = {"action": ACTION, "path": str(location), "type": "dataset",
            "source": name}
    if name == LOCAL_SOURCE:
        yield dict(base, status="impossible",
                   message="the registry's own records cannot be removed "
                           "from its index (registry-sync without a SOURCE "
                           "rebuilds them)")
        return
    known = remembered(location)
    try:
        index = index_of(location, name)
    except SourceError as e:
        yield dict(base, status=e.status, message=str(e))
        return
    with index.locked():
        for path in (index.path, index.engine_path,
                     mirror.state_path(index)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
    if known.get(name, {}).get("kind") == superdatasets.KIND:
        superdatasets.remove_cache(location, _location_key(known[name]["url"]))
    if name in known:
        _forget(location, name)
    yield dict(base, status="ok",
               message=f"removed the source {name} and its records")


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


# -- registry-submit --to ------------------------------------------------------------

SUBMIT_ACTION = "registry_submit"
_SCP_LIKE = re.compile(r"^[^@/\s]+@[^/:\s]+:")


def _local_item(item: str) -> bool:
    """Whether a submitted item names something on this machine."""
    try:
        parts = urlsplit(item)
    except ValueError:
        return False
    if parts.scheme.lower() == "file":
        return True
    if parts.scheme and len(parts.scheme) > 1 and "://" in item:
        return False
    if _SCP_LIKE.match(item) and not os.path.exists(item):
        return False
    return True


def submit_to(location: Path, to: str, items: Iterable[str], *,
              from_file=None) -> Iterator[dict]:
    """``registry-submit --to``: submit URLs to the DataLad-Registry
    service ``to`` (a URL or a remembered source's name), which registers
    them itself. Yields one outcome per URL: ok (new there), notneeded
    (already registered), impossible (a local path, a read-only service),
    error (the service's message)."""
    name, base = service_of(Path(location), to)
    where = base if name == remote.default_name(base) else f"{name} ({base})"
    items = list(items)
    if from_file:
        from datalad_registry_ext.url_lists import UrlListError, read_url_list
        path = Path(from_file).expanduser().absolute()
        try:
            listed, skipped = read_url_list(path)
        except UrlListError as e:
            yield _refusal(location, str(e), action=SUBMIT_ACTION,
                           path=str(path), type="file")
            return
        items += listed
        for s in skipped:
            yield _refusal(location, f"{s['url']}: {s['reason']}",
                           action=SUBMIT_ACTION, url=s["url"])
    if not items:
        if not from_file:
            yield _refusal(location, "nothing to submit: give URLs or "
                           "--from FILE", action=SUBMIT_ACTION, to=base)
        return
    unreachable = None
    with remote.Service(base, token=remote.token_for(name),
                        name=name) as service:
        for item in items:
            public = scrub(item)
            out = {"action": SUBMIT_ACTION, "path": str(location),
                   "type": "dataset", "url": public, "to": base}
            if _local_item(item):
                yield dict(out, status="impossible",
                           message=f"{public} is on this machine: {where} "
                                   "cannot clone a local path or file:// "
                                   "URL; submit a URL it can reach")
                continue
            if strip_credentials(item) != item:
                yield dict(out, status="impossible",
                           message=f"{public} carries credentials; a remote "
                                   "registry would publish them, so it is "
                                   "not submitted")
                continue
            if unreachable is not None:
                yield dict(out, status="error",
                           message=f"{public} not submitted: {unreachable}")
                continue
            try:
                code, record, message = service.submit(item)
            except remote.RemoteError as e:
                unreachable = str(e)
                yield dict(out, status="error", message=str(e))
                continue
            if code == 201:
                yield dict(out, status="ok", remote_record=record,
                           message=f"submitted {public} to {where}")
            elif code in (200, 202):
                yield dict(out, status="notneeded", remote_record=record,
                           message=f"{public} is already registered at "
                                   f"{where}")
            elif code == 405:
                yield dict(out, status="impossible",
                           message=f"{where} is a read-only instance: it "
                                   f"accepts no submissions"
                                   + (f" ({message})" if message else ""))
            elif code in (401, 403):
                yield dict(out, status="error",
                           message=f"{where} refused {public} (HTTP {code}):"
                                   f" {service.auth_hint()}")
            else:
                yield dict(out, status="error",
                           message=f"{where} refused {public} (HTTP {code})"
                                   + (f": {message}" if message else ""))
