"""Configuration items of the extension (``datalad.registry.*``).

Registered with DataLad's config machinery, so each one can also be given as
an environment variable (``datalad.registry.dataset`` is
``DATALAD_REGISTRY_DATASET``) and shows up in ``datalad configuration``.
"""
from datalad.support.constraints import EnsureBool, EnsureInt, EnsureStr
from datalad.support.extensions import register_config

DATASET = "datalad.registry.dataset"
EXTRACTORS = "datalad.registry.extractors"
METADATA_MAX_BYTES = "datalad.registry.metadata-max-bytes"
LOCK_TIMEOUT = "datalad.registry.lock-timeout"
RECORD_MAX_BYTES = "datalad.registry.record-max-bytes"
IMPORT_MAX_BYTES = "datalad.registry.import-max-bytes"
IMPORT_MAX_RATIO = "datalad.registry.import-max-ratio"
RESPONSE_MAX_BYTES = "datalad.registry.response-max-bytes"
HTTP_TIMEOUT = "datalad.registry.http-timeout"
RESULT_CACHE = "datalad.registry.result-cache"
INCREMENTAL_SYNC = "datalad.registry.incremental-sync"
UPDATE_BACKOFF_BASE = "datalad.registry.update-backoff-base"
UPDATE_BACKOFF_CAP = "datalad.registry.update-backoff-cap"
UPDATE_MAX_FAILURES = "datalad.registry.update-max-failures"
UPDATE_TIMEOUT = "datalad.registry.update-timeout"

# DataLad-Registry's five, plus the legacy extractors that describe a dataset
# as a whole.
DEFAULT_EXTRACTORS = (
    "metalad_core",
    "metalad_studyminimeta",
    "datacite_gin",
    "bids_dataset",
    "dandi",
    "datalad_rfc822",
    "frictionless_datapackage",
)


def register():
    register_config(
        INCREMENTAL_SYNC,
        "Sync a service incrementally",
        description=(
            "Whether registry-sync of a DataLad-Registry service synced "
            "before transfers only what changed since (true) or every "
            "record again (false)."),
        type=EnsureBool(),
        default=True,
        scope="global",
    )
    _register_update()
    register_config(
        RESULT_CACHE,
        "Search answers kept per process",
        description=(
            "How many search answers (counts, statistics, pages of up to "
            "200 records) a long-running process such as registry-serve "
            "keeps, each valid until its index changes. 0 keeps none."),
        type=EnsureInt(),
        default=256,
        scope="global",
    )
    register_config(
        DATASET,
        "Location of the dataset registry",
        description=(
            "Path of the registry superdataset that registry-* commands use "
            "when no -d/--dataset is given. Default: a 'registry' dataset in "
            "the user data directory (platformdirs)."),
        type=EnsureStr(),
        scope="global",
    )
    register_config(
        EXTRACTORS,
        "Metadata extractors run on registered datasets",
        description=(
            "Names of the metadata extractors registry-extract runs, "
            "separated by spaces or commas."),
        type=EnsureStr(),
        default=" ".join(DEFAULT_EXTRACTORS),
        scope="global",
    )
    register_config(
        METADATA_MAX_BYTES,
        "Largest metadata file an extractor reads",
        description=(
            "Metadata files (dataset_description.json, datacite.yml, ...) "
            "larger than this many bytes are not parsed; extraction reports "
            "an error instead."),
        type=EnsureInt(),
        default=10 * 1024 * 1024,
        scope="global",
    )
    register_config(
        LOCK_TIMEOUT,
        "Seconds to wait for another registry command's lock",
        description=(
            "A registry-* command that writes waits this long for another "
            "one writing the same registry or index, then gives up with an "
            "error naming the lock file."),
        type=EnsureInt(),
        default=600,
        scope="global",
    )
    register_config(
        RECORD_MAX_BYTES,
        "Largest record (one JSON Lines line) registry-sync imports",
        description=(
            "A line of a JSON Lines source longer than this many bytes is "
            "skipped and reported with its line number."),
        type=EnsureInt(),
        default=16 * 1024 * 1024,
        scope="global",
    )
    register_config(
        IMPORT_MAX_BYTES,
        "Largest JSON Lines source registry-sync reads",
        description=(
            "A source that holds (or decompresses to) more than this many "
            "bytes is refused and nothing is imported."),
        type=EnsureInt(),
        default=8 * 1024 ** 3,
        scope="global",
    )
    register_config(
        IMPORT_MAX_RATIO,
        "Largest compression ratio of a gzipped JSON Lines source",
        description=(
            "A gzip file that decompresses to more than this many times its "
            "own size (past the first 64 MiB) is refused as a decompression "
            "bomb and nothing is imported."),
        type=EnsureInt(),
        default=100,
        scope="global",
    )
    register_config(
        RESPONSE_MAX_BYTES,
        "Largest answer of a DataLad-Registry service read at once",
        description=(
            "A page of records, a search answer or any other single JSON "
            "answer of a remote registry larger than this many bytes is "
            "refused (registry-sync imports nothing from that source). A "
            "JSON Lines stream is bounded by import-max-bytes instead."),
        type=EnsureInt(),
        default=256 * 1024 * 1024,
        scope="global",
    )
    register_config(
        HTTP_TIMEOUT,
        "Seconds to wait for a DataLad-Registry service",
        description=(
            "How long registry-sync, registry-search --at and "
            "registry-submit --to wait for a remote registry to connect or "
            "to send more data before the attempt counts as failed (failed "
            "attempts are retried a few times, with back-off)."),
        type=EnsureInt(),
        default=60,
        scope="global",
    )


def _register_update():
    """registry-update's items (durations: seconds, or 30m, 6h, 2d)."""
    register_config(
        UPDATE_BACKOFF_BASE,
        "Wait after a repository's first failed check",
        description=(
            "After a failed check registry-update leaves a repository alone "
            "for this long, doubled after every further consecutive failure "
            "(up to update-backoff-cap). A duration: seconds, or a number "
            "with s, m, h, d or w."),
        type=EnsureStr(),
        default="1h",
        scope="global",
    )
    register_config(
        UPDATE_BACKOFF_CAP,
        "Longest wait between checks of a failing repository",
        description=(
            "The back-off of registry-update never exceeds this duration."),
        type=EnsureStr(),
        default="7d",
        scope="global",
    )
    register_config(
        UPDATE_MAX_FAILURES,
        "Consecutive failed checks after which a repository is unreachable",
        description=(
            "registry-update skips a repository whose last this many checks "
            "failed, unless --force is given; a successful check or a "
            "re-submission resets the count."),
        type=EnsureInt(),
        default=10,
        scope="global",
    )
    register_config(
        UPDATE_TIMEOUT,
        "Seconds registry-update waits for a repository to answer",
        description=(
            "A git ls-remote that takes longer counts as a failed check."),
        type=EnsureInt(),
        default=60,
        scope="global",
    )
