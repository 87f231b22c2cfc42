"""A registry superdataset as a source of records (``registry-sync SOURCE``
where SOURCE is another registry: a path, ``file://``, ``http(s)://``
including git's dumb HTTP, ``ssh://`` or ``host:path``).

A registry superdataset carries everything its records are made of (see
:mod:`registry` and :doc:`metadata`): the subdataset entries and their
committed facts (``.datalad/registry/records.jsonl``), the plain git
repositories' metadata (``.datalad/registry/plain-git-metadata.jsonl``) and
metalad's aggregated store (``refs/datalad/*``). A source of this kind is
recognised by what it is: git must be able to fetch it (for an http URL,
``git ls-remote`` answers; otherwise it is a DataLad-Registry API), and the
fetched commit must be a DataLad dataset holding the records file.

The source is fetched (its HEAD and ``refs/datalad/*``) into a bare
repository in the user cache dir, one per registry and source
(:func:`cache_path`), where git transfers only the objects that are new.
The records are then built as :func:`index_sync.rebuild_index` builds a
registry's own, with ``source`` set to the source's name, written to a JSON
Lines spool file next to the index file and imported by the caller's
importer (:func:`sources._replace`: validated, streamed, atomic).

The index file's meta table remembers the imported commit and the
``refs/datalad/*`` it was imported with, and the cache keeps both reachable
(``refs/imported/*``). The next sync then

- imports nothing when the fetched commit and refs are the same
  (``notneeded``, "unchanged");
- otherwise reads only what changed: the lines of the records file that
  differ between the two commits, the gitlinks that moved, the plain git
  metadata entries that differ, and, in the metalad store, the dataset
  paths whose metadata root records differ (``git diff-tree`` of the dataset
  trees that are not the same objects). Only those records are rebuilt from
  the source; the others are taken from the index as they are. When the
  change is too large for that to pay, or the registry's layout is one the
  shortcut does not cover (gitlinks without a records line, metadata
  aggregated below a path), everything is read again.

Nothing here is written to the registry: the import goes through the
source's index only, under its lock, so a sync that fails or is killed
leaves the previous records searchable.

A superdataset is one source wherever it is fetched from: the first sync
from a location not synced before reads the fetched commit's DataLad
dataset id, and when an earlier superdataset source has the same id (a
registry published to GitHub, synced once by its ``https://`` URL and now
by ``git@github.com:``, or moved to another host), the caller's
``recognise`` names that source and ``adopt`` moves its index to the new
location, so the source keeps its name (and its records' ids) and the
change is counted against its records.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import unquote, urlsplit

from datalad import cfg

from datalad_registry_ext import aggregate, config, remote
from datalad_registry_ext import registry as reg
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.files import TMP_SUFFIX
from datalad_registry_ext.files import locked as file_locked
from datalad_registry_ext.gitcmd import RepositoryError, git, gitlinks
from datalad_registry_ext.gitcmd import ok as git_ok
from datalad_registry_ext.index import Index, IndexCorrupt, source_index
from datalad_registry_ext.index_sync import metadata_from_registry
from datalad_registry_ext.locations import registry_key, user_cache_dir
from datalad_registry_ext.records import (
    dumps_storable,
    new_record,
    normalize_record,
    scrub,
    strip_credentials,
)

#: the ``kind`` of such a source, in the index's meta and the git config
KIND = "superdataset"
#: where the source's HEAD is fetched to in the cache (the cache's HEAD)
FETCHED = "refs/heads/fetched"
#: the commit and refs of the last import, kept reachable in the cache so
#: that the next sync can diff against them
IMPORTED = "refs/imported"
_STORE = "refs/datalad/"
_TVL = "refs/datalad/dataset-tree-version-list"
_MRR = ".datalad_metadata_root_record"
_SCP_LIKE = re.compile(r"^[^@/\s]+@[^/:\s]+:|^[A-Za-z0-9][^/:\s]*:[^/]")

#: rebuild incrementally only while the changed records are at most this
#: share of all (beyond it one pass over everything is as cheap)
INCREMENTAL_SHARE = 0.5
#: and while looking the changed paths up in every dataset tree of the
#: metalad store costs at most this many object reads
LOOKUP_BUDGET = 200_000

Importer = Callable[[Index, Path, str, dict], object]
#: ``recognise(dataset id)``: ``(name, location key)`` of another source
#: of that dataset, or None
Recognise = Callable[[str], "tuple[str, str] | None"]
#: ``adopt(name, old location key, index)``: move the source ``name`` from
#: its old location to ``index`` (whose lock the caller holds)
Adopt = Callable[[str, str, Index], None]


class SuperdatasetError(RegistryExtError):
    """A registry superdataset cannot be fetched or read."""


def _impossible(message: str) -> SuperdatasetError:
    err = SuperdatasetError(message)
    err.status = "impossible"
    return err


# -- what a SOURCE is --------------------------------------------------------------

def _scp_like(source: str) -> bool:
    """``host:path`` or ``user@host:path`` (git's scp-like syntax) that is
    not a local file (``C:`` and ``./a:b`` are not hosts)."""
    return bool(_SCP_LIKE.match(source)) and "://" not in source \
        and not os.path.exists(source)


def local_path(source: str) -> Path | None:
    """The local path a SOURCE names (a path or ``file://`` URL), else
    None."""
    parts = urlsplit(source)
    if parts.scheme == "file":
        return Path(unquote(parts.path)).absolute()
    if (parts.scheme and len(parts.scheme) > 1 and parts.netloc) \
            or _scp_like(source):
        return None
    return Path(source).expanduser().absolute()


def location_key(source: str) -> str:
    """The one spelling of a superdataset source (its index key and what
    the git config remembers): an absolute path, a credential-free URL
    without a trailing slash (an http URL as :func:`remote.api_base` spells
    it, which sources' own key function uses too), or ``host:path``."""
    path = local_path(source)
    if path is not None:
        return str(path)
    if remote.is_http_url(source):
        return remote.api_base(source)
    if _scp_like(source):
        return source
    return strip_credentials(source.strip()).rstrip("/")


def is_git_address(source: str) -> bool:
    """Whether SOURCE can only be a git repository: ``ssh://``, ``git://``
    or ``host:path``."""
    scheme = urlsplit(source).scheme.lower()
    return scheme in ("ssh", "git", "git+ssh", "ssh+git") or _scp_like(source)


def is_superdataset(source: str) -> bool:
    """Whether SOURCE (not a remembered name) is to be synced as a
    superdataset: a local directory, a git address, or an http(s) URL that
    git can list refs of (a DataLad-Registry API cannot). What it holds is
    checked when it is fetched."""
    if remote.is_http_url(source):
        return _http_git_answers(source)
    if is_git_address(source):
        return True
    path = local_path(source)
    return path is not None and path.is_dir()


def _git_options() -> list[str]:
    # git's http transport waits forever by default: give up when nothing
    # arrives for as long as a DataLad-Registry service may take
    wait = int(cfg.obtain(config.HTTP_TIMEOUT))
    return ["-c", "http.lowSpeedLimit=1", "-c", f"http.lowSpeedTime={wait}"]


def _http_git_answers(url: str) -> bool:
    try:
        out = git([*_git_options(), "ls-remote", "--", url, "HEAD"],
                  secrets=[url])
    except RepositoryError:
        return False
    # git takes any 200 answer for dumb HTTP and lists no refs from a web
    # page: only a listed HEAD makes it a repository
    return bool(re.search(r"^[0-9a-f]{40,64}\tHEAD$", out, re.M))


def derived_name(key: str) -> str:
    """A default name: ``host[:port]-<last path component>`` of a URL,
    the last path component of a path (``.git`` dropped)."""
    if local_path(key) is not None:
        host, path = "", key
    elif _scp_like(key):
        host, _, path = key.partition(":")
        host = host.rpartition("@")[2]
    else:
        parts = urlsplit(key)
        host, path = parts.netloc.rpartition("@")[2].lower(), parts.path
    stem = path.rstrip("/").rsplit("/", 1)[-1]
    if stem.endswith(".git"):
        stem = stem[:-4]
    name = "-".join(p for p in (host, stem) if p)
    name = re.sub(r"[^A-Za-z0-9._:@+-]", "-", name).lstrip("._:@+-")[:100]
    return name or "registry"


# -- the clone cache of superdataset sources --------------------------------------

def cache_path(registry: Path, key: str) -> Path:
    """The bare repository holding the fetched source ``key`` for the
    registry ``registry``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key.rstrip("/").rsplit("/", 1)[-1])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return (user_cache_dir() / "superdatasets" / registry_key(registry)
            / f"{stem[:40]}-{digest}.git")


def _cache_lock(cache: Path) -> Path:
    return cache.with_name(cache.name + ".lock")


def remove_cache(registry: Path, key: str) -> None:
    """Forget the fetched copy of a source (``registry-sync --remove``)."""
    cache = cache_path(registry, key)
    with file_locked(_cache_lock(cache), what=f"the cache {cache}"):
        shutil.rmtree(cache, ignore_errors=True)


def _prepare_cache(cache: Path) -> None:
    if not (cache / "HEAD").exists():
        tmp = cache.with_name(f"{cache.name}.new{TMP_SUFFIX}")
        shutil.rmtree(tmp, ignore_errors=True)
        git(["init", "--quiet", "--bare", str(tmp)])
        # the cache's HEAD is the fetched commit, which is what
        # index_sync.metadata_from_registry reads the plain git metadata of
        git(["symbolic-ref", "HEAD", FETCHED], cwd=tmp)
        # objects of an earlier import must stay until the next sync diffs
        # against them; refs/imported/* keep them, gc may remove the rest
        os.replace(tmp, cache)
        return
    # a git process killed mid-fetch leaves its lock files; we hold the
    # cache's lock, so no git process of ours is using it
    for lock in [*cache.glob("*.lock"), *(cache / "refs").rglob("*.lock")]:
        try:
            lock.unlink()
        except OSError:
            pass


def _fetch(cache: Path, url: str, public: str) -> tuple[str, dict[str, str]]:
    """Fetch the source's HEAD and metalad store; ``(commit, refs)``."""
    try:
        git([*_git_options(), "fetch", "--quiet", "--prune", "--no-tags",
             "--force", "--", url, f"+HEAD:{FETCHED}",
             f"+{_STORE}*:{_STORE}*"], cwd=cache, secrets=[url])
    except RepositoryError as e:
        raise SuperdatasetError(
            f"{public}: the fetch failed ({e}); nothing was imported") from e
    commit = git(["rev-parse", "--verify", "--quiet", f"{FETCHED}^{{commit}}"],
                 cwd=cache, check=False).strip()
    if not commit:
        raise _impossible(f"{public} has no commit: not a registry")
    return commit, _refs(cache, _STORE)


def _refs(cache: Path, prefix: str) -> dict[str, str]:
    out = git(["for-each-ref", "--format=%(objectname) %(refname)", prefix],
              cwd=cache, check=False)
    refs = {}
    for line in out.splitlines():
        sha, _, name = line.partition(" ")
        refs[name[len(prefix):]] = sha
    return refs


def _keep(cache: Path, commit: str, refs: dict[str, str]) -> None:
    """Point ``refs/imported/*`` at what was imported, in one transaction."""
    old = _refs(cache, f"{IMPORTED}/datalad/")
    lines = [f"update {IMPORTED}/head {commit}"]
    lines += [f"update {IMPORTED}/datalad/{n} {s}" for n, s in refs.items()]
    lines += [f"delete {IMPORTED}/datalad/{n}" for n in old if n not in refs]
    git(["update-ref", "--stdin"], cwd=cache, input="\n".join(lines) + "\n")


def _check_registry(cache: Path, commit: str, public: str) -> None:
    if not git_ok(["cat-file", "-e", f"{commit}:.datalad/config"], cache):
        raise _impossible(
            f"{public} is a git repository but not a DataLad dataset, so not "
            "a registry (a registry has .datalad/config and "
            f"{reg.RECORDS_FILE})")
    if not git_ok(["cat-file", "-e", f"{commit}:{reg.RECORDS_FILE}"], cache):
        raise _impossible(
            f"{public} is a DataLad dataset but not a registry: its HEAD has "
            f"no {reg.RECORDS_FILE} (a registry has it from its first "
            "registry-submit)")


# -- reading the records -----------------------------------------------------------

@dataclass
class _Read:
    """What one sync read from the source."""
    records: list[dict]        # every record of the source, as imported
    read: int                  # how many of them were built from the source
    how: str                   # "full" or "incremental"
    complete: bool             # every gitlink has a line in the records file
    #: the registry paths of the records built from the source (None: all);
    #: the others were validated when they were imported
    fresh: set | None = None


def _blob_lines(cache: Path, commit: str, path: str) -> list[str]:
    text = git(["cat-file", "blob", f"{commit}:{path}"], cwd=cache,
               check=False)
    return text.splitlines()


def _parse_line(line: str, n: int, commit: str, public: str) -> dict:
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(
                rec.get("registry_path"), str) or not rec.get("url"):
            raise ValueError("not a record with a registry_path and a url")
    except ValueError as e:
        raise SuperdatasetError(
            f"{public}: {reg.RECORDS_FILE} line {n} (commit {commit[:12]}) is "
            f"damaged ({e}); nothing was imported") from e
    return rec


def _as_record(entry: dict, path: str, head: str | None) -> dict:
    rec = new_record(entry["url"])
    rec.update({k: v for k, v in entry.items()
                if v is not None and k not in ("metadata", "source")})
    rec["registry_path"] = path
    if head:
        rec["head"] = head
    rec["metadata"] = []
    return rec


def _read_full(cache: Path, commit: str, public: str) -> _Read:
    links = gitlinks(cache, commit)
    entries: dict[str, dict] = {}
    for n, line in enumerate(_blob_lines(cache, commit, reg.RECORDS_FILE), 1):
        if line.strip():
            rec = _parse_line(line, n, commit, public)
            entries[rec["registry_path"]] = rec
    complete = set(links) <= set(entries)
    if not complete:
        # entries added by hand (.gitmodules only): read as the registry
        # reads its own
        try:
            entries = reg.read_entries(cache, commit)
        except RegistryExtError as e:
            raise SuperdatasetError(f"{public}: {e}") from e
    records = {p: _as_record(e, p, links.get(p))
               for p, e in entries.items() if p in links}
    try:
        metadata_from_registry(cache, records,
                               aggregated=_dump(cache, public))
    except RegistryExtError as e:
        raise SuperdatasetError(f"{public}: {e}") from e
    return _Read(list(records.values()), len(records), "full", complete)


def _dump(cache: Path, public: str) -> list[dict]:
    """The whole metalad store, read directly (metalad's own reader needs a
    work tree the cache does not have)."""
    try:
        return aggregate.latest(aggregate.records_direct(cache))
    except aggregate.UnknownLayout as e:
        raise SuperdatasetError(
            f"{public}: its metadata store (refs/datalad/*) cannot be read "
            f"({e}); nothing was imported") from e


class _Full(Exception):
    """The change cannot be read incrementally: read everything."""


def _read_changes(cache: Path, old: str, new: str, old_refs: dict,
                  new_refs: dict, previous: dict[str, dict], public: str
                  ) -> _Read:
    """Rebuild only the records the change between the commits ``old``
    and ``new`` and the stores ``old_refs``/``new_refs`` touches;
    ``previous``: the imported records by registry path. Raises _Full."""
    if not git_ok(["cat-file", "-e", f"{old}^{{commit}}"], cache):
        raise _Full("the previously imported commit is not in the cache")
    changed = _changed_files(cache, old, new)
    links = {p: c for p, c in changed.items() if c[0] or c[1]}
    plus: dict[str, dict] = {}
    minus: set[str] = set()
    if reg.RECORDS_FILE in changed:
        before = set(_blob_lines(cache, old, reg.RECORDS_FILE))
        after_lines = _blob_lines(cache, new, reg.RECORDS_FILE)
        after = set(after_lines)
        # only lines that differ are parsed: one line is one record
        for n, line in enumerate(after_lines, 1):
            if line.strip() and line not in before:
                rec = _parse_line(line, n, new, public)
                plus[rec["registry_path"]] = rec
        for line in before - after:
            if line.strip():
                minus.add(_parse_line(line, 0, old, public)["registry_path"])
    # the shortcut needs every moved gitlink explained by the records file
    # (commit_entries writes both); anything else is read in full
    for path, (was, now) in links.items():
        if path not in plus and path not in minus:
            raise _Full(f"the gitlink {path} moved without its record")
        if path in plus and not now:
            raise _Full(f"{path} has a record but no gitlink")
    for path in plus:
        if path not in links and path not in previous:
            raise _Full(f"{path} has a new record but no gitlink")
    removed = {p for p in minus - set(plus)
               if p in previous or p in links}
    for path in removed:
        if path in links and links[path][1]:
            raise _Full(f"{path} has a gitlink but no record")
    touched = set(plus)
    plain_new = None
    if reg.PLAIN_METADATA_FILE in changed:
        plain_old = _plain(cache, old, public)
        plain_new = _plain(cache, new, public)
        touched |= {p for p in set(plain_old) | set(plain_new)
                    if plain_old.get(p) != plain_new.get(p)}
    old_tvl, new_tvl = old_refs.get(_TVL[len(_STORE):]), \
        new_refs.get(_TVL[len(_STORE):])
    new_versions = _version_trees(cache, new_tvl, public) if new_tvl else []
    new_trees = [t for _, t in new_versions]
    if old_tvl != new_tvl:
        old_versions = _version_trees(cache, old_tvl, public) \
            if old_tvl else []
        touched |= _store_paths(cache, old_versions, new_versions)
    touched = {p for p in touched
               if p not in removed and (p in plus or p in previous)}
    total = len(previous) + len(plus)
    if len(touched) > INCREMENTAL_SHARE * max(total, 1):
        raise _Full("most records changed")
    if len(touched) * len(new_trees) > LOOKUP_BUDGET:
        raise _Full("the metadata store has too many versions to look up")
    records = dict(previous)
    for path in removed:
        records.pop(path, None)
    rebuilt = {}
    for path in touched:
        if path in plus:
            head = links[path][1] if path in links else previous[path]["head"]
            rebuilt[path] = _as_record(plus[path], path, head)
        else:
            rebuilt[path] = _as_record(previous[path], path, None)
    if rebuilt:
        if plain_new is None:
            plain_new = _plain(cache, new, public)
        try:
            metadata_from_registry(
                cache, rebuilt,
                plain={p: plain_new[p] for p in rebuilt if p in plain_new},
                aggregated=_lookup(cache, new_trees, sorted(rebuilt), public))
        except RegistryExtError as e:
            raise SuperdatasetError(f"{public}: {e}") from e
    records.update(rebuilt)
    return _Read(list(records.values()), len(rebuilt), "incremental", True,
                 set(rebuilt))


def _changed_files(cache: Path, old: str, new: str
                   ) -> dict[str, tuple[str | None, str | None]]:
    """``{path: (old gitlink, new gitlink)}`` of what differs between two
    commits; the gitlinks are None where the path is no gitlink."""
    out = git(["diff-tree", "-r", "-z", "--no-renames", old, new], cwd=cache)
    items = out.split("\0")
    changed = {}
    for meta, path in zip(items[::2], items[1::2]):
        modes_shas = meta.lstrip(":").split()
        if len(modes_shas) < 4:
            continue
        old_mode, new_mode, old_sha, new_sha = modes_shas[:4]
        changed[path] = (old_sha if old_mode == "160000" else None,
                         new_sha if new_mode == "160000" else None)
    return changed


def _plain(cache: Path, commit: str, public: str) -> dict:
    try:
        return reg.read_plain_metadata(cache, commit)
    except RegistryExtError as e:
        raise SuperdatasetError(
            f"{public}: {e}; nothing was imported") from e


# -- the metalad store, by difference -----------------------------------------------

def _version_trees(cache: Path, tvl: str, public: str
                   ) -> list[tuple[str, str]]:
    """``(registry version, dataset tree)`` of each version of a metalad
    tree version list blob."""
    text = git(["cat-file", "blob", tvl], cwd=cache, check=False)
    try:
        items = json.loads(text)
        trees = []
        for item in items:
            if item.get("path"):
                raise _Full("metadata aggregated below a path")
            tree = aggregate.reference(item["dataset_tree"], "MTreeNode")
            if tree is not None:
                trees.append((str(item.get("primary_data_version")), tree))
        return trees
    except (ValueError, KeyError, TypeError, AttributeError,
            aggregate.UnknownLayout) as e:
        raise SuperdatasetError(
            f"{public}: its metadata store (refs/datalad/*) cannot be read "
            f"(the tree version list {tvl[:12]}: {e}); nothing was "
            "imported") from e


def _mrr_dirs(paths) -> set[str]:
    out = set()
    for path in paths:
        head, _, name = path.rpartition("/")
        if name == _MRR and head:  # "" is the registry's own record
            out.add(head)
    return out


def _store_paths(cache: Path, old: list[tuple[str, str]],
                 new: list[tuple[str, str]]) -> set[str]:
    """The dataset paths whose metadata root records differ between two
    stores (``(version, tree)`` lists). A dataset tree that is the same
    object in both is skipped whole; a changed one is diffed with the tree
    of the same registry version on the other side (git skips their equal
    subtrees); trees of versions only one side has are listed."""
    old_trees = {t for _, t in old}
    new_trees = {t for _, t in new}
    gone = {v: t for v, t in old if t not in new_trees}
    came = {v: t for v, t in new if t not in old_trees}
    paths: set[str] = set()
    for version in set(gone) & set(came):
        out = git(["diff-tree", "-r", "-z", "--no-renames", "--name-only",
                   gone.pop(version), came.pop(version)], cwd=cache)
        paths |= _mrr_dirs(out.split("\0"))
    for tree in [*gone.values(), *came.values()]:
        out = git(["ls-tree", "-r", "-z", "--name-only", tree], cwd=cache)
        paths |= _mrr_dirs(out.split("\0"))
    return paths


def _lookup(cache: Path, trees: list[str], paths: list[str], public: str
            ) -> list[dict]:
    """The latest metalad records of ``paths`` across every dataset tree."""
    reader = aggregate.ObjectReader(cache)
    found = []
    try:
        for path in paths:
            for tree in trees:
                name = f"{tree}:{path}/{_MRR}"
                obj = reader.raw(name)
                if obj is None or obj[0] != "blob":
                    continue
                reader.cache[name] = json.loads(obj[1])
                found.extend(aggregate.mrr_records(
                    reader, name, {"dataset_path": path}))
    except (aggregate.UnknownLayout, ValueError, KeyError, TypeError,
            AttributeError) as e:
        raise SuperdatasetError(
            f"{public}: its metadata store (refs/datalad/*) cannot be read "
            f"({type(e).__name__}: {e}); nothing was imported") from e
    finally:
        reader.close()
    return aggregate.latest(found)


# -- syncing ----------------------------------------------------------------------------

ACTION = "registry_sync"


def sync(location: Path, source: str, name: str, *, importer: Importer,
         moved_from: str | None = None, recognise: Recognise | None = None,
         adopt: Adopt | None = None) -> Iterator[dict]:
    """Sync the registry superdataset ``source`` into the registry at
    ``location`` as the source ``name``. ``importer(index, spool, name,
    meta)`` replaces the source's records with those of the JSON Lines
    file ``spool`` and returns an :class:`sources.ImportSummary`. Yields
    result-shaped outcomes; raises RegistryExtError (naming the source).

    When ``source`` was not synced before, the source at the location key
    ``moved_from`` (``--name`` of a source elsewhere), or else the one
    ``recognise`` finds by the fetched dataset id, is ``adopt``-ed:
    moved here, keeping its name, once the fetch showed a registry."""
    location = Path(location)
    key = location_key(source)
    public = scrub(key)
    result = {"action": ACTION, "path": str(location), "type": "dataset",
              "source": name, "url": public}
    own = local_path(source)
    if own is not None and own.resolve() == location.resolve():
        raise _impossible(f"{public} is this registry itself: its own "
                          "records are rebuilt by registry-sync without a "
                          "SOURCE")
    cache = cache_path(location, key)
    index = source_index(location, key)
    with file_locked(_cache_lock(cache), what=f"the cache {cache}"):
        new_cache = not (cache / "HEAD").exists()
        try:
            _prepare_cache(cache)
            commit, refs = _fetch(cache, source, public)
            _check_registry(cache, commit, public)
        except RegistryExtError as e:
            if new_cache and getattr(e, "status", "error") == "impossible":
                # not a registry: leave nothing behind
                shutil.rmtree(cache, ignore_errors=True)
            raise
        reg.ensure_registry(location)
        with index.locked():
            adopted = None
            if adopt is not None and not index.exists():
                if moved_from is not None:
                    adopted = (name, moved_from)
                elif recognise is not None:
                    ds_id = dataset_id(cache, commit)
                    adopted = recognise(ds_id) if ds_id else None
                if adopted is not None and adopted[1] != key:
                    name = adopted[0]
                    result["source"] = name
                    adopt(name, adopted[1], index)
                else:
                    adopted = None
            meta, previous = _previous(index)
            if (adopted is None and meta.get("kind") == KIND
                    and meta.get("source") == name
                    and meta.get("commit") == commit
                    and meta.get("refs") == refs):
                _keep(cache, commit, refs)
                yield dict(result, status="notneeded", commit=commit,
                           records=len(previous), read=0,
                           message=f"{name} ({public}) is unchanged at commit "
                                   f"{commit[:12]}: nothing was imported")
                return
            read = None
            # an adopted source's commit is in its old cache, not this one
            if meta.get("kind") == KIND and meta.get("complete") \
                    and meta.get("commit") and previous is not None \
                    and adopted is None:
                try:
                    read = _read_changes(cache, meta["commit"], commit,
                                         meta.get("refs") or {}, refs,
                                         previous, public)
                except _Full:
                    read = None
            if read is None:
                read = _read_full(cache, commit, public)
            summary = _import(index, read, name, importer, dict(
                location=key, kind=KIND, commit=commit, refs=refs,
                complete=read.complete), public)
            _keep(cache, commit, refs)
    if adopted is not None:
        remove_cache(location, adopted[1])
        yield dict(result, status="ok", action="registry_source_moved",
                   moved_from=scrub(adopted[1]), message=(
                       f"{public} is {name}, synced before from "
                       f"{scrub(adopted[1])}: the same dataset, so the same "
                       f"source (now synced from {public})"))
    yield from _missing_store(location, public, refs, read)
    yield dict(result, status="ok", commit=commit, how=read.how,
               read=read.read, imported=summary.imported,
               added=summary.added, updated=summary.updated,
               removed=summary.removed, unchanged=summary.unchanged,
               skipped=len(summary.problems),
               message=(
                   f"imported {summary.imported} records from {name} "
                   f"({public} at commit {commit[:12]}, {read.how}: "
                   f"{read.read} read): {summary.added} new, "
                   f"{summary.updated} updated, {summary.removed} removed, "
                   f"{summary.unchanged} unchanged"))


def dataset_id(cache: Path, rev: str) -> str | None:
    """The DataLad dataset id committed at ``rev`` in the bare ``cache``."""
    out = git(["config", "--blob", f"{rev}:.datalad/config", "--get",
               "datalad.dataset.id"], cwd=cache, check=False).strip()
    return out or None


def imported_dataset_id(registry: Path, key: str) -> str | None:
    """The dataset id of what was last imported from the source ``key``
    (None when its cache is gone)."""
    cache = cache_path(registry, key)
    if not (cache / "HEAD").exists():
        return None
    return dataset_id(cache, f"{IMPORTED}/head")


def _previous(index: Index) -> tuple[dict, dict[str, dict] | None]:
    """The index's meta and its records by registry path (None when there
    is no usable previous import: then everything is read)."""
    try:
        data = index.load()
    except IndexCorrupt:
        return {}, None
    meta = data.get("meta", {}).get("1", {})
    if not isinstance(meta, dict):
        return {}, None
    previous = {}
    for rec in data.get("records", {}).values():
        if not isinstance(rec, dict) or not isinstance(
                rec.get("registry_path"), str) or "url" not in rec:
            return meta, None
        previous[rec["registry_path"]] = rec
    return meta, previous


def _import(index: Index, read: _Read, name: str, importer: Importer,
            meta: dict, public: str):
    """Validate every record, spool them as JSON Lines next to the index
    file and hand the spool to the importer."""
    fd, spool = tempfile.mkstemp(prefix=index.path.name + ".",
                                 suffix=".superdataset" + TMP_SUFFIX,
                                 dir=index.path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for rec in sorted(read.records,
                              key=lambda r: r["registry_path"]):
                try:
                    if read.fresh is None or rec["registry_path"] in read.fresh:
                        normalize_record(rec, name)
                except ValueError as e:
                    # a committed record that is not one: the source is
                    # damaged, and half of it would be a lie
                    raise SuperdatasetError(
                        f"{public}: the record of {rec['registry_path']} "
                        f"is damaged ({e}); nothing was imported") from e
                out.write(dumps_storable(rec) + "\n")
        return importer(index, Path(spool), name, meta)
    finally:
        try:
            os.unlink(spool)
        except OSError:
            pass


def _missing_store(location: Path, public: str, refs: dict, read: _Read
                   ) -> list[dict]:
    """A warning when the source has DataLad datasets but no metalad store
    (published without ``refs/datalad/*``): their records are imported
    without metadata."""
    if refs or not any(r.get("ds_id") for r in read.records):
        return []
    return [{"action": "registry_metadata_refs", "path": str(location),
             "type": "dataset", "status": "ok", "url": public,
             "message": f"{public} has no metadata refs (refs/datalad/*): "
                        "the records of its DataLad datasets were imported "
                        "without metadata; its publisher pushes them with "
                        "git push REMOTE '+refs/datalad/*:refs/datalad/*'"}]
