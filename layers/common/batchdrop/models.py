"""The pipeline's own typed records: the input object, the job, its shards, and their states."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from batchdrop.estimate import TokenEstimate
from batchdrop.validation import Problem, ProblemCode, echo


class JobStatus(StrEnum):
    RECEIVED = "received"  # recorded; the input is being validated and split
    SUBMITTING = "submitting"  # shards stored and recorded; batches being created
    FINISHED = "finished"  # results merged, report written
    REJECTED = "rejected"  # the input failed validation; nothing was sent to the API


class ShardState(StrEnum):
    PENDING = "pending"  # stored under the work prefix; no batch yet (waiting for a slot, or deferred)
    SUBMITTED = "submitted"  # a batch exists at the API; polled until terminal
    TERMINAL = "terminal"  # the batch ended (or could not be created); waiting to be collected
    COLLECTED = "collected"  # its results are under the work prefix; counted


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class FailureCode(StrEnum):
    """The pipeline's own codes, for lines that never ran or whose results were lost (errors.jsonl,
    errors_by_code) and for why a shard ended without a batch; the API's codes are kept as it sends them."""

    BATCH_CREATE_FAILED = "batch_create_failed"
    BATCH_CANCELLED = "batch_cancelled"
    BATCH_FAILED = "batch_failed"
    BATCH_TIMED_OUT = "batch_timed_out"
    BATCH_NOT_FOUND = "batch_not_found"
    WAIT_TIMED_OUT = "wait_timed_out"
    RESULTS_UNAVAILABLE = "results_unavailable"
    MISSING_RESULT = "missing_result"
    INPUT_MISSING = "input_missing"
    COLLECT_FAILED = "collect_failed"


class DeferralCode(StrEnum):
    """Why a submission was put off (recorded on the shard until it is tried again), where the API's reply
    has no code of its own."""

    AWS_ERROR = "aws_error"
    API_UNREACHABLE = "api_unreachable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    AMBIGUOUS_REPLY = "ambiguous_reply"
    API_ERROR = "api_error"


NOT_CREATED = "not_created"
"""The batch status recorded for a shard that ended without a batch."""


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
        return self.key.lower().endswith(".gz")


RESULT_NAMES = ("report.json", "output.jsonl", "errors.jsonl", "results.csv", "status.json")
MAX_KEY_BYTES = 1024
REJECTED_KEYS_FOLDER = "_rejected-keys"
"""Under the output prefix: the reports of keys that cannot name a results folder of their own."""


@dataclass(frozen=True, slots=True)
class InputKey:
    """An input key, and where its results go: `name` for `<output prefix><name>/`, or, for a key that
    cannot be run, the problem (its report goes under `_rejected-keys/<job id>/`)."""

    name: str | None
    problem: Problem | None = None

    def output_prefix(self, output_prefix: str, job_id: str) -> str:
        if self.name is None:
            return f"{output_prefix}{REJECTED_KEYS_FOLDER}/{job_id}/"
        return f"{output_prefix}{self.name}/"


def classify_key(
    key: str, *, input_prefix: str, output_prefix: str, reserved_prefixes: tuple[str, ...], any_key: bool = False
) -> InputKey | None:
    """None for keys that are not inputs: outside the input prefix (S3 events; a `Submit Batch Job` may
    name any key, `any_key`, but only a `.jsonl`/`.jsonl.gz` one), a folder marker, or under a prefix the
    pipeline writes to (never its own writes). Every other key is either run, named by its path (the
    extension in any case: `.JSONL` too), or rejected with a problem: a file dropped under the input prefix
    that is not JSON Lines gets its report at `<output prefix><file name>/report.json`."""
    if any(key.startswith(prefix) for prefix in reserved_prefixes):
        return None
    if key.startswith(input_prefix):
        rest = key[len(input_prefix) :]
    elif any_key:
        rest = key
    else:
        return None
    if not rest or rest.endswith("/"):
        return None  # a folder marker, not a file
    lowered = rest.lower()
    suffix = next((suffix for suffix in INPUT_SUFFIXES if lowered.endswith(suffix)), None)
    shown = echo(repr(key)[1:-1])
    if suffix is None or len(rest) == len(suffix):
        if any_key:
            return None  # a Submit Batch Job naming it is answered with Batch Job Rejected
        # Dropped under the input prefix but never to be run: answered with a rejected report, not ignored.
        stem = rest.rsplit("/", 1)[-1].split(".", 1)[0] or "data"
        folder = rest.rsplit("/", 1)[0] + "/" if "/" in rest else ""
        problem = Problem(
            ProblemCode.NOT_JSONL,
            f"The key '{shown}' is not processed: only .jsonl and .jsonl.gz files are (the extension in any "
            f"case), one request object per line; rename it (for example {echo(input_prefix + folder + stem)}.jsonl) "
            "and upload it again",
        )
        named = classify_key(
            key + ".jsonl", input_prefix=input_prefix, output_prefix=output_prefix, reserved_prefixes=reserved_prefixes
        )
        return InputKey(named.name if named is not None and named.problem is None else None, problem)
    name = rest[: -len(suffix)]
    segments = name.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        cleaned = "/".join(segment for segment in segments if segment not in ("", ".", ".."))
        hint = f" (for example {echo(input_prefix + cleaned + suffix)})" if cleaned else ""
        return InputKey(
            None,
            Problem(
                ProblemCode.INVALID_KEY,
                f"The key '{shown}' has an empty, '.' or '..' path segment, which cannot name a results folder "
                f"safely: rename it{hint} and upload it again",
            ),
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return InputKey(
            None,
            Problem(
                ProblemCode.INVALID_KEY,
                f"The key '{shown}' holds a control character (a newline or a tab, say), which cannot name a "
                "results folder safely: rename it and upload it again",
            ),
        )
    room = MAX_KEY_BYTES - len(output_prefix.encode()) - 1 - max(len(result) for result in RESULT_NAMES)
    if len(name.encode()) > room:
        return InputKey(
            None,
            Problem(
                ProblemCode.KEY_TOO_LONG,
                f"The key's name is {len(name.encode())} bytes: its results ({output_prefix}<name>/errors.jsonl) "
                f"would pass S3's {MAX_KEY_BYTES}-byte key limit; shorten the name to at most {room} bytes",
            ),
        )
    return InputKey(name)


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class LineCounts(BaseModel):
    """A finished job's lines: every input line is one of succeeded or failed."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0


class BatchProgress(BaseModel):
    """A shard's batch as the poller last saw it, kept for the job's progress (JobStore.get_live_batches)."""

    round: int = 0
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    created_at: int | None = None
    seen_at: int | None = None
    """When the poller saw these counts: the time left is reckoned from then, not from when it is read."""


class JobProgress(BaseModel):
    """What a running job's record says of it (written by the poller, flow/progress.py)."""

    status: str
    """validating, submitting, running, collecting, retrying; then the outcome."""
    round: int = 0
    request_counts: RequestCounts
    """Summed over the job's batches (of every round) as last seen."""
    batches: int = 0
    batches_running: int = 0
    batches_ended: int = 0
    eta_seconds: int | None = None
    """The time left, at the pace seen so far (None: not known yet)."""
    updated_at: int


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
    started_shards: set[int] | None = None
    """The shards that have left PENDING (a batch, or an end without one): added to, never rewritten, so
    that a job of many shards is not read whole each time one of them moves."""
    collected_shards: set[int] | None = None
    """The shards collected, kept the same way."""
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
    notify_abandoned_at: int | None = None
    """The announcement kept failing until its bound: given up (an alarm says so)."""
    finished_event_sent_at: int | None = None
    finished_message_sent_at: int | None = None
    notified_at: int | None = None
    expires_at: int | None = None
    round: int = 0
    """The job's latest round: 0 for the first submission, then one more for each re-drive of its failed
    lines (redrive.py). Its shards are those of every round committed so far (`shard_count` counts them)."""
    redrive_due_at: int | None = None
    """When the next round may start: set once a round's shards have all been collected and some of its
    failed lines may succeed on another try (the job waits in the sweep until then)."""
    round_claimed_at: int | None = None
    """The lease on cutting the next round (one invocation at a time)."""
    retry_codes: list[str] | None = None
    """A retry asked for by hand (`batchdrop jobs retry`, `Retry Batch Job`): the codes whose final
    failures the next round sends again, whatever the automatic rules and bounds say."""
    retries: int = 0
    """Retries asked for by hand so far: each ends with its own `Batch Job Finished`."""
    estimate: TokenEstimate | None = None
    """What the split estimated the job to use (estimate.py), for report.json beside the actual."""
    counts: LineCounts | None = None
    """A finished job's lines (as in report.json)."""
    round_lines: int | None = None
    """Lines the latest re-drive round sent (set when it starts): what its progress is out of."""
    round_first_shard: int | None = None
    """The index of the latest round's first shard: its batches are those from there to shard_count."""
    counted_round: int | None = None
    """The job's last round at its latest end: the dashboard counted its lines, tokens and cost up to
    there (a retry's end then counts only what it changed)."""
    live_at: int | None = None
    """When the poller last wrote the job's progress (and status.json): at most every
    STATUS_INTERVAL_SECONDS."""
    progress: JobProgress | None = None
    version: int = 0

    @property
    def all_started(self) -> bool:
        return self.shard_count is not None and len(self.started_shards or ()) >= self.shard_count

    @property
    def all_collected(self) -> bool:
        return self.shard_count is not None and len(self.collected_shards or ()) >= self.shard_count


MAX_CODES_PER_COUNT = 100
"""A per-shard or per-job count by code keeps at most this many codes (the rest add up under "other"):
the API can name any number of codes, and a DynamoDB item holds 400 KB."""
MAX_CODE_CHARS = 64
OTHER_CODES = "other"


def add_count(counts: dict[str, int], code: str, n: int = 1) -> None:
    """Adds `n` to `counts[code]`, within the bounds above."""
    code = code[:MAX_CODE_CHARS] or "unknown_error"
    if code not in counts and len(counts) >= MAX_CODES_PER_COUNT - 1 and code != OTHER_CODES:
        code = OTHER_CODES
    counts[code] = counts.get(code, 0) + n


class KeptErrors(BaseModel):
    """A shard's error lines once a round has sent some of them again: the ones that stay its own."""

    round: int
    """The round that sent the others again; this counts only once the job has committed it."""
    redriven: int
    """How many of the shard's failed lines have been sent again, up to that round."""
    errors_key: str
    errors_by_code: dict[str, int] = Field(default_factory=dict)


class MergedFile(BaseModel):
    """One of a job's merged files in its outbox, as merged: its ETag and, in order, the work files it was
    put together from with their sizes (so where each one lies in it)."""

    etag: str
    prefix: str = ""
    """What every source's key begins with (its shards' results directory): kept once, not per part."""
    parts: list[tuple[str, int]]
    """(key after the prefix, bytes) of each source, in the merge's order."""

    @classmethod
    def of(cls, etag: str, keys: list[str], sizes: list[int]) -> MergedFile:
        prefix = keys[0].rsplit("/", 1)[0] + "/" if keys and "/" in keys[0] else ""
        if not all(key.startswith(prefix) for key in keys):
            prefix = ""
        return cls(
            etag=etag, prefix=prefix, parts=[(key[len(prefix) :], size) for key, size in zip(keys, sizes, strict=True)]
        )

    def ranges(self) -> dict[str, tuple[int, int]]:
        """Each source's key: (offset, bytes) in the merged file."""
        found: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, size in self.parts:
            found[self.prefix + name] = (offset, size)
            offset += size
        return found


class MergedLayout(BaseModel):
    """Where each result file of a job's shards lies in its outbox's output.jsonl and errors.jsonl, as of
    its last merge: a work file that has expired since is cut from there again, byte for byte. Stored
    beside the job (`MERGED`)."""

    round: int
    output: MergedFile
    errors: MergedFile


class TokenUsage(BaseModel):
    """Tokens as the API reported them in its result lines (`response.body.usage`), summed."""

    lines: int = 0
    """Result lines whose usage is in these sums."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    """Of the prompt tokens, those served from the API's cache (`prompt_tokens_details.cached_tokens`)."""

    def add_reported(self, usage: Mapping[str, Any]) -> None:
        """Adds one line's `usage` object; a count that is missing or not a whole number adds nothing."""
        self.lines += 1
        self.prompt_tokens += _tokens(usage.get("prompt_tokens"))
        self.completion_tokens += _tokens(usage.get("completion_tokens"))
        total = usage.get("total_tokens")
        self.total_tokens += (
            _tokens(total)
            if total is not None
            else _tokens(usage.get("prompt_tokens")) + _tokens(usage.get("completion_tokens"))
        )
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping):
            self.cached_tokens += _tokens(details.get("cached_tokens"))

    def plus(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            lines=self.lines + other.lines,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


class ShardResult(BaseModel):
    succeeded: int = 0
    failed: int = 0
    errors_by_code: dict[str, int] = Field(default_factory=dict)
    output_key: str
    errors_key: str
    kept: list[KeptErrors] = Field(default_factory=list)
    """One entry per round that re-drove some of this shard's failed lines, in order."""
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    """The succeeded lines' tokens, by the model that answered (the response's `model`)."""
    wasted: TokenUsage | None = None
    """Tokens the API reported on lines that failed (rare: most failed lines carry no usage)."""

    def final(self, job_round: int) -> tuple[int, dict[str, int], str]:
        """The failed lines that stay this shard's once the job is at `job_round` (rounds not committed
        yet do not count): their count, their count by code, and the key of their error lines."""
        committed = [entry for entry in self.kept if entry.round <= job_round]
        if committed:
            last = committed[-1]
            return self.failed - last.redriven, dict(last.errors_by_code), last.errors_key
        return self.failed, dict(self.errors_by_code), self.errors_key


class Shard(BaseModel):
    """One slice of a job's input, submitted as one batch. Stored as `SHARD#nnnnn` under the job."""

    job_id: str
    index: int
    state: ShardState
    work_key: str
    """The shard's input lines under the work prefix: the durable copy every retry starts from."""
    ids_key: str | None = None
    """The shard's custom_ids, one JSON string a line, beside its work copy (None: read them from it)."""
    lines: int
    bytes: int
    first_line: int
    """The input file's line number of this shard's first line."""
    of: int | None = None
    """How many shards the input was split into (a re-run after a crash adopts a complete split)."""
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
    """When a submission was first deferred by an API failure."""
    first_attempt_at: int | None = None
    """When a submission was first attempted: retries end `SUBMIT_RETRY_LIMIT_HOURS` after it."""
    waiting_since: int | None = None
    """When the shard began to wait for an in-flight slot (its place in the queue)."""
    handed_over_at: int | None = None
    """When the poller last handed the shard to the submit function."""
    cancel_requested: bool = False
    """Its job was cancelled while the shard waited: it ends without a slot."""
    ended_at: int | None = None
    """When the shard became TERMINAL."""
    poll_failing_since: int | None = None
    """When retrieving the batch began to fail (reset by a good reply)."""
    poll_error: str | None = None
    not_found_since: int | None = None
    """When the API began to answer 404 for the batch (reset by any other reply)."""
    collect_failing_since: int | None = None
    """When downloading the shard's results began to fail."""
    collect_error: str | None = None
    collect_not_found_since: int | None = None
    """When the API began to answer 404 for a result file (reset by any other failure)."""
    result: ShardResult | None = None
    round: int = 0
    """The job's round this shard belongs to (0: the input's own split; then re-drives of failed lines)."""
    attempt: int = 1
    """Which attempt of its lines this shard's batch is (every line of a shard has the same)."""
    progress_at: int | None = None
    """When the poller last saw the batch do more lines (or change status)."""
    stuck_since: int | None = None
    """When the batch was first seen `in_progress` with no progress for STUCK_AFTER_MINUTES (reset by
    progress)."""
    near_expiry_at: int | None = None
    """When the batch was first seen near its expiry with work left (EXPIRY_WARNING_HOURS)."""
    cancelled_early_at: int | None = None
    """When the poller cancelled the batch near its expiry (CANCEL_NEAR_EXPIRY): its unrun lines go into
    the job's next round."""
    expires_at: int | None = None
    version: int = 0

    @property
    def metadata(self) -> dict[str, str]:
        """What the batch carries so that it can be found (and adopted) after an ambiguous create."""
        metadata = {"batchdrop_job_id": self.job_id, "batchdrop_shard": str(self.index)}
        if self.round:
            metadata["batchdrop_round"] = str(self.round)
        return metadata

    @property
    def upload_filename(self) -> str:
        return f"batchdrop-{self.job_id}-{self.index:05d}.jsonl"
