"""The record: one registered repository, in DataLad-Registry's API v2 shape.

A record is a plain ``dict`` (typed as :class:`Record`). The same shape is
what ``registry-submit`` writes to the index, what ``registry-search -f json``
prints, what a JSON Lines export holds and what ``registry-sync`` imports.

:data:`CATALOGUE` is the one place where the fields are listed: with their
kind, whether DataLad-Registry's API v2 has them, whether they are facts of
the repository, order keys, committed in the registry, searchable, and shown
in the results table. Every other list of fields (the order keys, the query
language's known fields, the table columns, the API v2 field list, ...) is
derived from it.

This module imports nothing of ours.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import NamedTuple, TypedDict
from urllib.parse import urlsplit, urlunsplit

LOCAL_SOURCE = "local"


class Field(NamedTuple):
    name: str
    #: text, int (a count or size), date (ISO 8601 text), bool, json (object
    #: or list)
    kind: str
    doc: str
    #: one of DataLad-Registry's API v2 record fields (else one of ours)
    api: bool = True
    #: describes the repository itself: a change is reported on re-submission
    fact: bool = False
    #: an order key of ``registry-search --order-by`` (DataLad-Registry's)
    order: bool = False
    #: kept in the registry's committed records file (metadata lives in
    #: metalad's store; the rest only makes sense in an index)
    committed: bool = True
    #: how the query language searches it: None (not at all), "field"
    #: (``field:value``), "default" (also by bare words)
    search: str | None = None
    #: for sizes: how many bytes one unit of the stored number is
    size_unit: int | None = None
    #: its column header in ``registry-search``'s table (None: not shown)
    column: str | None = None


CATALOGUE: tuple[Field, ...] = (
    Field("url", "text", "the repository URL as registered (no credentials)",
          order=True, search="default", column="URL"),
    Field("ds_id", "text", "DataLad dataset id, or null for plain git "
          "repositories", fact=True, search="default", column="DATASET"),
    Field("annex_uuid", "text", "annex UUID of the remote (null if not "
          "annexed)", fact=True, search="field"),
    Field("head", "text", "hexsha of the remote's HEAD", fact=True,
          search="default"),
    Field("head_describe", "text", "``git describe --tags --always`` of HEAD",
          fact=True, search="default", column="DESCRIBE"),
    Field("head_dt", "date", "author date of HEAD (upstream leaves it null)",
          fact=True, search="field"),
    Field("branches", "json", '``{name: {"hexsha", "last_commit_dt"}}``',
          fact=True, search="default"),
    Field("tags", "json", '``[{"name", "hexsha"}]``, oldest first', fact=True,
          search="default"),
    Field("annex_key_count", "int", "keys git-annex knows to be on the "
          "remote the repository was cloned from (as DataLad-Registry counts "
          "them); 0 when the content lives elsewhere (a special remote, the "
          "web), which is common: see ``annex_keys_known_count``", fact=True,
          order=True, search="field"),
    Field("annex_keys_known_count", "int", "keys the repository's git-annex "
          "branch records as present in at least one repository or special "
          "remote (the web included), dead ones left out", api=False,
          fact=True, search="field"),
    Field("annexed_files_in_wt_count", "int", "annexed files in HEAD's tree",
          fact=True, order=True, search="field"),
    Field("annexed_files_in_wt_size", "int", "their total size in bytes, "
          "of the files whose size git-annex knows (see the next field)",
          fact=True, order=True, search="field", size_unit=1,
          column="ANNEXED"),
    Field("annexed_files_in_wt_unknown_size_count", "int", "annexed files "
          "in HEAD's tree whose size git-annex does not know (URL keys added "
          "without a size), left out of ``annexed_files_in_wt_size``",
          api=False, fact=True, search="field"),
    Field("git_objects_kb", "int", "size of ``.git/objects`` in KiB",
          fact=True, order=True, search="field", size_unit=1024),
    Field("last_update_dt", "date", "when the facts last changed (UTC)",
          order=True, search="field", column="UPDATED"),
    Field("last_chk_dt", "date", "when the repository was last checked (UTC)"),
    # registry-update's record of failed checks: state of this registry's
    # checks, not facts of the repository, so kept in the index only
    Field("n_failed_chks", "int", "consecutive failed checks by "
          "``registry-update`` (0 or null: the last check succeeded); "
          "checks back off exponentially, and past "
          "``datalad.registry.update-max-failures`` the repository is "
          "unreachable and skipped", api=False, committed=False,
          search="field", column="FAILED"),
    Field("last_chk_error", "text", "why the last failed check failed "
          "(null once a check succeeds)", api=False, committed=False),
    Field("last_failed_chk_dt", "date", "when a check last failed (UTC)",
          api=False, committed=False, search="field"),
    # registry-update --discover: committed, so a clone of the registry and
    # an index rebuilt from it keep the flag
    Field("dashboard_gone_dt", "date", "when DataLad's usage dashboard "
          "(``registry-update --discover``) was first seen to list the "
          "repository as gone (UTC); null while it lists it as active or "
          "does not list it", api=False, search="field"),
    Field("processed", "bool", "true once facts were computed"),
    Field("metadata", "json", "metadata records, the latest one per "
          "extractor", committed=False, search="default", column="EXTRACTORS"),
    Field("subdatasets", "json", '``[{"path", "url", "ds_id"}]`` from '
          "``.gitmodules`` (``url`` as written there; ``datalad_url`` too "
          "where ``.gitmodules`` has a ``datalad-url``)", api=False,
          fact=True),
    Field("source", "text", '``"local"`` for the registry\'s own records, '
          "else the name of the source it was synced from", api=False,
          committed=False, search="field", column="SOURCE"),
    Field("extraction_failures", "json", '``{extractor: {"message", "time", '
          '"count"}}``', api=False, committed=False, search="field"),
    Field("registry_path", "text", "path of the subdataset entry in the "
          "registry (own records only)", api=False),
)

FIELDS = tuple(f.name for f in CATALOGUE)
API_FIELDS = tuple(f.name for f in CATALOGUE if f.api)
OWN_FIELDS = tuple(f.name for f in CATALOGUE if not f.api)
FACT_FIELDS = tuple(f.name for f in CATALOGUE if f.fact)
ORDER_KEYS = tuple(f.name for f in CATALOGUE if f.order)
NOT_COMMITTED = tuple(f.name for f in CATALOGUE if not f.committed)
INT_FIELDS = tuple(f.name for f in CATALOGUE if f.kind == "int")
DATE_FIELDS = tuple(f.name for f in CATALOGUE if f.kind == "date")
#: fields whose value must be a string (or null) in a record from elsewhere
STR_FIELDS = tuple(f.name for f in CATALOGUE
                   if f.kind in ("text", "date") and f.api and f.name != "url")
SIZE_FIELDS = {f.name: f.size_unit for f in CATALOGUE if f.size_unit}
#: what ``registry-search`` reports of a record (metadata only when asked)
RESULT_FIELDS = tuple(n for n in FIELDS if n != "metadata")
#: ``(field, header)`` of the columns of ``registry-search``'s table
TABLE_COLUMNS = tuple((f.name, f.column) for f in CATALOGUE if f.column)


class Record(TypedDict, total=False):
    url: str
    ds_id: str | None
    annex_uuid: str | None
    head: str | None
    head_describe: str | None
    head_dt: str | None
    branches: dict | None
    tags: list | None
    annex_key_count: int | None
    annex_keys_known_count: int | None
    annexed_files_in_wt_count: int | None
    annexed_files_in_wt_size: int | None
    annexed_files_in_wt_unknown_size_count: int | None
    git_objects_kb: int | None
    last_update_dt: str | None
    last_chk_dt: str | None
    n_failed_chks: int | None
    last_chk_error: str | None
    last_failed_chk_dt: str | None
    dashboard_gone_dt: str | None
    processed: bool
    metadata: list
    subdatasets: list
    source: str
    extraction_failures: dict
    registry_path: str | None


#: ids are below 2**48: exact in every JSON reader (JavaScript's too)
ID_BITS = 48


def _stable_id(*parts: str) -> int:
    digest = hashlib.sha256("\n".join(parts).encode("utf-8",
                                                    "surrogatepass")).digest()
    return int.from_bytes(digest[:ID_BITS // 8], "big") + 1


def record_id(source: str, url: str) -> int:
    """The API v2 ``id`` of a record: derived from its source and URL, so
    it stays the same across restarts, re-syncs and index rebuilds (clients
    store ids). Nothing stores it; a collision among 130,000 records has a
    chance of about 1 in 30,000 and makes one of the two unreachable by id."""
    return _stable_id("record", source or LOCAL_SOURCE, url)


def metadata_id(source: str, url: str, extractor: str) -> int:
    """The ``/api/v2/url-metadata/<id>`` of one extractor's record."""
    return _stable_id("metadata", source or LOCAL_SOURCE, url, extractor)


def new_record(url: str, **facts) -> Record:
    """A record with every field present (None where unknown)."""
    rec = {f: None for f in FIELDS}
    rec.update(url=url, processed=False, metadata=[], source=LOCAL_SOURCE,
               extraction_failures={}, subdatasets=[])
    rec.update(facts)
    return rec


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


#: registry-update's record of failed checks (see the catalogue)
CHECK_FAILURE_FIELDS = ("n_failed_chks", "last_chk_error",
                        "last_failed_chk_dt")


def checked(record: dict, when: str) -> dict:
    """``record`` as checked successfully at ``when``: ``last_chk_dt`` set,
    the failed checks forgotten (a success ends any back-off)."""
    return dict(record, last_chk_dt=when,
                **{f: None for f in CHECK_FAILURE_FIELDS})


def changed_facts(old: dict | None, new: dict) -> list[str]:
    """Names of the facts that differ between two versions of a record."""
    if old is None:
        return list(FACT_FIELDS)
    return [f for f in FACT_FIELDS if old.get(f) != new.get(f)]


# -- URLs ---------------------------------------------------------------------

_SCP_LIKE = re.compile(r"^(?P<user>[^@/:]+@)?(?P<host>[^/:]+):(?P<path>(?!//).*)$")


def strip_credentials(url: str) -> str:
    """Drop ``user:password@`` from a URL.

    ``ssh://user@host`` keeps its user name (it is no secret and ssh needs
    it), but a password is always removed. For http(s) the whole userinfo
    goes: tokens are commonly passed as the user name.
    """
    if "://" not in url:
        # scp-like user:password@host:path keeps the user only (urlsplit
        # would take "user:" for a scheme)
        return _SCP_PASSWORD.sub(r"\1@", url, count=1) \
            if _SCP_PASSWORD.match(url) else url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme in ("ssh", "git+ssh") and ":" not in userinfo:
        return url
    netloc = hostport
    if parts.scheme in ("ssh", "git+ssh"):
        netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
# user:password@host:path (scp-like; git reads the password as part of the
# user name, but it is a secret all the same)
_SCP_PASSWORD = re.compile(r"(?<![\w:@])([^@/:\s'\"]+):[^@/\s'\"]+@(?=[^/:\s]+:)")


def scrub(text: str, secrets=()) -> str:
    """Remove credentials from a message: ``user:pass@`` in URLs, and each
    of ``secrets`` (URLs as given) replaced by its credential-free form."""
    for s in secrets:
        if s:
            try:
                text = text.replace(s, strip_credentials(s))
            except ValueError:  # not even a URL urlsplit accepts
                pass
    text = _USERINFO.sub(r"\1", text)
    return _SCP_PASSWORD.sub(r"\1@", text)


def has_credentials(url: str) -> bool:
    return strip_credentials(url) != url


def canonical_url(url: str) -> str:
    """The form under which a repository is registered.

    For a remote URL, ``X``, ``X/`` and ``X.git`` name one repository (git
    servers answer for all three): trailing slashes and a ``.git`` suffix are
    removed, as are credentials; the scheme and host are lower-cased. A local
    path and its ``file://`` URL name one repository, but ``/p/x`` and
    ``/p/x.git`` are two directories: only trailing slashes go. Local paths
    must already be absolute.
    """
    url = strip_credentials(url.strip())
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        path = _strip_repo_suffix(parts.path)
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path,
                           parts.query, ""))
    if parts.scheme == "file":
        return parts.path.rstrip("/") or "/"
    m = _SCP_LIKE.match(url)
    if m and not url.startswith("/"):
        return f"{m['user'] or ''}{m['host'].lower()}:{_strip_repo_suffix(m['path'])}"
    return url.rstrip("/") or "/"


def _strip_repo_suffix(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git") and len(path) > 4:
        path = path[:-4]
    return path.rstrip("/") or "/"


def resolve_relative_url(base: str, url: str) -> str | None:
    """``url`` resolved against the URL ``base`` of the superproject, as git
    resolves a relative submodule URL (``./x``, ``../x``): ``base`` is taken
    as a directory. None if ``url`` is not relative or climbs above the
    host (or the root of a path)."""
    if url not in (".", "..") and not url.startswith(("./", "../")):
        return None
    base = base.rstrip("/")
    # where climbing stops: after "scheme://host", or "host:" (scp-like)
    if "://" in base:
        floor = base.index("/", base.index("://") + 3) if \
            "/" in base[base.index("://") + 3:] else len(base)
    else:
        m = _SCP_LIKE.match(base)
        floor = base.index(":") + 1 if m and not base.startswith("/") else 0
    rel = url
    while rel:
        if rel in (".", "./") or rel.startswith("./"):
            rel = rel[2:]
        elif rel in ("..", "../") or rel.startswith("../"):
            rel = rel[3:]
            cut = base.rfind("/")
            if cut < floor:
                return None
            base = base[:cut]
        else:
            break
    rel = rel.lstrip("/")
    return f"{base}/{rel}" if rel else base


def subdataset_urls(sub: dict, super_url: str | None = None) -> list[str]:
    """The spellings under which a subdataset's URL is searched
    (``subds_url``): the ``url`` of ``.gitmodules`` as written, its
    canonical form (:func:`canonical_url`: a path and its ``file://`` URL,
    ``X`` and ``X.git`` of a server are one repository), a relative URL
    resolved against the superdataset's URL ``super_url``, and DataLad's
    ``datalad_url`` -- each as written and canonical, in that order, without
    repeats. Values that are not text are left out."""
    out = []

    def add(value):
        if isinstance(value, str) and value and value not in out:
            out.append(value)

    for key in ("url", "datalad_url"):
        url = sub.get(key)
        if not isinstance(url, str) or not url:
            continue
        add(url)
        resolved = resolve_relative_url(super_url, url) \
            if isinstance(super_url, str) and super_url else None
        absolute = resolved or url
        add(resolved)
        # a fragment names something inside the repository (a RIA URL's
        # dataset id), which the canonical form would drop
        if (resolved is not None or not url.startswith(".")) \
                and "#" not in absolute:
            try:
                add(canonical_url(absolute))
            except ValueError:  # a text urlsplit refuses ("http://[x")
                pass
    return out


def registry_path_for_url(url: str) -> str:
    """A readable relative path for a repository's subdataset entry.

    ``https://github.com/OpenNeuroDatasets/ds000001`` ->
    ``github.com/OpenNeuroDatasets/ds000001``; ``git@host:o/r`` ->
    ``host/o/r``; a local path or ``file://`` URL -> ``local/<path>``.
    """
    url = canonical_url(url)
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        path = parts.path
    else:
        m = _SCP_LIKE.match(url)
        if m and not url.startswith("/"):
            host, path = m["host"], m["path"]
        else:
            host, path = "local", url
    segments = [_safe_segment(s) for s in [host, *path.split("/")] if s]
    return "/".join(s for s in segments if s)


#: Longest path component of a registry entry, in bytes: file systems
#: allow 255; flattened clashing paths and clone names add to it.
MAX_COMPONENT = 120


def _safe_segment(segment: str) -> str:
    segment = re.sub(r"[^A-Za-z0-9_.+-]+", "_", segment)
    # a leading dot would hide the entry (and '.git' is git's own)
    return fit_component(segment.lstrip(".") or "_")


def fit_component(name: str, limit: int = MAX_COMPONENT) -> str:
    """``name`` if it is short enough, else its head and a hash of the
    whole (ASCII: the caller made it so)."""
    if len(name.encode("utf-8")) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:limit - 17]}-{digest}"


# -- limits on what a record may hold ------------------------------------------------

#: How deeply a metadata document (and any JSON value of a record) may nest.
#: Real metadata nests ten levels at most; much deeper documents exist only to
#: exhaust recursive code (libyaml crashes past ~25,000 levels).
MAX_NESTING = 100
#: DataLad-Registry's integer columns are 64-bit.
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


def nesting_depth(obj, limit: int | None = None) -> int:
    """How deeply ``obj`` nests (a scalar: 0, ``[]``: 1, ``[[1]]``: 2),
    level by level, without recursion; stops counting once past ``limit``."""
    level = [obj] if isinstance(obj, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if limit is not None and depth > limit:
            break
        below = []
        for value in level:
            below += [c for c in (value.values() if isinstance(value, dict)
                                  else value) if isinstance(c, (dict, list))]
        level = below
    return depth


def too_deep(obj, what: str, limit: int = MAX_NESTING) -> str | None:
    """A message if ``obj`` nests deeper than ``limit``, else None."""
    if nesting_depth(obj, limit) > limit:
        return f"{what} is nested too deeply (limit {limit})"
    return None


def dumps_storable(obj) -> str:
    """Compact JSON text of ``obj`` that can be written as UTF-8: non-ASCII
    kept as is, unless the value holds lone surrogates (a ``\\ud800``
    escape in a JSON source), which are then escaped (json.loads restores
    them)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return text


#: JSON's non-standard constants as strict JSON (json.loads'
#: ``parse_constant``): NaN has no JSON value, infinities become strings,
#: as YAML's do.
STRICT_CONSTANTS = {"NaN": None, "Infinity": "Infinity",
                    "-Infinity": "-Infinity"}


_STRICT_DECODER = json.JSONDecoder(parse_constant=STRICT_CONSTANTS.__getitem__)


def loads_strict(text):
    """``json.loads`` that maps NaN/Infinity to strict JSON values."""
    # one decoder for every call: json.loads with an argument makes a new
    # one each time, which costs more than a short line (13,000 digest
    # lines: 0.2 s instead of 0.07 s)
    if isinstance(text, (bytes, bytearray)):
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    elif not isinstance(text, str) or text.startswith("\ufeff"):
        # json.loads' own errors (a BOM, a type that is no JSON text)
        return json.loads(text, parse_constant=STRICT_CONSTANTS.__getitem__)
    return _STRICT_DECODER.decode(text)


# -- records from elsewhere ---------------------------------------------------------



def normalize_record(obj, source: str) -> dict:
    """Validate a record read from elsewhere; return it in our shape.

    Unknown extra fields (such as upstream's ``id``) are kept. Raises
    ValueError with a message that names the offending field.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    url = obj.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ValueError("the record has no 'url'")
    for f in INT_FIELDS:
        v = obj.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"'{f}' must be an integer or null, not "
                             f"{_short(v)}")
        if v is not None and not INT_MIN <= v <= INT_MAX:
            raise ValueError(f"'{f}' is out of range (a 64-bit integer, as "
                             "DataLad-Registry stores it)")
    for f in STR_FIELDS:
        v = obj.get(f)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"'{f}' must be a string or null, not "
                             f"{_short(v)}")
    metadata = obj.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, list) or not all(
                isinstance(m, dict) and isinstance(m.get("extractor_name"), str)
                for m in metadata):
            raise ValueError("'metadata' must be a list of records with an "
                             "'extractor_name'")
    for f, kind in (("branches", dict), ("tags", list), ("subdatasets", list)):
        v = obj.get(f)
        if v is not None and not isinstance(v, kind):
            raise ValueError(f"'{f}' must be a JSON {kind.__name__}")
    # a metadata document may nest MAX_NESTING deep, three levels down
    # (record -> metadata -> entry -> document): one walk of the record
    # covers the (large) metadata; the other (small) fields are walked alone
    if nesting_depth(obj, MAX_NESTING + 3) > MAX_NESTING + 3 or any(
            nesting_depth(v, MAX_NESTING) > MAX_NESTING
            for f, v in obj.items() if f != "metadata"):
        # find what is too deep, for the message
        for f, v in obj.items():
            problem = too_deep(v, f"'{f}'") if f != "metadata" else next(
                filter(None, (too_deep(m.get("extracted_metadata"),
                                       f"the {m['extractor_name']} metadata")
                              for m in metadata or ())), None)
            if problem:
                raise ValueError(problem)
    rec = new_record(strip_credentials(url))
    rec.update({k: v for k, v in obj.items() if k != "url"})
    rec.pop("source", None)
    rec["metadata"] = rec.get("metadata") or []
    rec["subdatasets"] = rec.get("subdatasets") or []
    rec["extraction_failures"] = rec.get("extraction_failures") or {}
    rec["processed"] = bool(rec.get("processed"))
    rec["source"] = source
    return rec


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
