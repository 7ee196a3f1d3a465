"""The pipeline's own typed records: the input object, the job, its shards, and their states."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    RECEIVED = "received"  # recorded; the input is being validated and split
    SUBMITTING = "submitting"  # shards stored and recorded; batches being created
    FINISHED = "finished"  # results merged, report written
    REJECTED = "rejected"  # the input failed validation; nothing was sent to the API


class ShardState(StrEnum):
    PENDING = "pending"  # stored under the work prefix; no batch yet (or held back by the in-flight limit)
    SUBMITTED = "submitted"  # a batch exists at the API; polled until terminal
    TERMINAL = "terminal"  # the batch ended (or could not be created); waiting to be collected
    COLLECTED = "collected"  # its results are under the work prefix; counted


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


INPUT_SUFFIXES = (".jsonl", ".jsonl.gz")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An input object as S3 identifies it: a re-upload of the same key is a different object."""

    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

    @property
    def job_id(self) -> str:
        """Deterministic: duplicated events for one object map to one job."""
        identity = self.version_id or f"etag:{(self.etag or '').strip(chr(34))}"
        digest = hashlib.sha256(f"{self.bucket}\n{self.key}\n{identity}".encode()).hexdigest()
        return f"job-{digest[:32]}"

    @property
    def is_gzip(self) -> bool:
        return self.key.endswith(".gz")


def input_name(key: str, input_prefix: str, *, reserved_prefixes: tuple[str, ...] | None = None) -> str | None:
    """The name results are filed under: `inbox/a/b.jsonl` -> `a/b`. None for keys that are not inputs.

    By default only keys under the input prefix are inputs (S3 events). With `reserved_prefixes`, as for a
    `Submit Batch Job` event, any other key is accepted too, named by its whole path, except keys under the
    reserved (output and work) prefixes, which the pipeline itself writes.
    """
    if key.startswith(input_prefix):
        rest = key[len(input_prefix) :]
    elif reserved_prefixes is not None and not any(key.startswith(prefix) for prefix in reserved_prefixes if prefix):
        rest = key
    else:
        return None
    for suffix in INPUT_SUFFIXES:
        if rest.endswith(suffix) and len(rest) > len(suffix):
            name = rest[: -len(suffix)]
            segments = name.split("/")
            if any(segment in ("", ".", "..") for segment in segments):
                return None
            if any(ord(char) < 32 or ord(char) == 127 for char in name):
                return None
            return name
    return None


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class InputInfo(BaseModel):
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    bytes: int | None = None
    lines: int | None = None


class Job(BaseModel):
    """One input object's journey. Stored as the `JOB` item under the job's partition."""

    job_id: str
    status: JobStatus
    input: InputInfo
    output_prefix: str
    """Where results go, e.g. `outbox/<name>/`."""
    received_at: int
    shard_count: int | None = None
    submit_announce_claimed_at: int | None = None
    submitted_at: int | None = None
    """Set once every shard has a batch (or failed to get one) and `Batch Job Submitted` went out."""
    finished_at: int | None = None
    outcome: Outcome | None = None
    cancel_requested_at: int | None = None
    validation_error_count: int | None = None
    """Rejected jobs: how many problems the input had (the report lists the first ones)."""
    errors_by_code: dict[str, int] | None = None
    """Rejected jobs: problems per validation code."""
    notify_claimed_at: int | None = None
    finished_event_sent_at: int | None = None
    finished_message_sent_at: int | None = None
    notified_at: int | None = None
    expires_at: int | None = None
    version: int = 0


class ShardResult(BaseModel):
    succeeded: int = 0
    failed: int = 0
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    output_key: str
    errors_key: str


class Shard(BaseModel):
    """One slice of a job's input, submitted as one batch. Stored as `SHARD#nnnnn` under the job."""

    job_id: str
    index: int
    state: ShardState
    work_key: str
    """The shard's input lines under the work prefix: the durable copy every retry starts from."""
    lines: int
    bytes: int
    first_line: int
    """The input file's line number of this shard's first line."""
    next_poll_at: int | None = None
    upload_started_at: int | None = None
    """Set before the first upload: from then on the file may exist at the API even without an id."""
    input_file_id: str | None = None
    create_started_at: int | None = None
    """Set before the first create call: from then on a batch may exist at the API even without an id."""
    batch_id: str | None = None
    batch_status: str | None = None
    request_counts: RequestCounts | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    holds_slot: bool = False
    lease_owner: str | None = None
    lease_until: int | None = None
    submit_attempts: int = 0
    first_deferred_at: int | None = None
    """When a submission was first deferred by an API failure; after a day of them the shard gives up."""
    result: ShardResult | None = None
    expires_at: int | None = None
    version: int = 0

    @property
    def metadata(self) -> dict[str, str]:
        """What the batch carries so that it can be found (and adopted) after an ambiguous create."""
        return {"batchdrop_job_id": self.job_id, "batchdrop_shard": str(self.index)}

    @property
    def upload_filename(self) -> str:
        return f"batchdrop-{self.job_id}-{self.index:05d}.jsonl"
