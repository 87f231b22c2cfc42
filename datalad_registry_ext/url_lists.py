"""Lists of repositories to submit (``registry-submit --from FILE``).

Two formats are understood:

- a text file with one URL or path per line (blank lines and lines starting
  with ``#`` are ignored);
- DataLad's usage-dashboard ``datalad-repos.json``: an object with the lists
  ``github``, ``gin``, ``hub_datalad_org``, ``atris`` (and ``osf``), whose
  entries carry ``url`` and ``status``. Active entries are submitted, with the
  clone URL DataLad-Registry uses (``.git`` appended for GitHub, hub and
  ATRIS). OSF entries cannot be cloned with git and are reported as skipped.
"""
from __future__ import annotations

import json
from pathlib import Path

from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.records import scrub

# service -> suffix that turns the page URL into the clone URL
DASHBOARD_SERVICES = {
    "github": ".git",
    "gin": "",
    "hub_datalad_org": ".git",
    "atris": ".git",
}
UNSUPPORTED_SERVICES = {
    "osf": "OSF projects are not git repositories and cannot be registered",
}


class UrlListError(RegistryExtError, ValueError):
    """The file cannot be read as a list of repositories."""
    status = "impossible"


def read_url_list(path: Path | str) -> tuple[list[str], list[dict]]:
    """Return ``(urls, skipped)`` from a ``--from`` file.

    ``skipped`` holds ``{"url", "reason"}`` for entries that are not
    submitted (OSF, inactive ones are silently left out as upstream does).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UrlListError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UrlListError(
            f"{path} is not a text file (not UTF-8 at byte {e.start})") from e
    if text.lstrip().startswith(("{", "[")):
        return _read_dashboard(path, text)
    urls = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            if any(c.isspace() for c in line):
                raise UrlListError(
                    f"{path} line {n}: {scrub(line)!r} is not a URL (one URL "
                    "per line)")
            urls.append(line)
    return urls, []


def _read_dashboard(path: Path, text: str) -> tuple[list[str], list[dict]]:
    urls, skipped = [], []
    for entry in dashboard_entries(text, str(path)):
        if entry["status"] != "active":
            continue
        if entry["clone_url"] is None:
            skipped.append({"url": entry["url"], "reason": entry["reason"]})
            continue
        urls.append(entry["clone_url"])
    return urls, skipped


#: where DataLad's usage dashboard publishes its list of repositories (as
#: DataLad-Registry's daily sync reads it)
DASHBOARD_URL = ("https://raw.githubusercontent.com/datalad/"
                 "datalad-usage-dashboard/master/datalad-repos.json")


def dashboard_entries(text: str, where: str) -> list[dict]:
    """The entries of a ``datalad-repos.json`` text (``where`` names it in
    messages), in file order: ``{"service", "url", "status", "clone_url",
    "reason"}``; ``status`` as given (``active`` when missing),
    ``clone_url`` the URL DataLad-Registry clones (None for OSF, with the
    ``reason``). UrlListError for anything but a dashboard collection."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise UrlListError(f"{where} is not valid JSON: {e}") from e
    known = set(DASHBOARD_SERVICES) | set(UNSUPPORTED_SERVICES)
    if not isinstance(data, dict) or not known & set(data):
        raise UrlListError(
            f"{where} is JSON but not a datalad-repos.json collection (expected "
            f"an object with some of the lists: {', '.join(sorted(known))})")
    out = []
    for service, entries in data.items():
        if service not in known:
            continue
        if not isinstance(entries, list):
            raise UrlListError(f"{where}: '{service}' is not a list")
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                raise UrlListError(
                    f"{where}: entry {n} of '{service}' has no 'url'")
            status = entry.get("status", "active")
            item = {"service": service, "url": entry["url"],
                    "status": status if isinstance(status, str) else
                    repr(status), "clone_url": None, "reason": None}
            if service in UNSUPPORTED_SERVICES:
                item["reason"] = UNSUPPORTED_SERVICES[service]
            else:
                url = entry["url"].rstrip("/")
                suffix = DASHBOARD_SERVICES[service]
                if suffix and not url.endswith(suffix):
                    url += suffix
                item["clone_url"] = url
            out.append(item)
    return out
