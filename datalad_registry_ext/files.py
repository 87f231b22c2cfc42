"""Writing our own files safely: one atomic write, one lock.

:func:`atomic_file` is how every file of ours is written (index files, the
registry's records file, exports): into a temporary file next to the target,
flushed and fsynced, then renamed over the target. A crash leaves the old file
or the new one, never a half-written one. Errors are
:class:`~datalad_registry_ext.errors.StorageError` naming the file (a full or
read-only disk says so, with the path).

:func:`locked` serialises writers across processes with a file lock; a
writer that waits too long gets :class:`LockTimeout` naming the lock file.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from datalad import cfg
from fasteners import InterProcessLock

from datalad_registry_ext.config import LOCK_TIMEOUT
from datalad_registry_ext.errors import RegistryExtError, storage_error

TMP_SUFFIX = ".tmp"


class LockTimeout(RegistryExtError):
    """Another process held a lock for too long."""


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path, mode: str = "wb"):
    """Yield a file object; on success it replaces ``path`` atomically.

    A new file gets the permissions the umask allows (not mkstemp's 0600);
    an existing file keeps its own. If the block raises, ``path`` is left as
    it was and the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TMP_SUFFIX,
                                   dir=path.parent)
    except OSError as e:
        raise storage_error(e, path) from e
    try:
        try:
            perms = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            perms = 0o666 & ~_umask()
        os.chmod(tmp, perms)
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise storage_error(e, path) from e
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _remove(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_stale_temporaries(path, older_than: float = 0) -> int:
    """Remove temporary files :func:`atomic_file` left beside ``path`` (a
    process killed mid-write) that are older than ``older_than`` (a POSIX
    time). Call it with the writers' lock held. Returns how many went."""
    path = Path(path)
    n = 0
    try:
        candidates = list(path.parent.glob(f"{path.name}.*{TMP_SUFFIX}"))
    except OSError:
        return 0
    for tmp in candidates:
        try:
            if tmp.stat().st_mtime < older_than:
                tmp.unlink()
                n += 1
        except OSError:
            pass
    return n


@contextmanager
def locked(lock_path, *, timeout: float | None = None, what: str = "it"):
    """Hold the inter-process lock ``lock_path`` while the block runs.

    ``what`` names the locked thing in the timeout message ("the index
    /x/local.json"). ``timeout`` defaults to ``datalad.registry.lock-timeout``. Yields the time the lock was taken: temporary files
    older than that were left by a writer that died.
    """
    lock_path = Path(lock_path)
    if timeout is None:
        # waiting longer than this for another writer means something is stuck
        timeout = float(cfg.obtain(LOCK_TIMEOUT))
    # fcntl locks belong to the process: two threads (of a server) would
    # both hold one, and each would remove the other's temporary file. A
    # thread lock per lock file serialises them; re-entrant, as a nested
    # fcntl lock of one thread always succeeded.
    guard = _thread_lock(lock_path)
    if not guard.acquire(timeout=timeout):
        raise LockTimeout(
            f"another thread has been writing to {what} for more than "
            f"{timeout:.0f} s (lock file {lock_path})")
    try:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = InterProcessLock(str(lock_path))
            acquired = lock.acquire(timeout=timeout)
        except OSError as e:
            raise storage_error(e, lock_path, "lock") from e
        if not acquired:
            raise LockTimeout(
                f"another process has been writing to {what} for more than "
                f"{timeout:.0f} s (lock file {lock_path}); if no other "
                "registry command is running, delete the lock file and try "
                "again")
        try:
            yield time.time()
        finally:
            lock.release()
    finally:
        guard.release()


_thread_locks: dict[str, threading.RLock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(lock_path: Path) -> threading.RLock:
    key = os.path.abspath(lock_path)
    with _thread_locks_guard:
        return _thread_locks.setdefault(key, threading.RLock())
