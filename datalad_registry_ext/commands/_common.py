"""What every registry-* command shares: the -d parameter, turning domain
outcomes and failures into result records, progress bars, small renderers."""
from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from datalad import cfg
from datalad.interface.results import get_status_dict
from datalad.log import log_progress
from datalad.support.constraints import Constraint
from datalad.support.exceptions import CapturedException
from datalad.support.param import Parameter

from datalad_registry_ext import config
from datalad_registry_ext.errors import RegistryExtError, os_error_message
from datalad_registry_ext.locations import default_registry_path
from datalad_registry_ext.records import scrub

dataset_param = Parameter(
    args=("-d", "--dataset"),
    metavar="REGISTRY",
    doc="""the registry superdataset to work with (its path), created on
    first use. Default: the value of the configuration item
    ``datalad.registry.dataset``, else a registry in the user data
    directory.""")


class EnsureCount(Constraint):
    """A whole number of at least ``min`` (or nothing, if ``allow_none``);
    its help reads as a sentence, unlike ``EnsureInt() & EnsureRange()``."""

    def __init__(self, min: int = 0, *, allow_none: bool = False):
        self.min = min
        self.allow_none = allow_none

    def __call__(self, value):
        if value is None and self.allow_none:
            return None
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a whole number")
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a whole number") from None
        if isinstance(value, float) and value != n:
            raise ValueError(f"{value!r} is not a whole number")
        if n < self.min:
            raise ValueError(f"{n} is less than {self.min}")
        return n

    def short_description(self):
        return f"a whole number, {self.min} or more"

    def long_description(self):
        return f"value must be a whole number, {self.min} or more"


def registry_location(dataset) -> Path:
    """The registry's path: -d, else config, else the default location."""
    if dataset is not None:
        return Path(getattr(dataset, "path", dataset)).absolute()
    # no registered default: the user data dir can change (XDG_DATA_HOME)
    configured = cfg.get(config.DATASET)
    if configured:
        return Path(configured).expanduser().absolute()
    return default_registry_path()


def error_result(e: BaseException, *, path, common: dict, type="dataset",
                 **fields) -> dict:
    """A result record for a failure: status ``error`` (or the exception's
    own ``status``), its message (credentials scrubbed), the exception kept
    for ``-l debug``."""
    if isinstance(e, OSError) and not isinstance(e, RegistryExtError):
        message = os_error_message(e, e.filename or path, "use")
    else:
        message = str(e) or e.__class__.__name__
    return get_status_dict(
        status=getattr(e, "status", "error"), path=str(path), type=type,
        message=scrub(message), exception=CapturedException(e),
        **fields, **common)


def results(outcomes: Iterable[dict], *, common: dict, path) -> Iterator[dict]:
    """Result records of domain outcomes (dicts shaped like result records).

    A domain failure ends the stream with one error result naming what
    failed, never a traceback.
    """
    try:
        for o in outcomes:
            yield get_status_dict(**{**common, **o})
    except (RegistryExtError, OSError) as e:
        yield error_result(e, path=path, common=common)


def quiet_on_closed_pipe() -> None:
    """On the command line, end quietly when the reader of our output goes
    away (``registry-search ... | head -1``), as command-line tools do:
    the default action of SIGPIPE. Python ignores SIGPIPE and DataLad would
    report the BrokenPipeError. A Python program using the API keeps its own
    handling."""
    if os.path.basename(sys.argv[0] or "") == "datalad" and \
            hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def human_size(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 record``, ``2 records``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


@contextmanager
def progress_bars(logger, unit: str = ""):
    """DataLad progress bars, one per stage; yields ``update(stage, done,
    total)``. Shown in interactive sessions only."""
    open_bars: dict[str, str] = {}

    def update(stage: str, done: int, total: int):
        pid = open_bars.get(stage)
        if pid is None:
            pid = open_bars[stage] = f"registry-{stage}-{id(logger)}-{os.getpid()}"
            log_progress(logger.info, pid, "%s %d", stage, total, label=stage,
                         unit=unit, total=total, noninteractive_level=5)
        log_progress(logger.info, pid, "%s: %d of %d", stage, done, total,
                     update=done, total=total, noninteractive_level=5)

    try:
        yield update
    finally:
        for stage, pid in open_bars.items():
            log_progress(logger.info, pid, "%s: done", stage,
                         noninteractive_level=5)
