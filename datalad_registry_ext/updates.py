"""Keeping a registry current: check every registered repository, cheaply,
and refresh those that changed.

:func:`update` is what ``registry-update`` (and ``registry-serve
--update-every``) runs. One run

1. takes the registry's *update lock* (never two updates of one registry at
   once; a second one says so and ends, or waits for the first);
2. checks each repository with one ``git ls-remote`` (with a time limit):
   its default branch, HEAD, branches and tags are compared with the record.
   No registry lock is held meanwhile, so searches and submissions go on;
3. writes what the checks found to the index as it goes (every
   :data:`CHECKPOINT_SECONDS`): ``last_chk_dt`` for unchanged repositories,
   the failure count, error and time for failed ones (:func:`backoff`), and
   a journal of the changed ones, so a killed run is resumed by the next one
   without checking anything twice;
4. refreshes the changed repositories as ``registry-submit`` does
   (:func:`registration.register`: fetched into the clone cache, or cloned
   afresh after a force push or a changed default branch; facts recomputed;
   all of them in one registry commit), then runs the extractors that have
   no metadata at a changed repository's new HEAD (:func:`metadata.extract`).

A failed check makes the next one wait (exponential back-off, from
``datalad.registry.update-backoff-base`` up to ``-cap``); after
``datalad.registry.update-max-failures`` consecutive failures the repository
is *unreachable* and skipped unless ``force``. A successful check, or a
re-submission, ends the back-off.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from datalad import cfg

from datalad_registry_ext import config, metadata, registration
from datalad_registry_ext import registry as reg
from datalad_registry_ext import clones
from datalad_registry_ext.clones import clone_location
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.files import LockTimeout, atomic_write, locked
from datalad_registry_ext.gitcmd import RepositoryError, git
from datalad_registry_ext.index import local_index
from datalad_registry_ext.index_sync import own_records, reconcile_index
from datalad_registry_ext.locations import index_dir, user_cache_dir
from datalad_registry_ext.records import (
    canonical_url,
    checked,
    now_iso,
    scrub,
)

lgr = logging.getLogger("datalad.registry_ext.updates")

ACTION = "registry_update"
#: how often check results are written to the index (and the journal): a
#: run killed mid-way loses at most this much of its work
CHECKPOINT_SECONDS = 2.0
JOURNAL_NAME = "update-run.json"
LOCK_NAME = "datalad-registry-ext-update.lock"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UpdateError(RegistryExtError):
    status = "impossible"


def parse_duration(text) -> float:
    """Seconds of ``90``, ``30m``, ``6h``, ``2d``, ``1w``; ValueError
    otherwise (or when not positive)."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration (a number of seconds, "
                         "or a number with s, m, h, d or w: 30m, 6h)")
    seconds = float(m[1]) * _UNIT[m[2].lower()]
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def _config_duration(name: str, default: str) -> float:
    value = cfg.obtain(name, default=default)
    try:
        return parse_duration(value)
    except ValueError as e:
        raise UpdateError(f"configuration {name}: {e}") from None


def backoff(n_failed: int, base: float, cap: float) -> float:
    """Seconds to wait after the ``n_failed``-th consecutive failed check."""
    if n_failed <= 0:
        return 0.0
    return min(cap, base * 2 ** min(n_failed - 1, 60))


def _parse_dt(text) -> datetime | None:
    try:
        dt = datetime.fromisoformat(str(text))
    except (TypeError, ValueError):
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).replace(microsecond=0).isoformat()


# -- the cheap check ---------------------------------------------------------------

def remote_refs(url: str, timeout: float) -> dict:
    """What ``git ls-remote`` says of ``url``: ``head_branch`` (the default
    branch, None where the server does not say), ``head``, ``branches``
    (``{name: hexsha}``) and ``tags`` (``{name: hexsha}``, annotated tags
    peeled). RepositoryError (GitTimeout) when it fails."""
    out = git(["ls-remote", "--symref", "--", url, "HEAD", "refs/heads/*",
               "refs/tags/*"], secrets=[url], timeout=timeout)
    head_branch = head = None
    branches, tags, peeled = {}, {}, {}
    for line in out.splitlines():
        left, _, ref = line.partition("\t")
        if left.startswith("ref: "):
            if ref == "HEAD" and left[5:].startswith("refs/heads/"):
                head_branch = left[len("ref: refs/heads/"):]
            continue
        if ref == "HEAD":
            head = left
        elif ref.startswith("refs/heads/"):
            branches[ref[len("refs/heads/"):]] = left
        elif ref.startswith("refs/tags/"):
            name = ref[len("refs/tags/"):]
            if name.endswith("^{}"):
                peeled[name[:-3]] = left
            else:
                tags[name] = left
    tags.update({n: sha for n, sha in peeled.items() if n in tags})
    if head is None and head_branch in branches:
        head = branches[head_branch]
    if not head and not branches:
        raise RepositoryError("it has no branches (an empty repository?)")
    return {"head_branch": head_branch, "head": head, "branches": branches,
            "tags": tags}


def _clone_branch(registry: Path, url: str) -> str | None:
    """The default branch the clone cache's clone has checked out (its
    ``.git/HEAD``), or None: what the registry last saw as the default."""
    try:
        # read without the clone's lock: git replaces HEAD atomically
        text = (clone_location(canonical_url(url)) / ".git" /
                "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return None
    return text[len("ref: refs/heads/"):] if text.startswith(
        "ref: refs/heads/") else None


def differences(record: dict, refs: dict, clone_branch: str | None
                ) -> list[str]:
    """What differs between a record and its repository's refs, in words
    (empty: unchanged)."""
    if not record.get("processed") or not isinstance(
            record.get("branches"), dict):
        return ["facts never computed"]
    out = []
    if refs["head_branch"] and clone_branch and \
            refs["head_branch"] != clone_branch:
        out.append(f"default branch {clone_branch} -> {refs['head_branch']}")
    if refs["head"] and refs["head"] != record.get("head"):
        out.append(f"HEAD {str(record.get('head'))[:8]} -> "
                   f"{refs['head'][:8]}")
    known = {n: (b or {}).get("hexsha") if isinstance(b, dict) else None
             for n, b in record["branches"].items()}
    if known != refs["branches"]:
        added = sorted(set(refs["branches"]) - set(known))
        gone = sorted(set(known) - set(refs["branches"]))
        moved = sorted(n for n in set(known) & set(refs["branches"])
                       if known[n] != refs["branches"][n])
        for label, names in (("new branches", added), ("deleted branches",
                             gone), ("moved branches", moved)):
            if names:
                out.append(f"{label} {', '.join(names[:5])}"
                           + (" ..." if len(names) > 5 else ""))
    tags = {t.get("name"): t.get("hexsha") for t in record.get("tags") or []
            if isinstance(t, dict)}
    if tags != refs["tags"]:
        out.append("tags changed")
    return out


# -- the run ---------------------------------------------------------------------------

def update(location: Path, items: Iterable[str] = (), *, jobs: int = 1,
           force: bool = False, wait: bool = False, extract: bool = True,
           progress: Callable[[str, int, int], None] | None = None,
           stop: threading.Event | None = None) -> Iterator[dict]:
    """Check the registered repositories (all, or those ``items`` name: URLs,
    paths or dataset ids) and refresh those that changed; yield one outcome
    per repository checked or skipped, then one summary (``checked``,
    ``unchanged``, ``changed``, ``failed``, ``skipped``).

    ``force`` checks repositories that are backing off or unreachable too;
    ``wait`` waits for an update already running instead of ending.
    ``progress(stage, done, total)``; ``stop`` (set from another thread)
    ends the checks early: what was checked is kept.
    """
    location = Path(location)
    base = {"action": ACTION, "path": str(location), "type": "dataset"}
    if not reg.is_registry(location):
        yield dict(base, status="impossible",
                   message=f"there is no registry at {location} "
                           "(registry-submit creates one)")
        return
    registry = location
    gitdir = Path(git(["rev-parse", "--absolute-git-dir"],
                      cwd=registry).strip())
    try:
        with locked(gitdir / LOCK_NAME, timeout=24 * 3600 if wait else 0,
                    what=f"the registry {registry} (registry-update)"):
            yield from _run(registry, list(items), jobs=jobs, force=force,
                            extract=extract, progress=progress, stop=stop,
                            base=base)
    except LockTimeout:
        yield dict(base, status="notneeded",
                   message=f"another registry-update of {registry} is "
                           "running; it will check everything (wait for it "
                           "with --wait)")


def _run(registry: Path, items: list[str], *, jobs, force, extract,
         progress, stop, base) -> Iterator[dict]:
    base_s = _config_duration(config.UPDATE_BACKOFF_BASE, "1h")
    cap_s = _config_duration(config.UPDATE_BACKOFF_CAP, "7d")
    max_failures = int(cfg.obtain(config.UPDATE_MAX_FAILURES, default=10))
    timeout = float(cfg.obtain(config.UPDATE_TIMEOUT, default=60))
    index = local_index(registry)
    reconcile_index(registry, index)
    if items:
        records, problems = metadata.select_records(registry, items)
        for arg, problem in problems:
            yield dict(base, status="impossible", url=arg, message=problem)
        if not records:
            return
    else:
        records = sorted(own_records(registry, index), key=lambda r: r["url"])

    journal = Journal(index_dir(registry) / JOURNAL_NAME)
    resumed = journal.load()   # we hold the lock: a journal is a dead run's
    since = resumed["started"] if resumed else now_iso()
    pending = set(resumed["changed"]) if resumed else set()
    journal.save(since, pending)

    now = datetime.now(timezone.utc)
    counts = dict(checked=0, unchanged=0, changed=0, failed=0, skipped=0,
                  resumed=0)
    to_check, changed, reasons = [], [], {}
    for rec in records:
        n = rec.get("n_failed_chks") or 0
        if resumed and max(str(rec.get("last_chk_dt") or ""),
                           str(rec.get("last_failed_chk_dt") or "")) >= since:
            counts["resumed"] += 1
            continue  # the interrupted run checked it, and that is stored
        if rec["url"] in pending:
            changed.append(rec)   # found changed by the interrupted run
            reasons[rec["url"]] = ["found changed by an interrupted run"]
            continue
        if not force and n >= max_failures:
            counts["skipped"] += 1
            yield _repo(base, registry, rec, "notneeded", "unreachable",
                        f"{rec['url']} is unreachable ({n} failed checks, the "
                        f"last: {rec.get('last_chk_error')}); skipped (check "
                        "it anyway with --force)")
            continue
        if not force and n:
            last = _parse_dt(rec.get("last_failed_chk_dt"))
            due = last + timedelta(seconds=backoff(n, base_s, cap_s)) \
                if last else now
            if due > now:
                counts["skipped"] += 1
                yield _repo(base, registry, rec, "notneeded", "backing-off",
                            f"{rec['url']} failed its last "
                            f"{'check' if n == 1 else f'{n} checks'}; next "
                            f"check after {_iso(due)} (or with --force)")
                continue
        to_check.append(rec)

    # -- 2 + 3: check, write results as we go
    found: list[tuple[dict, str, object]] = []
    last_flush = time.monotonic()
    done = 0

    def check(rec):
        if stop is not None and stop.is_set():
            return rec, "stopped", None
        try:
            refs = remote_refs(rec["url"], timeout)
        except RepositoryError as e:
            return rec, "failed", scrub(str(e))
        diff = differences(rec, refs, _clone_branch(registry, rec["url"]))
        return rec, ("changed" if diff else "unchanged"), diff

    outcomes = []
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        # as they complete: a slow repository must not hold back the
        # checkpoint of those checked after it
        waiting = {pool.submit(check, rec) for rec in to_check}
        while waiting:
            # wake up at least every checkpoint interval: a repository that
            # hangs must not hold back storing what the others found
            ready, waiting = wait_for(waiting, timeout=CHECKPOINT_SECONDS,
                                      return_when=FIRST_COMPLETED)
            for future in ready:
                rec, what, detail = future.result()
                done += 1
                if progress:
                    progress("Checking", done, len(to_check))
                if what == "stopped":
                    continue
                counts["checked"] += 1
                found.append((rec, what, detail))
                if what == "changed":
                    changed.append(rec)
                    reasons[rec["url"]] = detail
                    pending.add(rec["url"])
            if found and time.monotonic() - last_flush >= CHECKPOINT_SECONDS:
                outcomes += _flush(registry, index, journal, since, pending,
                                   found, max_failures, base_s, cap_s)
                found = []
                last_flush = time.monotonic()
    finally:
        # interrupted (Ctrl-C, a closed generator): start no further checks
        pool.shutdown(wait=True, cancel_futures=True)
    outcomes += _flush(registry, index, journal, since, pending, found,
                       max_failures, base_s, cap_s)
    for o in outcomes:
        counts[o.pop("_count")] += 1
        yield o

    # -- 4: refresh the changed ones, one commit
    if changed:
        yield from _refresh(registry, index, changed, reasons, counts, jobs=jobs,
                            extract=extract, progress=progress, base=base,
                            max_failures=max_failures, base_s=base_s,
                            cap_s=cap_s)
    journal.remove()
    parts = [f"{counts[k]} {k}" for k in ("checked", "unchanged", "changed",
                                           "failed", "skipped")]
    if counts["resumed"]:
        parts.append(f"{counts['resumed']} checked by an interrupted run")
    stopped = stop is not None and stop.is_set()
    yield dict(base, status="ok" if counts["changed"] else "notneeded",
               summary=True, **counts, stopped=stopped,
               message=f"registry-update of {registry}: " + ", ".join(parts)
               + (" (stopped early)" if stopped else ""))


def _repo(base, registry, rec, status, check, message, **extra) -> dict:
    path = registry / rec["registry_path"] if rec.get("registry_path") \
        else registry
    return dict(base, path=str(path), status=status, url=rec["url"],
                registry_path=rec.get("registry_path"), check=check,
                message=message, **extra)


def _flush(registry, index, journal, since, pending, found, max_failures,
           base_s, cap_s) -> list[dict]:
    """Write check results to the index (unchanged: ``last_chk_dt``; failed:
    the failure count, error and time), then the journal of the changed
    ones; return their outcomes."""
    journal.save(since, pending)
    if not found:
        return []
    now = now_iso()
    outcomes = []
    with index.transaction() as txn:
        for rec, what, detail in found:
            cur = txn.get(rec["url"])
            if what == "unchanged":
                if cur:
                    txn.put(checked(cur, now))
                outcomes.append(dict(_repo(
                    {"action": ACTION, "type": "dataset"}, registry, rec,
                    "notneeded", "unchanged",
                    f"{rec['url']} is unchanged"), _count="unchanged"))
            elif what == "failed":
                outcomes.append(dict(_failed(registry, txn, cur or rec,
                                             detail, now, max_failures,
                                             base_s, cap_s),
                                     _count="failed"))
    return outcomes


def _failed(registry, txn, rec, error, now, max_failures, base_s, cap_s
            ) -> dict:
    n = (rec.get("n_failed_chks") or 0) + 1
    if txn.get(rec["url"]) is not None:
        txn.put(dict(rec, n_failed_chks=n, last_chk_error=error,
                     last_failed_chk_dt=now))
    if n >= max_failures:
        then = f"unreachable after {n} failed checks: skipped from now on " \
               "(--force checks it; re-submitting it resets the count)"
    else:
        due = _parse_dt(now) + timedelta(seconds=backoff(n, base_s, cap_s))
        then = f"failed check {n}; next check after {_iso(due)}"
    return _repo({"action": ACTION, "type": "dataset"}, registry, rec,
                 "error", "failed", f"cannot check {rec['url']}: {error} "
                 f"({then})", n_failed_chks=n)


def _refresh(registry, index, changed, reasons, counts, *, jobs, extract,
             progress, base, max_failures, base_s, cap_s) -> Iterator[dict]:
    def stage(label):
        return (lambda d, t: progress(label, d, t)) if progress else None

    candidates = [registration.Candidate(r["url"], r["url"], r["url"])
                  for r in changed]
    by_url = {r["url"]: r for r in changed}
    try:
        outcomes = list(registration.register(registry, candidates, jobs=jobs,
                                              progress=stage("Fetching")))
    except RegistryExtError as e:
        outcomes = [dict(url=r["url"], status="error", message=str(e))
                    for r in changed]
    refreshed, failed, same = [], [], []
    for o in outcomes:
        rec = by_url.get(o["url"]) or {}
        why = "; ".join(reasons.get(o["url"]) or [])
        if o["status"] == "ok":
            counts["changed"] += 1
            refreshed.append(o["record"])
            what = registration.describe_changes(
                o.get("before") or {}, o["record"], o.get("changed") or [])
            yield _repo(base, registry, o["record"], "ok", "changed",
                        f"updated {o['url']}: {what} ({why})",
                        change="updated", changed=o.get("changed"),
                        before=o.get("before"), record=o["record"])
        elif o["status"] == "notneeded":
            # the refs moved, but not so that a fact changed
            counts["unchanged"] += 1
            same.append(o["record"])
            yield _repo(base, registry, o["record"], "notneeded", "unchanged",
                        f"{o['url']} changed ({why}), its facts did not")
        else:
            failed.append((rec, o["message"]))
    now = now_iso()
    failures = []
    if same or failed:
        with index.transaction() as txn:
            for rec in same:
                cur = txn.get(rec["url"])
                if cur:
                    txn.put(checked(cur, now))
            for rec, message in failed:
                counts["failed"] += 1
                failures.append(_failed(
                    registry, txn, txn.get(rec["url"]) or rec, message, now,
                    max_failures, base_s, cap_s))
    yield from failures
    if extract and refreshed:
        current = {r["url"]: r for r in own_records(registry, index)}
        records = [current.get(r["url"], r) for r in refreshed]
        yield from metadata.extract(
            registry, records, metadata.configured_extractors(), jobs=jobs,
            progress=stage("Extracting"))


class Journal:
    """The record of a run under way: when it started and which
    repositories it found changed. A run that finds one (holding the update
    lock, so its writer is gone) resumes it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {"started": str(data["started"]),
                    "changed": [str(u) for u in data["changed"]]}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            lgr.warning("ignoring the unreadable journal %s of an interrupted "
                        "registry-update (%s)", self.path, e)
            return None

    def save(self, started: str, changed) -> None:
        atomic_write(self.path, json.dumps(
            {"started": started, "changed": sorted(changed)}))

    def remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class Scheduler:
    """Run :func:`update` every ``every`` seconds in a background thread
    (``registry-serve --update-every``) until :meth:`stop`. The first run
    starts one interval after :meth:`start`; a run is never started while
    another update of the registry runs (it reports ``notneeded``)."""

    def __init__(self, registry: Path, every: float, jobs: int = 4):
        self.registry = Path(registry)
        self.every = float(every)
        self.jobs = jobs
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: the summary of the last run (for logs and tests)
        self.last: dict | None = None
        self.runs = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="registry-update")
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        # a run under way ends after the checks already started; what it
        # checked is kept
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                for o in update(self.registry, jobs=self.jobs,
                                stop=self._stop):
                    if o.get("summary") or (o.get("action") == ACTION
                                            and o.get("check") is None):
                        self.last = o
                        lgr.info("%s", o.get("message"))
                    elif o["status"] == "error":
                        lgr.warning("%s", o.get("message"))
            except Exception as e:  # noqa: BLE001 - the server must go on
                lgr.error("registry-update of %s failed: %s", self.registry,
                          e)
                self.last = {"status": "error", "message": str(e)}
            self.runs += 1


# -- the clone cache: --prune ------------------------------------------------------

PRUNE_ACTION = "registry_prune"
#: a registry that used a clone this recently keeps it even though it does
#: not list the repository (yet): its registration may be under way
PRUNE_GRACE_SECONDS = 3600.0


def prune(*, grace: float = PRUNE_GRACE_SECONDS) -> Iterator[dict]:
    """Drop the clones of the user's clone cache that no registry uses;
    yield one outcome per clone dropped, then a summary.

    A clone is used by a registry its references file names
    (:func:`clones.references`) that exists and lists the repository among
    its committed entries (the registry's store of record; its index is
    derived from them), or that used the clone less than ``grace`` seconds
    ago. A registry that cannot be read keeps its clones. A clone whose
    lock is held is in use: kept. Also dropped: the per-registry clone
    caches of earlier versions, and clones being made by processes that
    died more than ``grace`` seconds ago.
    """
    root = clones.clone_cache_dir()
    base = {"action": PRUNE_ACTION, "type": "directory"}
    now = datetime.now(timezone.utc)
    listed: dict[str, set | None] = {}
    counts = dict(dropped=0, kept=0, busy=0, legacy=0, temporaries=0,
                  bytes=0)

    def lists(registry: str, key: str) -> bool | None:
        """Whether ``registry`` lists ``key`` (None: it is no registry)."""
        if registry not in listed:
            listed[registry] = _listed_keys(Path(registry))
        keys = listed[registry]
        if keys is None:
            return None
        return key in keys or "*" in keys

    def users(refs: dict) -> list[str]:
        key, out = refs["url"], []
        for registry, when in refs["registries"].items():
            state = lists(registry, key) if key else None
            used = _parse_dt(when)
            if state or (state is not None and used is not None
                         and (now - used).total_seconds() < grace):
                out.append(registry)
        return out

    for clone in clones.cached_clones():
        if users(clones.references(clone)):
            counts["kept"] += 1
            continue
        try:
            # timeout 0: a clone someone holds is in use, whatever its
            # references say
            with locked(clones.lock_path(clone), timeout=0,
                        what=f"the clone {clone}"):
                # read again: a registration may have added itself
                refs = clones.references(clone)
                if users(refs):
                    counts["kept"] += 1
                    continue
                size = clones.disk_usage(clone)
                clones.remove_tree(clone)
                clones.refs_path(clone).unlink(missing_ok=True)
        except LockTimeout:
            counts["busy"] += 1
            continue
        counts["dropped"] += 1
        counts["bytes"] += size
        yield dict(base, path=str(clone), status="ok", url=refs["url"],
                   registries=sorted(refs["registries"]), bytes=size,
                   message=f"dropped the clone of "
                           f"{refs['url'] or 'an unknown repository'} "
                           f"({_mb(size)}): {_why_unused(refs)}")

    # caches of earlier versions, one per registry, never read again (their
    # clones are moved into the shared cache only as registries use them)
    legacy_root = user_cache_dir() / "clones"
    try:
        legacy = sorted(p for p in legacy_root.iterdir()
                        if p.is_dir() and p != root)
    except OSError:
        legacy = []
    for old in legacy:
        size = clones.disk_usage(old)
        clones.remove_tree(old)
        counts["legacy"] += 1
        counts["bytes"] += size
        yield dict(base, path=str(old), status="ok", url=None, bytes=size,
                   message=f"dropped {old} ({_mb(size)}): the clone cache of "
                           "one registry, left by an earlier version")

    cutoff = time.time() - grace
    for tmp in clones.stale_temporaries(cutoff):
        size = clones.disk_usage(tmp)
        clones.remove_tree(tmp)
        counts["temporaries"] += 1
        counts["bytes"] += size

    gone = counts["dropped"] + counts["legacy"]
    extra = []
    if counts["legacy"]:
        extra.append(f"{counts['legacy']} per-registry caches of an earlier "
                     "version dropped")
    if counts["temporaries"]:
        extra.append(f"{counts['temporaries']} unfinished clones removed")
    if counts["busy"]:
        extra.append(f"{counts['busy']} in use, kept")
    yield dict(base, path=str(root), status="ok" if gone or counts[
        "temporaries"] else "notneeded", summary=True, **counts,
        message=f"registry-update --prune of {root}: {counts['dropped']} "
                f"clones dropped, {counts['kept']} kept"
                + "".join(f", {e}" for e in extra)
                + f"; {_mb(counts['bytes'])} freed")


def _listed_keys(registry: Path) -> set | None:
    """The canonical URLs ``registry`` lists; None when it is no registry
    (any more); ``{"*"}`` when it cannot be read (then it keeps every clone
    it uses: better a clone too many than one cloned again for nothing)."""
    if not reg.is_registry(registry):
        return None
    try:
        entries = reg.read_entries(registry)
    except RegistryExtError:
        return {"*"}
    return {canonical_url(r["url"]) for r in entries.values() if r.get("url")}


def _why_unused(refs: dict) -> str:
    if not refs["registries"]:
        return "no registry uses it"
    gone = [r for r in refs["registries"] if not reg.is_registry(Path(r))]
    if len(gone) == len(refs["registries"]):
        return "its registries are gone: " + ", ".join(sorted(gone))
    return "no registry lists it any more"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
