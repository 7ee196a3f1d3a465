"""Each function's validated settings, read from the environment at handler entry (never at import).

The environment holds names and limits only; the API key and project id live in Secrets Manager
(`SECRET_ID` names the secret) and are read through Powertools Parameters with caching.

Fail closed: what decides who may submit, or where work and results go, has no default in the settings
of the function that uses it (SubmitSettings, PollSettings, CollectSettings; `load_settings("submit")`);
an empty value is refused like a missing one. The base, Settings, is what the steps read.
The three prefixes may not contain one another, or the pipeline's own writes would come back as inputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchdrop.custom_ids import MAX_IDS
from batchdrop.pricing import DEFAULT_PRICES, PriceTable
from batchdrop.validation import MAX_LINES_PER_BATCH, MAX_UPLOAD_BYTES

Function = Literal["submit", "poll", "collect"]


class ConfigurationError(Exception):
    """The function's environment is incomplete or invalid."""


class Settings(BaseModel):
    """What the steps read. A function loads its own subclass below, which requires what it decides by."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    table_name: str = Field(alias="TABLE_NAME", min_length=1)
    secret_id: str = Field(alias="SECRET_ID", min_length=1)
    bucket_name: str = Field(default="", alias="BUCKET_NAME")
    """The stack's bucket: inputs are read and results written there, and `Submit Batch Job` events may
    name objects of this bucket only. Required by submit."""
    api_base_url: str = Field(default="prod", alias="API_BASE_URL", min_length=1)
    input_prefix: str = Field(alias="INPUT_PREFIX", min_length=2)
    output_prefix: str = Field(alias="OUTPUT_PREFIX", min_length=2)
    work_prefix: str = Field(alias="WORK_PREFIX", min_length=2)
    max_lines_per_batch: int = Field(
        default=MAX_LINES_PER_BATCH, alias="MAX_LINES_PER_BATCH", ge=1, le=MAX_LINES_PER_BATCH
    )
    # The upload cap is 100 MiB; the default leaves room so a shard never meets a 413.
    max_bytes_per_batch: int = Field(
        default=100_000_000, alias="MAX_BYTES_PER_BATCH", ge=1_048_576 + 1, le=MAX_UPLOAD_BYTES
    )
    max_batches_in_flight: int = Field(default=20, alias="MAX_BATCHES_IN_FLIGHT", ge=1)
    max_input_bytes: int = Field(default=10 * 1024**3, alias="MAX_INPUT_BYTES", ge=1)
    """Decompressed bytes one input may have."""
    max_input_lines: int = Field(default=5_000_000, alias="MAX_INPUT_LINES", ge=1, le=MAX_IDS)
    """Lines one input may have, blank ones included."""
    max_batches_per_input: int = Field(default=1000, alias="MAX_BATCHES_PER_INPUT", ge=1, le=4_999)
    topic_arn: str = Field(default="", alias="TOPIC_ARN")
    event_bus_name: str = Field(default="default", alias="EVENT_BUS_NAME", min_length=1)
    collect_queue_url: str = Field(default="", alias="COLLECT_QUEUE_URL")
    ingest_queue_url: str = Field(default="", alias="INGEST_QUEUE_URL")
    """Where the poller hands held-back shards to the submit function."""
    poll_concurrency: int = Field(default=32, alias="POLL_CONCURRENCY", ge=1, le=64)
    """Batches one poll run looks at side by side: at 32, 10,000 running batches at about 50 ms per API call
    fit one run's working time (10,000 x 50 ms / 32 = 15.6 s of the 30 s a run starts work in)."""
    poll_min_interval_seconds: int = Field(default=30, alias="POLL_MIN_INTERVAL_SECONDS", ge=0)
    poll_max_interval_seconds: int = Field(default=900, alias="POLL_MAX_INTERVAL_SECONDS", ge=1)
    shard_wait_limit_hours: float = Field(default=168, alias="SHARD_WAIT_LIMIT_HOURS", gt=0)
    """How long a shard may wait for an in-flight slot before it ends as `wait_timed_out`."""
    submit_retry_limit_hours: float = Field(default=24, alias="SUBMIT_RETRY_LIMIT_HOURS", gt=0)
    """How long a shard's failing submission is retried before it ends as `batch_create_failed`."""
    batch_deadline_hours: float = Field(default=26, alias="BATCH_DEADLINE_HOURS", gt=24)
    """How long after its creation a batch may stay unfinished (ZeroGPU's window is 24 h) before the
    shard ends as `batch_timed_out` (and the batch is cancelled)."""
    batch_not_found_grace_minutes: float = Field(default=60, alias="BATCH_NOT_FOUND_GRACE_MINUTES", gt=0)
    """How long the API may answer 404 for a batch before its shard ends as `batch_not_found`."""
    collect_retry_limit_hours: float = Field(default=24, alias="COLLECT_RETRY_LIMIT_HOURS", gt=0)
    """How long a result file that cannot be downloaded is tried again before its lines end as
    `results_unavailable`."""
    redrive_enabled: bool = Field(default=True, alias="REDRIVE_ENABLED")
    """Whether a job's failed lines that may succeed on another try are sent again (redrive.py)."""
    max_redrive_rounds: int = Field(default=2, alias="MAX_REDRIVE_ROUNDS", ge=0, le=10)
    """Re-drives per job after its first round (0: none)."""
    redrive_backoff_seconds: int = Field(default=300, alias="REDRIVE_BACKOFF_SECONDS", ge=0, le=86_400)
    """The wait before the first re-drive; it doubles for each round after."""
    job_deadline_hours: float = Field(default=72, alias="JOB_DEADLINE_HOURS", gt=0)
    """Hours after a job arrived when no new round may start: the job ends with what it has."""
    stuck_after_minutes: float = Field(default=60, alias="STUCK_AFTER_MINUTES", gt=0)
    """Minutes an `in_progress` batch may go without a line more done before it counts as stuck
    (`BatchesStuck`, an alarm; `batchdrop jobs show` marks it)."""
    expiry_warning_hours: float = Field(default=20, alias="EXPIRY_WARNING_HOURS", gt=0, lt=24)
    """Hours into its 24-hour window when a batch with work left is looked at for its expiry."""
    expiry_warning_done_fraction: float = Field(default=0.5, alias="EXPIRY_WARNING_DONE_FRACTION", gt=0, le=1)
    """A batch with less than this share of its lines done at `EXPIRY_WARNING_HOURS` is near its expiry
    (`BatchesNearExpiry`, an alarm)."""
    cancel_near_expiry: bool = Field(default=False, alias="CANCEL_NEAR_EXPIRY")
    """Whether a batch near its expiry is cancelled then (its finished lines kept), so that its unrun lines
    go into the job's next round at once instead of waiting for the expiry."""
    delete_provider_files: bool = Field(default=False, alias="DELETE_PROVIDER_FILES")
    """Whether a job's input, output and error files are deleted at the API once the job has ended and
    their contents are in S3."""
    result_link_hours: float = Field(default=24, alias="RESULT_LINK_HOURS", ge=0, le=168)
    """How long the SNS message's pre-signed links to the results work (0: plain s3:// URIs only)."""
    status_interval_seconds: int = Field(default=60, alias="STATUS_INTERVAL_SECONDS", ge=0, le=3600)
    """How often, at most, the poller writes a running job's progress on its record and in
    outbox/<name>/status.json (flow/progress.py)."""
    status_jobs_per_run: int = Field(default=200, alias="STATUS_JOBS_PER_RUN", ge=0, le=10_000)
    """At most this many jobs' progress a poll run writes (those written longest ago first; the rest in the
    runs after): the run's time goes to the batches, however many jobs are in flight."""
    results_csv: bool = Field(default=True, alias="RESULTS_CSV")
    """Whether a finished job also gets outbox/<name>/results.csv (results_table.py)."""
    max_estimated_cost_per_job: float = Field(default=0, alias="MAX_ESTIMATED_COST_PER_JOB", ge=0)
    """A job whose estimated cost (estimate.py, at the price table's prices) is above this is rejected
    before any API call; 0: no limit."""
    price_table_parameter: str = Field(default="", alias="PRICE_TABLE_PARAMETER")
    """An SSM parameter holding a price table as PRICE_TABLE does, read at run time over it (Services.prices),
    for tables too big for the environment or changed without a deploy; "" for none."""
    price_table: str = Field(default="", alias="PRICE_TABLE")
    """The operator's prices as JSON (`{"models": {"<model>": {"input_per_million": ..., "output_per_million":
    ..., "batch_discount": ...}}, "currency"?, "as_of"?}`), over the default table (pricing.py); "" keeps it."""
    job_retention_days: int = Field(default=30, alias="JOB_RETENTION_DAYS", ge=1)
    secret_max_age_seconds: int = Field(default=300, alias="SECRET_MAX_AGE_SECONDS", ge=0)

    @field_validator("price_table")
    @classmethod
    def _price_table_reads(cls, value: str) -> str:
        if value.strip():
            _read_prices(value)
        return value

    @property
    def prices(self) -> PriceTable:
        """The default price table with the operator's changes."""
        return _read_prices(self.price_table) if self.price_table.strip() else DEFAULT_PRICES

    @field_validator("input_prefix", "output_prefix", "work_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        if not value.endswith("/"):
            raise ValueError("a prefix must end with '/'")
        return value

    @model_validator(mode="after")
    def _prefixes_apart(self) -> Settings:
        prefixes = {
            "INPUT_PREFIX": self.input_prefix,
            "OUTPUT_PREFIX": self.output_prefix,
            "WORK_PREFIX": self.work_prefix,
        }
        names = list(prefixes)
        for position, first in enumerate(names):
            for second in names[position + 1 :]:
                a, b = prefixes[first], prefixes[second]
                if a.startswith(b) or b.startswith(a):
                    inner, outer = (first, second) if a.startswith(b) else (second, first)
                    raise ValueError(
                        f"{inner} {prefixes[inner]!r} lies under {outer} {prefixes[outer]!r}: the pipeline's own "
                        "writes would be read as inputs; choose prefixes that do not contain one another"
                    )
        return self

    @property
    def reserved_prefixes(self) -> tuple[str, str]:
        """Where the pipeline writes: never an input."""
        return (self.output_prefix, self.work_prefix)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, function: str | None = None) -> Self:
        source = os.environ if environ is None else environ
        try:
            return cls.model_validate({key: value for key, value in source.items() if key in _FIELD_BY_ALIAS})
        except ValidationError as error:
            problems = "; ".join(_describe(item) for item in error.errors())
            what = f"{function} function" if function else "function"
            raise ConfigurationError(
                f"invalid {what} configuration: {problems} (template.yaml sets every one of them)"
            ) from None


def _read_prices(text: str) -> PriceTable:
    try:
        return DEFAULT_PRICES.merged_json(text)
    except (ValueError, ValidationError) as error:
        raise ValueError(
            f'is not a price table ({str(error).splitlines()[0]}): give {{"models": {{"<model>": '
            '{"input_per_million": 0.15, "output_per_million": 0.6}}}, as the README\'s "Prices" says'
        ) from None


class SubmitSettings(Settings):
    """Who may submit (the stack's bucket) and where results and rejections are announced."""

    bucket_name: str = Field(alias="BUCKET_NAME", min_length=1)
    topic_arn: str = Field(alias="TOPIC_ARN", min_length=1)


class PollSettings(Settings):
    """Where ended shards (collect) and held shards (submit) are handed over."""

    collect_queue_url: str = Field(alias="COLLECT_QUEUE_URL", min_length=1)
    ingest_queue_url: str = Field(alias="INGEST_QUEUE_URL", min_length=1)


class CollectSettings(Settings):
    """Where results are announced."""

    topic_arn: str = Field(alias="TOPIC_ARN", min_length=1)


SETTINGS_OF: dict[Function, type[Settings]] = {
    "submit": SubmitSettings,
    "poll": PollSettings,
    "collect": CollectSettings,
}

_FIELD_BY_ALIAS = {field.alias: name for name, field in Settings.model_fields.items() if field.alias}


def _describe(item: Mapping[str, object]) -> str:
    location = ".".join(str(part) for part in item["loc"])  # type: ignore[attr-defined]
    message = str(item["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}" if location else message


@lru_cache(maxsize=8)
def _cached_settings(items: frozenset[tuple[str, str]], function: Function | None) -> Settings:
    settings_class = SETTINGS_OF[function] if function else Settings
    return settings_class.from_environ(dict(items), function=function)


def load_settings(function: Function | None = None) -> Settings:
    """The function's settings for this invocation, parsed once per distinct environment (warm starts
    reuse it)."""
    return _cached_settings(frozenset((k, v) for k, v in os.environ.items() if k in _FIELD_BY_ALIAS), function)
