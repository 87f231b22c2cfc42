"""Submissions a server accepts (``--allow-submit``): a queue file and one
background worker.

``POST /api/v2/dataset-urls`` only queues the URL: the queue is a JSON file
next to the registry's index (``serve-submissions.json``), written
atomically under its lock (:mod:`datalad_registry_ext.files`), so an
accepted submission survives a crash or a restart. One worker thread takes
the URLs in order and runs the existing registration on each
(:func:`datalad_registry_ext.registration.submit`: clone, facts, commit,
metadata extraction); a URL leaves the queue when its registration has run,
whatever its outcome (outcomes go to the log). A URL still queued when the
server stops -- even one whose registration was under way -- is registered
when the server starts next.

Only remote URLs are accepted (:func:`remote_url`): a web client must never
make the server read its own file system.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from datalad_registry_ext import registration
from datalad_registry_ext.errors import RegistryExtError
from datalad_registry_ext.files import atomic_write, locked
from datalad_registry_ext.locations import index_dir
from datalad_registry_ext.records import (
    LOCAL_SOURCE,
    canonical_url,
    has_credentials,
    now_iso,
    record_id,
    scrub,
)

lgr = logging.getLogger("datalad.registry_ext.server")

REMOTE_SCHEMES = ("http", "https", "ssh", "git")
MAX_URL_LENGTH = 2048
QUEUE_NAME = "serve-submissions.json"


def remote_url(text: str) -> str:
    """The URL to register for a submitted ``text``; ValueError (with the
    reason) unless it is a remote http(s), ssh or git URL without
    credentials."""
    text = text.strip()
    if len(text) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is longer than {MAX_URL_LENGTH} "
                         "characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as e:  # e.g. an invalid IPv6 address
        raise ValueError(f"not a valid URL ({e})") from None
    if parts.scheme.lower() not in REMOTE_SCHEMES or "://" not in text:
        raise ValueError(
            "only remote URLs are accepted: "
            f"{', '.join(s + '://' for s in REMOTE_SCHEMES)} (no local "
            "paths, no file://)")
    if not host:
        raise ValueError("the URL has no host")
    if has_credentials(text):
        raise ValueError("URLs with credentials are not accepted")
    try:
        # no file system access for a URL with a scheme
        return registration.resolve_input(text).url
    except registration.InputError as e:
        raise ValueError(str(e)) from None


def candidate_ids(url: str) -> list[int]:
    """The ids the registry's own record of ``url`` may have (as given, and
    in its canonical form)."""
    return list(dict.fromkeys(record_id(LOCAL_SOURCE, u)
                              for u in (url, canonical_url(url))))


def _pending_shape(url: str) -> dict:
    # what upstream answers for a row not processed yet
    return {"url": url, "id": record_id(LOCAL_SOURCE, url),
            "processed": False, "metadata": []}


class SubmissionQueue:
    """The pending submissions of one registry, and the worker."""

    def __init__(self, registry: Path):
        self.registry = Path(registry)
        self.path = index_dir(self.registry) / QUEUE_NAME
        self.lock_path = self.path.with_name(QUEUE_NAME + ".lock")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the file -------------------------------------------------------------------

    def _read(self) -> list[dict]:
        try:
            items = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            # written atomically: only a hand edit gets here; keep serving
            lgr.warning("ignoring the unreadable submission queue %s: %s",
                        self.path, e)
            return []
        return [i for i in items if isinstance(i, dict)
                and isinstance(i.get("url"), str)] \
            if isinstance(items, list) else []

    def _write(self, items: list[dict]) -> None:
        atomic_write(self.path, json.dumps(items, indent=1) + "\n")

    def _locked(self):
        return locked(self.lock_path, what=f"the submission queue {self.path}")

    def pending(self) -> list[dict]:
        with self._locked():
            return self._read()

    def add(self, url: str) -> bool:
        """Queue ``url``; False if it is queued already."""
        with self._locked():
            items = self._read()
            if any(i["url"] == url for i in items):
                return False
            items.append({"url": url, "submitted": now_iso()})
            self._write(items)
        self._wake.set()
        return True

    def done(self, url: str) -> None:
        with self._locked():
            items = self._read()
            self._write([i for i in items if i["url"] != url])

    def pending_record(self, id_: int) -> dict | None:
        """The API representation of a queued URL with this id, or None."""
        for item in self.pending():
            if record_id(LOCAL_SOURCE, item["url"]) == id_:
                return _pending_shape(item["url"])
        return None

    def pending_record_for(self, url: str) -> dict:
        return _pending_shape(url)

    # -- the worker -------------------------------------------------------------------

    def start(self) -> None:
        # a submitted URL may name a host that accepts the connection and
        # never answers: git gives up on a transfer slower than 1 byte/s
        # for 60 s instead of holding the one worker forever (settings of
        # the server's environment win)
        os.environ.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1")
        os.environ.setdefault("GIT_HTTP_LOW_SPEED_TIME", "60")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._work, name="registry-submissions", daemon=True)
        self._thread.start()

    def stopping(self) -> None:
        """The server was asked to stop (called from the signal handler):
        a registration that fails from now on -- its git processes got the
        signal too, as in a terminal or under systemd -- stays queued."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to stop after its current registration; wait for
        it a little (a clone can take long: what is unfinished stays queued
        and is redone on the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                lgr.warning("a registration is still running; it stays "
                            "queued and is redone when the server starts "
                            "again")

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                items = self.pending()
            except RegistryExtError as e:  # the lock, the disk
                lgr.error("cannot read the submission queue: %s", e)
                self._wake.wait(10)
                continue
            if not items:
                self._wake.wait()
                continue
            url = items[0]["url"]
            self._register(url)
            if self._stop.is_set():
                # stopped during it: it may be cut short; keep it queued
                break
            try:
                self.done(url)
            except RegistryExtError as e:
                lgr.error("cannot update the submission queue: %s", e)
                self._wake.wait(10)

    def _register(self, url: str) -> None:
        lgr.info("registering %s", scrub(url))
        try:
            for o in registration.submit(self.registry, [url]):
                log = lgr.info if o.get("status") in ("ok", "notneeded") \
                    else lgr.warning
                log("%s %s: %s", o.get("action"), o.get("status"),
                    scrub(str(o.get("message"))))
        except Exception as e:  # one URL must not stop the worker
            lgr.error("registering %s failed: %s", scrub(url), scrub(str(e)),
                      exc_info=True)


def lifespan(queue: SubmissionQueue | None, start_worker: bool = True,
             threads: int = 8):
    """The application's lifespan: the worker runs while the server does.

    Requests run in a pool of at most ``threads`` threads (anyio's default
    is 40): searching is CPU-bound and holds the GIL, so more threads only
    add search-database connections (memory) and latency, not throughput.
    """
    @asynccontextmanager
    async def span(app):
        import anyio.to_thread
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        if queue is not None and start_worker:
            queue.start()
        try:
            yield
        finally:
            if queue is not None:
                queue.stop()
    return span
