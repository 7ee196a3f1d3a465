"""A running job's progress, where people look: its live status, its batches' summed request counts and
the time left, on the job record (`progress`) and in `outbox/<name>/status.json` for those who only look
at the bucket.

The poller writes it as a by-product of its looks at running batches: the job's `progress` (one
unversioned UpdateItem per job and run, at most every STATUS_INTERVAL_SECONDS, conditional on the last
write's time so that overlapping runs write once), then each batch it saw into the job's `LIVE#` items
(a few hundred batches an item, so that no job outgrows an item or an expression), and status.json. At
the job's end completion writes status.json once more, with the outcome and the final counts: it stays,
and says the same as report.json.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from batchdrop import contracts
from batchdrop.integrations import s3io
from batchdrop.integrations.zerogpu import TERMINAL_STATUSES
from batchdrop.models import (
    NOT_CREATED,
    BatchProgress,
    Job,
    JobProgress,
    JobStatus,
    LineCounts,
    RequestCounts,
    Shard,
)
from batchdrop.observability import logger
from batchdrop.services import Services

VALIDATING, SUBMITTING, RUNNING, COLLECTING, RETRYING = "validating", "submitting", "running", "collecting", "retrying"
LIVE_STATUSES = (VALIDATING, SUBMITTING, RUNNING, COLLECTING, RETRYING)
ENDED = frozenset({*(str(status) for status in TERMINAL_STATUSES), NOT_CREATED})


def batch_progress(
    shard: Shard, status: str, counts: RequestCounts | None, seen_at: int | None = None
) -> BatchProgress:
    counts = counts or RequestCounts()
    return BatchProgress(
        round=shard.round,
        status=status,
        total=counts.total or shard.lines,
        completed=counts.completed,
        failed=counts.failed,
        created_at=shard.create_started_at,
        seen_at=seen_at,
    )


def live_status(job: Job, batches: Mapping[str, BatchProgress]) -> str:
    """Where the job is: validating → submitting → running → collecting (→ retrying, a round of its
    failed lines, ...) → its outcome."""
    if job.status == JobStatus.REJECTED:
        return "rejected"
    if job.status == JobStatus.FINISHED:
        return str(job.outcome or "failed")
    if job.status == JobStatus.RECEIVED or job.shard_count is None:
        return VALIDATING
    if job.redrive_due_at is not None or job.round > 0:
        return RETRYING if not job.all_collected or job.redrive_due_at is not None else COLLECTING
    if not job.all_started:
        return SUBMITTING
    current = [batch for batch in batches.values() if batch.round == job.round]
    if job.all_collected or (current and all(batch.status in ENDED for batch in current)):
        return COLLECTING
    return RUNNING


def _time_left(job: Job, batches: Mapping[str, BatchProgress], now: int) -> int | None:
    """At the pace of each of the round's batches so far, when the slowest ends (None: not known, as
    while some batch has not started, or has done nothing yet)."""
    current = [batch for batch in batches.values() if batch.round == job.round]
    if job.shard_count is None or not job.all_started or not current:
        return None
    if job.round == 0 and len(current) < job.shard_count:
        return None  # a batch not seen yet
    left = 0
    for batch in current:
        if batch.status in ENDED:
            continue
        done = batch.completed + batch.failed
        if done <= 0 or batch.created_at is None or batch.total <= 0:
            return None
        seen = min(batch.seen_at or now, now)
        # the pace up to the look, less the time since: a look minutes old does not make the job slower;
        # past that estimate the batch is late, and how late is not known until the next look
        estimate = int((batch.total - done) * max(1, seen - batch.created_at) / done) - (now - seen)
        if estimate < 0:
            return None
        left = max(left, estimate)
    return left


def view(job: Job, now: int, batches: Mapping[str, BatchProgress]) -> JobProgress:
    """The job's progress from its record and `batches`, the latest looks at its batches by shard index
    (JobStore.get_live_batches)."""
    seen = dict(batches)
    summed = RequestCounts(
        total=sum(batch.total for batch in seen.values()),
        completed=sum(batch.completed for batch in seen.values()),
        failed=sum(batch.failed for batch in seen.values()),
    )
    status = live_status(job, seen)
    ended = sum(1 for batch in seen.values() if batch.status in ENDED)
    finished = job.status in (JobStatus.FINISHED, JobStatus.REJECTED)
    return JobProgress(
        status=status,
        round=job.round,
        request_counts=summed,
        batches=job.shard_count or 0,
        batches_running=sum(1 for batch in seen.values() if batch.status not in ENDED) if not finished else 0,
        batches_ended=(job.shard_count or 0) if finished else ended,
        eta_seconds=0 if finished else _time_left(job, seen, now),
        updated_at=now,
    )


class LiveBatches:
    """The batches one poll run looked at, by job: the run's worker threads add to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_job: dict[str, dict[str, BatchProgress]] = {}

    def add(self, shard: Shard, status: str, counts: RequestCounts | None, seen_at: int | None = None) -> None:
        with self._lock:
            look = batch_progress(shard, status, counts, seen_at)
            self._by_job.setdefault(shard.job_id, {})[str(shard.index)] = look

    def jobs(self) -> dict[str, dict[str, BatchProgress]]:
        with self._lock:
            return dict(self._by_job)


def record(
    job: Job,
    batches: Mapping[str, BatchProgress],
    services: Services,
    *,
    stored: Mapping[str, BatchProgress] | None = None,
) -> bool:
    """Writes what the run saw of the job's batches, with its progress, on the record and in status.json,
    unless another run did within STATUS_INTERVAL_SECONDS (False then). `job` is the record as the run
    read it; `stored`, its batches as last recorded (read here if not given). Best effort: a failed
    status.json is logged, and written again on the next interval."""
    now = services.now()
    settings = services.settings
    if stored is None:
        stored = services.store.get_live_batches(job)
    progress = view(job, now, dict(stored) | dict(batches))
    # The looks outlive the job's longest run by its retention, as the job's record does.
    expires_at = now + int(settings.job_deadline_hours * 3600) + settings.job_retention_days * 86400
    due_before = now - settings.status_interval_seconds
    if not services.store.record_progress(
        job.job_id, batches, progress, now=now, due_before=due_before, expires_at=expires_at
    ):
        return False  # written within the interval, or the job has ended meanwhile
    try:
        s3io.put_json(
            services.s3,
            job.input.bucket,
            f"{job.output_prefix}status.json",
            contracts.status_document(job, progress).document(),
        )
    except Exception as error:  # the record has it; the file is a courtesy, written again next time
        logger.warning("could not write status.json", extra={"job_id": job.job_id, "error": repr(error)})
    return True


def record_final(job: Job, shards: list[Shard], counts: LineCounts, services: Services) -> None:
    """status.json at the job's end: the outcome and its counts (what report.json says)."""
    batches = {
        str(shard.index): batch_progress(shard, shard.batch_status or NOT_CREATED, shard.request_counts)
        for shard in shards
    }
    progress = view(job, services.now(), batches)
    try:
        s3io.put_json(
            services.s3,
            job.input.bucket,
            f"{job.output_prefix}status.json",
            contracts.status_document(job, progress, counts=counts).document(),
        )
    except Exception as error:  # report.json is the record of the end; this follows it
        logger.warning("could not write the final status.json", extra={"job_id": job.job_id, "error": repr(error)})
