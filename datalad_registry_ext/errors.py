"""The domain's exceptions: one base, so a command can turn any of them into
a result record.

Every exception raised on purpose by this package derives from
:class:`RegistryExtError`. Its ``str()`` is the message a user reads: it names
the file, URL or line concerned and, where there is one, the command that
repairs the situation. Commands catch :class:`RegistryExtError` (and
``OSError`` at their edges), yield a result with status ``error`` or
``impossible`` and keep the exception for ``-l debug`` as DataLad's
``CapturedException``; nothing reaches the user as a traceback.

This module imports nothing, so every other module (the query package too)
may import it.
"""
from __future__ import annotations

import errno
import os


class RegistryExtError(Exception):
    """A failure of the registry domain, with a message fit for a user."""

    #: the result status a command reports for this kind of failure
    status = "error"


class StorageError(RegistryExtError):
    """A file of ours cannot be read or written (disk full, read-only, ...)."""


def os_error_message(e: OSError, path, verb: str = "write") -> str:
    """``cannot write /x/y: No space left on device (the disk is full)``.

    OSError's own text often lacks the path (a rename, an fsync) or says only
    ``[Errno 30]``; this names both, plus a hint for the common cases.
    """
    reason = e.strerror or str(e) or type(e).__name__
    hint = {
        errno.ENOSPC: "the disk is full; free some space and run the "
                      "command again",
        errno.EROFS: "the file system is read-only; choose a writable "
                     "location",
        errno.EACCES: "permission denied; check the directory's "
                      "permissions",
        errno.EDQUOT: "the disk quota is exceeded",
    }.get(e.errno)
    text = f"cannot {verb} {os.fspath(path)}: {reason}"
    return f"{text} ({hint})" if hint else text


def storage_error(e: OSError, path, verb: str = "write") -> StorageError:
    """A :class:`StorageError` for ``e`` that names ``path``."""
    err = StorageError(os_error_message(e, path, verb))
    err.__cause__ = e
    return err
