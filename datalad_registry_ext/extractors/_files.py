"""Safe loading of the small metadata files extractors read.

Metadata files in a registered repository are untrusted input. Everything
here is written so that a hostile or broken file yields a
:class:`MetadataFileError` with a message a user can act on, and never makes
the caller read a huge file, follow a symlink out of the repository, or
serialise an exponentially large YAML document:

- **size cap** (config ``datalad.registry.metadata-max-bytes``, default
  10 MiB) checked with ``stat`` / ``git cat-file -s`` *before* reading;
- **location**: the file is read from the work tree of the clone. A symlink
  must resolve inside the repository; an annexed file without local content
  (dangling annex symlink, or an unlocked pointer file) is reported as
  "content not available". A file missing from the work tree but present in
  the ref commit's tree is read with ``git cat-file``;
- **JSON** errors name the file, line and column;
- **YAML** is loaded with ``CSafeLoader`` (``SafeLoader`` without libyaml),
  after a fast event scan (:func:`check_yaml_aliases`) that rejects alias
  bombs ("billion laughs") and self-referencing aliases. Values YAML has but
  JSON lacks (dates, binary, sets, non-string keys) are converted so the
  result is JSON-serialisable.
"""
from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path, PurePosixPath
from subprocess import CompletedProcess

import yaml
from datalad import cfg

from datalad_registry_ext import gitcmd
from datalad_registry_ext.config import METADATA_MAX_BYTES
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import MAX_NESTING, loads_strict, nesting_depth

try:  # libyaml is much faster; fall back to the pure Python parser
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _SafeLoader

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# Aliases may add at most this many nodes to a YAML document on expansion;
# hand-written metadata files use a few aliases at most.
YAML_ALIAS_EXPANSION_BUDGET = 10_000

_ANNEX_POINTER_PREFIX = b"/annex/objects/"


class MetadataFileError(RegistryExtError, ValueError):
    """A metadata file cannot be used; the message says which and why."""


def max_bytes() -> int:
    """The configured size cap (``datalad.registry.metadata-max-bytes``)."""
    value = cfg.obtain(METADATA_MAX_BYTES, default=DEFAULT_MAX_BYTES)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise MetadataFileError(
            f"configuration {METADATA_MAX_BYTES}={value!r} is not a number "
            f"of bytes") from None
    if value < 0:
        raise MetadataFileError(
            f"configuration {METADATA_MAX_BYTES}={value} must not be negative")
    return value


def _too_large(relpath: str, size: int, limit: int) -> MetadataFileError:
    return MetadataFileError(
        f"{relpath} is too large to read ({size} bytes; the limit is "
        f"{limit} bytes, configuration {METADATA_MAX_BYTES})")


def _not_available(relpath: str) -> MetadataFileError:
    return MetadataFileError(
        f"{relpath}: content not available (annexed file without local "
        f"content; 'datalad get {relpath}' in the dataset would fetch it)")


def _git(ds_path: Path, *args: str, input: bytes | None = None
         ) -> CompletedProcess:
    return gitcmd.run(args, ds_path, input=input)


def _read_from_git(ds_path: Path, relpath: str, ref: str, limit: int
                   ) -> bytes:
    """Read ``ref:relpath`` from the object store (size checked first)."""
    listing = _git(ds_path, "ls-tree", "-z", ref, "--", relpath)
    entry = listing.stdout.split(b"\0", 1)[0] if listing.returncode == 0 else b""
    if not entry:
        raise MetadataFileError(f"{relpath} not found in the dataset")
    mode, otype, sha = entry.split(b"\t", 1)[0].split()
    if otype != b"blob":
        raise MetadataFileError(f"{relpath} is not a file")
    sha = sha.decode()
    if mode == b"120000":
        # a symlink in git: for a dataset that is an annexed file, whose
        # content we do not have (otherwise it would be in the work tree)
        raise _not_available(relpath)
    size = int(_git(ds_path, "cat-file", "-s", sha).stdout or 0)
    if size > limit:
        raise _too_large(relpath, size, limit)
    blob = _git(ds_path, "cat-file", "blob", sha)
    if blob.returncode:
        raise MetadataFileError(
            f"{relpath} cannot be read from git: "
            f"{blob.stderr.decode(errors='replace').strip()}")
    if blob.stdout.startswith(_ANNEX_POINTER_PREFIX):
        raise _not_available(relpath)
    return blob.stdout


def _inside_repository(target: Path, ds_path: Path) -> bool:
    """Whether ``target`` (a real path) is in the work tree or git dir."""
    def under(root) -> bool:
        return target == root or root in target.parents

    if under(Path(os.path.realpath(ds_path))):
        return True
    # annexed content of a repository whose git dir lives elsewhere
    # (.git file, worktree): allow the git directory too
    proc = _git(ds_path, "rev-parse", "--absolute-git-dir",
                "--git-common-dir")
    if proc.returncode:
        return False
    roots = [Path(ds_path, line) for line in proc.stdout.decode().split("\n")
             if line.strip()]
    return any(under(Path(os.path.realpath(r))) for r in roots)


def read_bytes(ds_path, relpath: str, *, ref: str = "HEAD",
               limit: int | None = None) -> bytes:
    """The content of ``relpath`` (POSIX, relative to the dataset root).

    Raises MetadataFileError if the file is missing, too large, points
    outside the repository or has no local content.
    """
    ds_path = Path(ds_path)
    limit = max_bytes() if limit is None else limit
    rel = PurePosixPath(relpath)
    if rel.is_absolute() or ".." in rel.parts:
        raise MetadataFileError(f"{relpath}: not a path inside the dataset")
    path = ds_path.joinpath(*rel.parts)
    if not os.path.lexists(path):
        return _read_from_git(ds_path, str(rel), ref or "HEAD", limit)
    # any symlink on the way (the file or a directory) must stay inside the
    # repository: a hostile dataset could point at ~/.ssh/...
    target = Path(os.path.realpath(path))
    if not target.exists():
        if path.is_symlink() and "annex/objects" in os.readlink(path):
            raise _not_available(relpath)
        raise MetadataFileError(f"{relpath} is a broken symlink")
    if not _inside_repository(target, ds_path):
        raise MetadataFileError(
            f"{relpath} is a symlink pointing outside the dataset; not read")
    if path.is_dir():
        raise MetadataFileError(f"{relpath} is a directory, not a file")
    try:
        size = path.stat().st_size
        if size > limit:
            raise _too_large(relpath, size, limit)
        with open(path, "rb") as f:
            # read one byte more than allowed: the file may grow meanwhile
            content = f.read(limit + 1)
    except OSError as e:
        raise MetadataFileError(
            f"{relpath} cannot be read: {e.strerror or e}") from None
    if len(content) > limit:
        raise _too_large(relpath, len(content), limit)
    if content.startswith(_ANNEX_POINTER_PREFIX) and len(content) < 1024:
        # an unlocked annexed file whose content is not present
        raise _not_available(relpath)
    return content


def read_text(ds_path, relpath: str, **kwargs) -> str:
    content = read_bytes(ds_path, relpath, **kwargs)
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MetadataFileError(
            f"{relpath} is not UTF-8 text (invalid byte at offset "
            f"{e.start})") from None


# -- JSON --------------------------------------------------------------------

def _nested_too_deeply(relpath: str) -> MetadataFileError:
    return MetadataFileError(
        f"{relpath} is nested too deeply (limit {MAX_NESTING}); not loaded")


def parse_json(text: str, relpath: str):
    try:
        doc = loads_strict(text)
    except json.JSONDecodeError as e:
        raise MetadataFileError(
            f"invalid JSON in {relpath} at line {e.lineno}, column "
            f"{e.colno}: {e.msg}") from None
    except RecursionError:
        raise _nested_too_deeply(relpath) from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise MetadataFileError(f"invalid JSON in {relpath}: {e}") from None
    if nesting_depth(doc, MAX_NESTING) > MAX_NESTING:
        raise _nested_too_deeply(relpath)
    return doc


def load_json(ds_path, relpath: str, **kwargs):
    return parse_json(read_text(ds_path, relpath, **kwargs), relpath)


# -- YAML --------------------------------------------------------------------

def _yaml_error(relpath: str, e: yaml.YAMLError) -> MetadataFileError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    if mark is not None:
        return MetadataFileError(
            f"invalid YAML in {relpath} at line {mark.line + 1}, column "
            f"{mark.column + 1}: {problem}")
    return MetadataFileError(f"invalid YAML in {relpath}: {problem}")


def check_yaml_aliases(text: str, relpath: str,
                       budget: int = YAML_ALIAS_EXPANSION_BUDGET) -> None:
    """Reject YAML whose aliases would expand the document, or that nests
    deeper than ``MAX_NESTING``.

    Walks the parser's event stream (no objects are built) and computes, per
    anchor, how many nodes its value has once all aliases in it are
    expanded. A document whose aliases add more than ``budget`` nodes, or an
    alias that refers to an anchor still being defined (a cycle), is
    rejected. Linear in the size of the text.
    """
    sizes: dict[str, int] = {}   # anchor -> expanded node count
    open_anchors: set[str] = set()
    stack: list[list] = []       # [anchor, expanded count] per open collection
    raw = expanded = 0
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                if event.anchor in open_anchors:
                    raise MetadataFileError(
                        f"unsafe YAML in {relpath}: alias *{event.anchor} "
                        f"refers to itself")
                n = sizes.get(event.anchor)
                if n is None:
                    raise MetadataFileError(
                        f"invalid YAML in {relpath}: undefined alias "
                        f"*{event.anchor}")
                expanded += n
                if stack:
                    stack[-1][1] += n
            elif isinstance(event, yaml.ScalarEvent):
                raw += 1
                expanded += 1
                if event.anchor:
                    sizes[event.anchor] = 1
                if stack:
                    stack[-1][1] += 1
            elif isinstance(event, yaml.CollectionStartEvent):
                raw += 1
                expanded += 1
                if event.anchor:
                    open_anchors.add(event.anchor)
                stack.append([event.anchor, 1])
                # before anything is composed: libyaml's composer recurses
                # per level and crashes the process past ~25,000
                if len(stack) > MAX_NESTING:
                    raise _nested_too_deeply(relpath)
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, n = stack.pop()
                if anchor:
                    open_anchors.discard(anchor)
                    sizes[anchor] = n
                if stack:
                    stack[-1][1] += n
            elif isinstance(event, yaml.DocumentEndEvent):
                sizes.clear()
            if expanded - raw > budget:
                raise MetadataFileError(
                    f"unsafe YAML in {relpath}: its aliases expand to more "
                    f"than {budget} extra nodes (alias bomb?); not loaded")
    except yaml.YAMLError as e:
        raise _yaml_error(relpath, e) from None


def to_jsonable(obj):
    """YAML values in JSON terms (dates -> ISO strings, sets -> lists...)."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, str) else _key(k)): to_jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=str) if isinstance(obj, (set, frozenset)) \
            else obj
        return [to_jsonable(v) for v in items]
    if isinstance(obj, (datetime.date, datetime.datetime)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, float) and obj != obj:  # NaN: not valid JSON
        return None
    if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
        return str(obj)
    return obj


def _key(k) -> str:
    if k is None:
        return "null"
    if isinstance(k, bool):
        return "true" if k else "false"
    return str(to_jsonable(k))


def parse_yaml(text: str, relpath: str):
    check_yaml_aliases(text, relpath)
    try:
        doc = yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as e:
        raise _yaml_error(relpath, e) from None
    except RecursionError:
        raise _nested_too_deeply(relpath) from None
    except (ValueError, TypeError, OverflowError) as e:
        # values YAML's constructors reject: 2024-13-45, !!int 'x', an
        # integer of more than 4300 digits
        raise MetadataFileError(f"invalid YAML in {relpath}: {e}") from None
    return to_jsonable(doc)


def load_yaml(ds_path, relpath: str, **kwargs):
    return parse_yaml(read_text(ds_path, relpath, **kwargs), relpath)


# -- what the light extractors share ------------------------------------------

def success(extractor, metadata):
    """An ExtractorResult for ``metadata``."""
    # our extractors are loaded through metalad's entry points: it is there
    from datalad_metalad.extractors.base import ExtractorResult
    return ExtractorResult(
        extractor_version=extractor.get_version(),
        extraction_parameter=extractor.parameter or {},
        extraction_success=True,
        datalad_result_dict={"type": "dataset", "status": "ok"},
        immediate_data=metadata)


def failure(extractor, message: str):
    """An ExtractorResult reporting ``message`` as an error."""
    # as in success(): metalad is there when its entry points load us
    from datalad_metalad.extractors.base import ExtractorResult
    return ExtractorResult(
        extractor_version=extractor.get_version(),
        extraction_parameter=extractor.parameter or {},
        extraction_success=False,
        datalad_result_dict={"type": "dataset", "status": "error",
                             "message": message},
        immediate_data=None)
