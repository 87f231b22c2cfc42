"""The record: one registered repository, in DataLad-Registry's API v2 shape.

A record is a plain ``dict``. The same shape is what ``registry-submit``
writes to the index, what ``registry-search -f json`` prints, what a JSON Lines
export holds and what ``registry-sync`` imports.

Fields shared with DataLad-Registry's API v2 (see the user guide for meaning):

==========================  ====================================================
``url``                     the repository URL as registered (no credentials)
``ds_id``                   DataLad dataset id, or None for plain git repos
``annex_uuid``              annex UUID of the remote (None if not annexed)
``head``                    hexsha of the remote's HEAD
``head_describe``           ``git describe --tags --always`` of HEAD
``head_dt``                 author date of HEAD (ISO 8601; upstream leaves it null)
``branches``                ``{name: {"hexsha", "last_commit_dt"}}``
``tags``                    ``[{"name", "hexsha"}]``
``annex_key_count``         keys known to the remote annex
``annexed_files_in_wt_count``  annexed files in HEAD's tree
``annexed_files_in_wt_size``   their total size in bytes
``git_objects_kb``          size of ``.git/objects`` in KiB
``last_update_dt``          when the facts were last refreshed (UTC, ISO 8601)
``last_chk_dt``             when the repository was last checked (UTC, ISO 8601)
``processed``               True once facts were computed
``metadata``                list of metadata records, latest one per extractor
==========================  ====================================================

Our own additions:

==========================  ====================================================
``subdatasets``             ``[{"path", "url", "ds_id"}]`` from ``.gitmodules``
``source``                  where the record came from: ``"local"`` for the
                            registry's own records, otherwise the name of the
                            source it was synced from
``extraction_failures``     ``{extractor: {"message", "time", "count"}}``
``registry_path``           path of the subdataset entry in the registry
                            (own records only)
==========================  ====================================================

This module imports nothing of ours.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

LOCAL_SOURCE = "local"

API_FIELDS = (
    "url",
    "ds_id",
    "annex_uuid",
    "head",
    "head_describe",
    "head_dt",
    "branches",
    "tags",
    "annex_key_count",
    "annexed_files_in_wt_count",
    "annexed_files_in_wt_size",
    "git_objects_kb",
    "last_update_dt",
    "last_chk_dt",
    "processed",
    "metadata",
)
OWN_FIELDS = ("subdatasets", "source", "extraction_failures", "registry_path")
FIELDS = API_FIELDS + OWN_FIELDS

# Facts that describe the repository itself; a change in one of them is a
# change worth reporting on re-submission (timestamps are not).
FACT_FIELDS = (
    "ds_id",
    "annex_uuid",
    "head",
    "head_describe",
    "head_dt",
    "branches",
    "tags",
    "annex_key_count",
    "annexed_files_in_wt_count",
    "annexed_files_in_wt_size",
    "git_objects_kb",
    "subdatasets",
)


def new_record(url: str, **facts) -> dict:
    """A record with every field present (None where unknown)."""
    rec = {f: None for f in FIELDS}
    rec.update(url=url, processed=False, metadata=[], source=LOCAL_SOURCE,
               extraction_failures={}, subdatasets=[])
    rec.update(facts)
    return rec


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


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
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if parts.scheme in ("ssh", "git+ssh") and ":" not in userinfo:
        return url
    netloc = hostport
    if parts.scheme in ("ssh", "git+ssh"):
        netloc = f"{userinfo.split(':', 1)[0]}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def has_credentials(url: str) -> bool:
    return strip_credentials(url) != url


def canonical_url(url: str) -> str:
    """The form under which a repository is registered.

    ``X``, ``X/`` and ``X.git`` name one repository: trailing slashes and a
    ``.git`` suffix are removed, as are credentials; the scheme and host are
    lower-cased; ``file:///p`` is the path ``/p``. Local paths must already be
    absolute.
    """
    url = strip_credentials(url.strip())
    parts = urlsplit(url)
    if parts.scheme and parts.netloc:
        path = _strip_repo_suffix(parts.path)
        return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path,
                           parts.query, ""))
    if parts.scheme == "file":
        # a file:// URL and the plain path name one repository
        return _strip_repo_suffix(parts.path)
    m = _SCP_LIKE.match(url)
    if m and not url.startswith("/"):
        return f"{m['user'] or ''}{m['host'].lower()}:{_strip_repo_suffix(m['path'])}"
    return _strip_repo_suffix(url)


def _strip_repo_suffix(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git") and len(path) > 4:
        path = path[:-4]
    return path.rstrip("/") or "/"


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


def _safe_segment(segment: str) -> str:
    segment = re.sub(r"[^A-Za-z0-9_.+-]+", "_", segment)
    # a leading dot would hide the entry (and '.git' is git's own)
    return segment.lstrip(".") or "_"


# -- records from elsewhere ---------------------------------------------------------

_INT_FIELDS = ("annex_key_count", "annexed_files_in_wt_count",
               "annexed_files_in_wt_size", "git_objects_kb")
_STR_FIELDS = ("ds_id", "annex_uuid", "head", "head_describe", "head_dt",
               "last_update_dt", "last_chk_dt")


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
    for f in _INT_FIELDS:
        v = obj.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"'{f}' must be an integer or null, not {v!r}")
    for f in _STR_FIELDS:
        v = obj.get(f)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"'{f}' must be a string or null, not {v!r}")
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
    rec = new_record(strip_credentials(url))
    rec.update({k: v for k, v in obj.items() if k != "url"})
    rec["metadata"] = rec.get("metadata") or []
    rec["subdatasets"] = rec.get("subdatasets") or []
    rec["extraction_failures"] = rec.get("extraction_failures") or {}
    rec["processed"] = bool(rec.get("processed"))
    rec["source"] = source
    return rec
