"""What every registry-* command shares: the -d parameter and its resolution."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from datalad.distribution.dataset import EnsureDataset
from datalad.support.constraints import EnsureNone
from datalad.support.param import Parameter

dataset_param = Parameter(
    args=("-d", "--dataset"),
    metavar="REGISTRY",
    doc="""the registry superdataset to work with. Default: the value of
    the configuration item ``datalad.registry.dataset``, else a registry in
    the user data directory, created on first use.""",
    constraints=EnsureDataset() | EnsureNone())


def registry_location(dataset) -> Path:
    """The registry's path: -d, else config, else the default location."""
    if dataset is not None:
        return Path(getattr(dataset, "path", dataset)).absolute()
    from datalad import cfg
    from datalad_registry_ext import config
    from datalad_registry_ext.locations import default_registry_path
    # no registered default: the user data dir can change (XDG_DATA_HOME)
    configured = cfg.get(config.DATASET)
    if configured:
        return Path(configured).expanduser().absolute()
    return default_registry_path()


def human_size(n) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


@contextmanager
def progress_bar(logger, label: str, unit: str, total: int):
    """A DataLad progress bar; yields ``update(done, total)``.

    Shown in interactive sessions only (kept out of non-interactive logs).
    """
    from datalad.log import log_progress
    pid = f"registry-{label}-{id(logger)}-{total}"
    log_progress(logger.info, pid, "%s %d %s", label, total, unit.strip(),
                 label=label, unit=unit, total=total, noninteractive_level=5)

    def update(done, total):
        log_progress(logger.info, pid, "%s: %d of %d", label, done, total,
                     update=done, total=total, noninteractive_level=5)

    try:
        yield update
    finally:
        log_progress(logger.info, pid, "%s: done", label,
                     noninteractive_level=5)
