"""Poll: one scheduled run looks at the shards that are due, and only those (the sparse index).

- PENDING shards (held back by the in-flight limit, or deferred after an API failure) are handed to the
  submit function through the ingest queue, no more than there are free slots: an upload can take longer
  than a poll run may;
- SUBMITTED shards are retrieved concurrently (bounded); status and counts are recorded with a
  conditional write and the next poll time adapts to the batch's progress;
- TERMINAL shards are handed to the collect queue, and handed again if collect has not taken them
  after a while (a lost message never strands a job).
Two overlapping runs are safe: every write is conditional, so at most one of them acts on a change.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum

from botocore.exceptions import ClientError

from batchdrop.observability import count, logger
from batchdrop.pipeline.events import shard_handover_body
from batchdrop.pipeline.models import RequestCounts, Shard, ShardState
from batchdrop.pipeline.services import Services
from batchdrop.pipeline.store import StaleRecord
from batchdrop.zerogpu import ZeroGPUError

COLLECT_RETRY_SECONDS = 900
HANDOVER_RETRY_SECONDS = 120
MAX_SHARDS_PER_RUN = 1000
ACTIVE_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


class Visit(StrEnum):
    """What one look at a due shard did (each is a counter of PollSummary)."""

    HANDED_OVER = "handed_over"
    POLLED = "polled"
    ENDED = "ended"
    COLLECT_REQUESTS = "collect_requests"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Failed:
    """A shard that could not be moved on this run (the next run tries again)."""

    shard: str
    error: str


@dataclass
class PollSummary:
    due: int = 0
    handed_over: int = 0
    polled: int = 0
    ended: int = 0
    collect_requests: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class _CancelledJobs:
    """Whether a shard's job was cancelled, read once per job and run (the worker threads share it;
    two threads reading the same job at once is harmless)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._known: dict[str, bool] = {}

    def __call__(self, job_id: str) -> bool:
        if job_id not in self._known:
            job = self._services.store.get_job(job_id)
            self._known[job_id] = job is not None and job.cancel_requested_at is not None
        return self._known[job_id]


def poll_once(services: Services) -> PollSummary:
    summary = PollSummary()
    due = list(services.store.due_shards(services.now(), limit=MAX_SHARDS_PER_RUN))
    summary.due = len(due)
    if not due:
        return summary
    pending = [shard for shard in due if shard.state == ShardState.PENDING]
    others = [shard for shard in due if shard.state != ShardState.PENDING]
    if others:
        services.api  # noqa: B018 - created (and credentials read) once, before the worker threads share it
    cancelled = _CancelledJobs(services)
    # Retrieval is I/O bound: a small pool of threads.
    with ThreadPoolExecutor(max_workers=services.settings.poll_concurrency) as pool:
        for outcome in pool.map(lambda shard: _visit(shard, services, cancelled), others):
            _tally(summary, outcome)
    for outcome in _hand_over(pending, services, cancelled):
        _tally(summary, outcome)
    return summary


def _tally(summary: PollSummary, outcome: Visit | Failed) -> None:
    if isinstance(outcome, Failed):
        summary.errors.append(f"{outcome.shard}: {outcome.error}")
    else:
        setattr(summary, outcome.value, getattr(summary, outcome.value) + 1)


def _failed(shard: Shard, error: Exception) -> Failed:
    return Failed(f"{shard.job_id}/{shard.index}", type(error).__name__)


def _visit(shard: Shard, services: Services, cancelled: _CancelledJobs) -> Visit | Failed:
    if not services.time_left():
        return Visit.SKIPPED
    try:
        if shard.state == ShardState.SUBMITTED:
            return _refresh(shard, services, cancelled)
        if shard.state == ShardState.TERMINAL:
            request_collect(shard, services)
            return Visit.COLLECT_REQUESTS
    except StaleRecord:
        return Visit.SKIPPED
    except (ZeroGPUError, ClientError) as error:
        logger.warning("shard not moved on; retried next run", extra={"shard": shard.index, "error": repr(error)})
        return _failed(shard, error)
    return Visit.SKIPPED


def _hand_over(pending: list[Shard], services: Services, cancelled: _CancelledJobs) -> list[Visit | Failed]:
    """Sends held shards to the submit function: those that already hold a slot (a retry) or belong to
    a cancelled job (they end without one), and as many others as there are free slots."""
    now = services.now()
    free = services.settings.max_batches_in_flight - services.store.slots_in_use()
    outcomes: list[Visit | Failed] = []
    for shard in pending:
        if shard.lease_until is not None and shard.lease_until > now:
            outcomes.append(Visit.SKIPPED)  # an invocation is working on it
            continue
        if not shard.holds_slot and not cancelled(shard.job_id):
            if free <= 0:
                outcomes.append(Visit.SKIPPED)
                continue
            free -= 1
        try:
            # Due again later in case the message is lost or no slot is free by the time it arrives.
            services.store.update_shard(shard, next_poll_at=now + HANDOVER_RETRY_SECONDS)
            services.sqs.send_message(
                QueueUrl=services.settings.ingest_queue_url, MessageBody=shard_handover_body(shard.job_id, shard.index)
            )
            outcomes.append(Visit.HANDED_OVER)
        except StaleRecord:
            outcomes.append(Visit.SKIPPED)
        except ClientError as error:
            outcomes.append(_failed(shard, error))
    return outcomes


def _refresh(shard: Shard, services: Services, cancelled: _CancelledJobs) -> Visit:
    assert shard.batch_id is not None
    batch = services.api.retrieve_batch(shard.batch_id)
    if str(batch.status) in ("validating", "in_progress") and cancelled(shard.job_id):
        batch = services.api.cancel_batch(shard.batch_id)
    status = str(batch.status)
    counts = batch.request_counts
    request_counts = (
        RequestCounts(total=counts.total, completed=counts.completed, failed=counts.failed) if counts else None
    )
    now = services.now()
    if batch.is_terminal:
        shard = services.store.end_shard(
            shard,
            batch_status=status,
            request_counts=request_counts,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            next_poll_at=now,
        )
        count("BatchesEnded")
        logger.info("batch ended", extra={"shard": shard.index, "batch_id": shard.batch_id, "status": status})
        request_collect(shard, services)
        return Visit.ENDED
    if status not in ACTIVE_STATUSES:
        count("UnknownBatchStatus")
        logger.warning("unknown batch status; still polling", extra={"status": status})
    services.store.update_shard(
        shard,
        batch_status=status,
        request_counts=request_counts,
        next_poll_at=now + next_poll_interval(shard, request_counts, status, now, services),
    )
    return Visit.POLLED


def next_poll_interval(shard: Shard, counts: RequestCounts | None, status: str, now: int, services: Services) -> int:
    """Soon when the end is near, rarely when a batch is long: a day-long batch costs a few hundred calls."""
    low, high = services.settings.poll_min_interval_seconds, services.settings.poll_max_interval_seconds
    if status in ("finalizing", "cancelling"):
        return low
    age = max(1, now - (shard.create_started_at or now))
    done = (counts.completed + counts.failed) if counts else 0
    total = counts.total if counts else 0
    if done > 0 and total > done:
        estimate = (total - done) * age / done  # seconds left at the rate seen so far
        interval = estimate / 2
    else:
        interval = age / 10
    return int(max(low, min(high, interval)))


def request_collect(shard: Shard, services: Services) -> None:
    """Hands a terminal shard to collect. The shard is first set to come due again later, in case the
    message is lost; if that write loses, another run (or collect itself) has moved it on already."""
    try:
        services.store.update_shard(shard, next_poll_at=services.now() + COLLECT_RETRY_SECONDS)
    except StaleRecord:
        return
    services.sqs.send_message(
        QueueUrl=services.settings.collect_queue_url,
        MessageBody=json.dumps({"job_id": shard.job_id, "shard": shard.index}),
    )
