"""One validated settings object, read from the environment at handler entry (never at import).

The environment holds names and limits only; the API key and project id live in Secrets Manager
(`SECRET_ID` names the secret) and are read through Powertools Parameters with caching.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from batchdrop.validation import MAX_LINES_PER_BATCH, MAX_UPLOAD_BYTES


class ConfigurationError(Exception):
    """The function's environment is incomplete or invalid."""


class Settings(BaseModel):
    """Every function reads the same settings; each uses the part it needs."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    table_name: str = Field(alias="TABLE_NAME", min_length=1)
    secret_id: str = Field(alias="SECRET_ID", min_length=1)
    bucket_name: str = Field(default="", alias="BUCKET_NAME")
    """The stack's bucket: `Submit Batch Job` events may name objects of this bucket only (empty: any)."""
    api_base_url: str = Field(default="prod", alias="API_BASE_URL", min_length=1)
    input_prefix: str = Field(default="inbox/", alias="INPUT_PREFIX")
    output_prefix: str = Field(default="outbox/", alias="OUTPUT_PREFIX")
    work_prefix: str = Field(default="work/", alias="WORK_PREFIX")
    max_lines_per_batch: int = Field(
        default=MAX_LINES_PER_BATCH, alias="MAX_LINES_PER_BATCH", ge=1, le=MAX_LINES_PER_BATCH
    )
    # The upload cap is 100 MiB; the default leaves room so a shard never meets a 413.
    max_bytes_per_batch: int = Field(
        default=100_000_000, alias="MAX_BYTES_PER_BATCH", ge=1_048_576 + 1, le=MAX_UPLOAD_BYTES
    )
    max_batches_in_flight: int = Field(default=20, alias="MAX_BATCHES_IN_FLIGHT", ge=1)
    topic_arn: str = Field(default="", alias="TOPIC_ARN")
    event_bus_name: str = Field(default="default", alias="EVENT_BUS_NAME", min_length=1)
    collect_queue_url: str = Field(default="", alias="COLLECT_QUEUE_URL")
    ingest_queue_url: str = Field(default="", alias="INGEST_QUEUE_URL")
    """Where the poller hands held-back shards to the submit function."""
    poll_concurrency: int = Field(default=8, alias="POLL_CONCURRENCY", ge=1, le=64)
    poll_min_interval_seconds: int = Field(default=30, alias="POLL_MIN_INTERVAL_SECONDS", ge=0)
    poll_max_interval_seconds: int = Field(default=900, alias="POLL_MAX_INTERVAL_SECONDS", ge=1)
    job_retention_days: int = Field(default=30, alias="JOB_RETENTION_DAYS", ge=1)
    secret_max_age_seconds: int = Field(default=300, alias="SECRET_MAX_AGE_SECONDS", ge=0)

    @field_validator("input_prefix", "output_prefix", "work_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        if value and not value.endswith("/"):
            raise ValueError("a prefix must be empty or end with '/'")
        return value

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if environ is None else environ
        known = {field.alias for field in cls.model_fields.values() if field.alias}
        try:
            return cls.model_validate({key: value for key, value in source.items() if key in known})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors()
            )
            raise ConfigurationError(f"invalid function configuration: {problems}") from None


@lru_cache(maxsize=1)
def _cached_settings(items: frozenset[tuple[str, str]]) -> Settings:
    return Settings.from_environ(dict(items))


def load_settings() -> Settings:
    """The settings for this invocation; parsed once per distinct environment (warm starts reuse it)."""
    known = {field.alias for field in Settings.model_fields.values() if field.alias}
    return _cached_settings(frozenset((k, v) for k, v in os.environ.items() if k in known))
