"""Submission: each shard of a job to a batch at the API, within the in-flight limit, resumable at every step.

Checkpoints, each recorded before the next step starts, per shard: file uploaded (`input_file_id`) ->
create started (`create_started_at`) -> batch (`batch_id`). A re-run after a crash starts from the last
checkpoint. Once a create may have reached the API, the batch is looked up by its metadata (job id and
shard) and adopted instead of created again, so a duplicate or late event never makes a second billable
batch. Shards that get no slot wait in the queue the poller hands over in turn (see polling.py).
"""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import ClientError

from batchdrop import contracts
from batchdrop.integrations.shard_copies import ShardSourceMissing, local_shard_copy
from batchdrop.integrations.store import NoSlotAvailable, StaleRecord
from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    APIConnectionError,
    DeadlineExceededError,
    ErrorKind,
    ZeroGPUError,
)
from batchdrop.messages import (
    ShardRequest,
    SubmitOutcome,
    SubmitResult,
)
from batchdrop.models import NOT_CREATED, DeferralCode, FailureCode, Job, JobStatus, Shard, ShardState
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services
from batchdrop.timing import (
    CREATE_LOOKBACK_SECONDS,
    RETRY_LATER_SECONDS,
    SUBMIT_ANNOUNCE_LEASE_SECONDS,
    SUBMIT_LEASE_MARGIN_SECONDS,
    SUBMIT_TIMEOUT_SECONDS,
)

_MAX_MESSAGE_CHARS = 500


def submit_held_shard(request: ShardRequest, services: Services) -> SubmitOutcome:
    """A shard the poller handed over (its turn for a slot, or a submission being retried)."""
    shard = services.store.get_shard(request.job_id, request.shard)
    if shard is None:
        return SubmitOutcome(SubmitResult.DUPLICATE, request.job_id, "the shard is gone")
    if shard.state != ShardState.PENDING:
        services.store.note_progress(shard)  # in case the attempt that moved it died before noting it
        announce_submitted(request.job_id, services)
        return SubmitOutcome(SubmitResult.DUPLICATE, request.job_id, "the shard is no longer waiting")
    try:
        submit_shard(shard, services)
    except NoSlotAvailable:
        return SubmitOutcome(SubmitResult.IGNORED, request.job_id, "no free slot; the poller hands it over again")
    except StaleRecord:
        return SubmitOutcome(SubmitResult.DUPLICATE, request.job_id, "another invocation is submitting it")
    announce_submitted(request.job_id, services)
    return SubmitOutcome(SubmitResult.ACCEPTED, request.job_id)


SHARDS_SUBMITTED_AT_ONCE = 2
"""Shards of one job submitted side by side: one shard's upload overlaps the other's batch create (which
the API validates synchronously), and neither waits on the other's round trips."""


def submit_pending_shards(job: Job, services: Services, *, shards: list[Shard] | None = None) -> None:
    """Submits the job's shards as far as slots allow, in order, SHARDS_SUBMITTED_AT_ONCE at a time.
    Shards of other jobs that wait for a slot go first: while any wait, these join the queue, and the
    poller hands them over in turn. `shards`: the caller has just written them and the job (no re-read)."""
    if shards is None:
        shards = services.store.get_shards(job.job_id)
        job = services.store.get_job(job.job_id) or job  # as it is now: a cancel may have come in
    wait = _why_wait_for_a_slot(job, services)
    pending: list[Shard] = []
    for shard in shards:
        if shard.state != ShardState.PENDING:
            if shard.index not in (job.started_shards or ()):
                services.store.note_progress(shard)  # an earlier attempt died between the two writes
            continue
        if wait and job.cancel_requested_at is None and not shard.holds_slot:
            logger.info(wait)
            break
        pending.append(shard)
    _submit_in_order(pending, job, services)
    announce_submitted(job.job_id, services)


def _submit_in_order(shards: list[Shard], job: Job, services: Services) -> None:
    """Each shard in turn to the next free worker, until the in-flight limit or the invocation's time
    stops them; an unexpected error stops the rest and is raised."""
    if not shards:
        return
    stop = threading.Event()
    turn = iter(shards)
    lock = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            with lock:
                shard = next(turn, None)
            if shard is None or not services.time_left():
                return
            try:
                submit_shard(shard, services, job=job)
            except NoSlotAvailable:
                logger.info("in-flight limit reached; the poller submits the rest", extra={"shard": shard.index})
                stop.set()
            except StaleRecord:
                continue
            except BaseException:
                stop.set()
                raise

    workers = min(SHARDS_SUBMITTED_AT_ONCE, len(shards))
    if workers == 1:
        worker()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="submit") as pool:
        running = [pool.submit(worker) for _ in range(workers)]
    for done in running:
        done.result()


def _why_wait_for_a_slot(job: Job, services: Services) -> str | None:
    """Why this job's shards that hold no slot wait for the poller's hand-over, if they do: every slot is
    taken (a claim would only fail, and a failed transaction costs its writes all the same), or shards
    of other jobs wait for one (then this job's go to the back of the queue)."""
    if services.store.slots_in_use() >= services.settings.max_batches_in_flight:
        return "in-flight limit reached; the poller submits the rest"
    first_waiting = next(services.store.waiting_shards(limit=1), None)
    if first_waiting is not None and first_waiting.job_id != job.job_id:
        return "shards of earlier jobs wait for a slot; this job waits its turn"
    return None


def submit_shard(shard: Shard, services: Services, *, job: Job | None = None) -> Shard:
    """Uploads the shard and creates its batch, resuming from the shard's checkpoints.

    Raises NoSlotAvailable when the in-flight limit is reached and StaleRecord when another worker holds
    the shard. API failures are recorded on the shard: permanent ones end it, the rest retry later.
    """
    settings = services.settings
    job = job or services.store.get_job(shard.job_id)  # as read in this invocation, if the caller has it
    if job is None:
        raise StaleRecord(f"job {shard.job_id} is gone")
    if job.status == JobStatus.RECEIVED:
        # Its split is not committed yet (an attempt died between recording shards and the job): the
        # redelivery commits it; submitting now could bill a batch for a job that may yet be rejected.
        raise StaleRecord(f"job {shard.job_id} is still being split")
    if job.cancel_requested_at is not None:
        return _end_cancelled(shard, services)
    if shard.index >= (job.shard_count or 0):
        # A re-drive round's shard whose cutting is not committed (still going, or it died): not the job's
        # yet; the re-run of the cutting commits it. Once the job has ended without it, it goes.
        if job.status == JobStatus.FINISHED:
            services.store.delete_shard(shard)
        raise StaleRecord(f"{shard.job_id}/{shard.index}: its round is not committed")
    limit = int(settings.submit_retry_limit_hours * 3600)
    if shard.first_attempt_at is not None and services.now() - shard.first_attempt_at > limit:
        # Checked before anything that can fail (the secret, the API): the bound holds whatever fails.
        return _give_up(shard, limit, services)
    api = services.api  # credentials first: a missing secret must not leave a lease behind
    lease = int(min(services.remaining_time(), SUBMIT_TIMEOUT_SECONDS)) + SUBMIT_LEASE_MARGIN_SECONDS
    # The upload's checkpoint goes with the claim when the upload comes next (one write fewer).
    uploads_next = shard.input_file_id is None and shard.upload_started_at is None
    shard = services.store.claim_shard(
        shard,
        owner=services.owner,
        lease_seconds=lease,
        max_in_flight=settings.max_batches_in_flight,
        also={"upload_started_at": services.now()} if uploads_next else None,
    )
    progress = _Checkpoints(shard, services)
    progress.upload_marked_now = uploads_next
    try:
        if progress.shard.input_file_id is None:
            _upload(progress, job, services)  # records the file id and the start of the create at once
        if progress.shard.create_started_at is None:
            progress.write(create_started_at=services.now())
            batch = None
        elif progress.created_now:
            batch = None
        else:
            # A previous attempt may have created the batch and lost the reply: adopt it if so.
            batch = api.find_batch(
                progress.shard.metadata, created_after=progress.shard.create_started_at - CREATE_LOOKBACK_SECONDS
            )
        assert progress.shard.input_file_id is not None and progress.shard.create_started_at is not None
        batch = batch or api.create_batch_or_adopt(
            progress.shard.input_file_id,
            metadata=progress.shard.metadata,
            created_after=progress.shard.create_started_at - CREATE_LOOKBACK_SECONDS,
        )
    except ZeroGPUError as error:
        if error.kind is ErrorKind.OPERATIONAL:
            # The key may have been rotated (or the account fixed): read the secret afresh next time.
            from aws_lambda_powertools.utilities import parameters  # loaded already: the secret was read

            parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools leaves it untyped
        return _record_submit_failure(
            progress,
            failure_code(error),
            f"{type(error).__name__}: {error}",
            error.kind is ErrorKind.PERMANENT,
            services,
        )
    except ShardSourceMissing as error:
        return _record_submit_failure(progress, FailureCode.INPUT_MISSING, str(error), True, services)
    except ClientError as error:  # S3 or DynamoDB: the next attempt decides again
        return _record_submit_failure(progress, DeferralCode.AWS_ERROR, repr(error), False, services)
    count(Metric.BATCHES_CREATED)
    logger.info("batch created", extra={"shard": shard.index, "batch_id": batch.id})
    return progress.write(
        state=ShardState.SUBMITTED,
        batch_id=batch.id,
        batch_status=str(batch.status),
        next_poll_at=services.now() + settings.poll_min_interval_seconds,
        lease_owner=None,
        lease_until=None,
        failure_code=None,
        failure_message=None,
        first_deferred_at=None,
        submit_attempts=shard.submit_attempts + 1,
    )


def _give_up(shard: Shard, limit: int, services: Services) -> Shard:
    """A shard whose submission has failed for SUBMIT_RETRY_LIMIT_HOURS ends (giving its slot back)."""
    now = services.now()
    if shard.lease_until is not None and shard.lease_until > now and shard.lease_owner != services.owner:
        raise StaleRecord(f"{shard.job_id}/{shard.index} is being submitted")
    message = (
        f"no batch could be created within {limit // 3600} hours (SUBMIT_RETRY_LIMIT_HOURS); last failure: "
        f"{shard.failure_message or shard.failure_code or 'the submission never completed'}"
    )[:_MAX_MESSAGE_CHARS]
    logger.error("batch cannot be created: retries exhausted", extra={"shard": shard.index, "reason": message})
    count(Metric.BATCHES_REFUSED)
    return services.store.end_shard(
        shard,
        batch_status=NOT_CREATED,
        failure_code=FailureCode.BATCH_CREATE_FAILED,
        failure_message=message,
        next_poll_at=now,
    )


class _Checkpoints:
    """The shard as this invocation last wrote it. Every write goes through here, so a failure is recorded
    on the latest version, not lost to a stale one; and while the lease is ours, a write that lost to an
    unrelated change (a cancel request, a handover mark) is made again on the fresh record."""

    def __init__(self, shard: Shard, services: Services) -> None:
        self.shard = shard
        self._services = services
        self.created_now = False
        """This invocation marked the create as started: no earlier attempt's batch to look for."""
        self.upload_marked_now = False
        """This invocation marked the upload as started: no earlier attempt's file to look for."""

    def write(self, **changes: Any) -> Shard:
        return self._apply(changes, ending=False)

    def end(self, **changes: Any) -> Shard:
        return self._apply(changes, ending=True)

    def _apply(self, changes: dict[str, Any], *, ending: bool) -> Shard:
        def while_ours(fresh: Shard) -> dict[str, Any]:
            if fresh.lease_owner != self._services.owner or fresh.state != self.shard.state:
                raise StaleRecord(f"{fresh.job_id}/{fresh.index} is no longer this invocation's")
            return changes

        written = self._services.store.modify_shard(
            self.shard.job_id, self.shard.index, while_ours, current=self.shard, ending=ending
        )
        if written is None:
            raise StaleRecord(f"{self.shard.job_id}/{self.shard.index} is gone")
        self.shard = written
        return written


def failure_code(error: ZeroGPUError) -> str:
    """A code that says what went wrong, for the shard's record and its lines' errors."""
    if isinstance(error, AmbiguousRequestError):
        return failure_code(error.cause) if error.cause is not None else DeferralCode.AMBIGUOUS_REPLY
    if isinstance(error, DeadlineExceededError):
        return DeferralCode.DEADLINE_EXCEEDED
    if isinstance(error, APIConnectionError):
        return DeferralCode.API_UNREACHABLE
    if error.code or error.type:
        return str(error.code or error.type)[:64]
    return f"http_{error.status}" if error.status is not None else DeferralCode.API_ERROR


def _end_cancelled(shard: Shard, services: Services) -> Shard:
    """A cancelled job's shard ends without a batch (giving back any slot it holds), unless an earlier
    attempt may have created one: then that batch is adopted, and the poller cancels it."""
    if shard.lease_until is not None and shard.lease_until > services.now() and shard.lease_owner != services.owner:
        raise StaleRecord(f"{shard.job_id}/{shard.index} is being submitted")
    if shard.create_started_at is not None:
        batch = services.api.find_batch(shard.metadata, created_after=shard.create_started_at - CREATE_LOOKBACK_SECONDS)
        if batch is not None:
            return services.store.update_shard(
                shard,
                state=ShardState.SUBMITTED,
                batch_id=batch.id,
                batch_status=str(batch.status),
                next_poll_at=services.now(),
                lease_owner=None,
                lease_until=None,
            )
    logger.info("job cancelled; shard not submitted", extra={"shard": shard.index})
    return services.store.end_shard(
        shard,
        batch_status=NOT_CREATED,
        failure_code=FailureCode.BATCH_CANCELLED,
        failure_message="the job was cancelled before this shard was submitted",
        next_poll_at=services.now(),
    )


def _upload(progress: _Checkpoints, job: Job, services: Services) -> None:
    api = services.api
    shard = progress.shard
    if shard.upload_started_at is None:
        shard = progress.write(upload_started_at=services.now())
    elif not progress.upload_marked_now:
        # A previous attempt may have stored the file and died before recording its id.
        found = api.find_file(
            shard.upload_filename,
            shard.bytes,
            created_after=shard.upload_started_at - CREATE_LOOKBACK_SECONDS,
        )
        if found is not None:
            progress.write(input_file_id=found.id)
            return
    assert shard.upload_started_at is not None
    kept = services.local_shards.path(shard.work_key, shard.bytes)  # the split's own file, if this invocation's
    try:
        with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
            path = kept or local_shard_copy(shard, job, directory, services.s3)
            uploaded = api.upload_file_or_adopt(
                path, shard.upload_filename, created_after=shard.upload_started_at - CREATE_LOOKBACK_SECONDS
            )
    finally:
        if kept is not None:
            services.local_shards.drop(shard.work_key, reader=True)
    # The create starts at once: recording its start with the file id saves a write (a crash right after
    # makes the next attempt look for the batch first, as after any started create).
    progress.write(input_file_id=uploaded.id, create_started_at=services.now())
    progress.created_now = True


def _record_submit_failure(
    progress: _Checkpoints, code: str, message: str, permanent: bool, services: Services
) -> Shard:
    """A permanent failure ends the shard (its lines become errors; its slot is given back). Any other
    releases the lease and is retried by the poller, until SUBMIT_RETRY_LIMIT_HOURS after the first try."""
    now = services.now()
    message = message[:_MAX_MESSAGE_CHARS]
    shard = progress.shard
    if permanent:
        logger.error("batch cannot be created", extra={"shard": shard.index, "code": code, "reason": message})
        count(Metric.BATCHES_REFUSED)
        return progress.end(
            batch_status=NOT_CREATED,
            failure_code=FailureCode.INPUT_MISSING
            if code == FailureCode.INPUT_MISSING
            else FailureCode.BATCH_CREATE_FAILED,
            failure_message=message,
            next_poll_at=now,
        )
    logger.warning("submission deferred", extra={"shard": shard.index, "code": code, "reason": message})
    count(Metric.SUBMITS_DEFERRED)
    return progress.write(
        lease_owner=None,
        lease_until=None,
        failure_code=code,
        failure_message=message,
        first_deferred_at=shard.first_deferred_at or now,
        submit_attempts=shard.submit_attempts + 1,
        next_poll_at=now + RETRY_LATER_SECONDS,
    )


def announce_submitted(job_id: str, services: Services) -> None:
    """Sends `Batch Job Submitted` once every shard has left PENDING (at most once per job)."""
    job = services.store.get_job(job_id)
    if job is None or job.status != JobStatus.SUBMITTING or job.submitted_at is not None or not job.all_started:
        return
    claimed = services.store.claim_job(job, "submit_announce_claimed_at", lease_seconds=SUBMIT_ANNOUNCE_LEASE_SECONDS)
    if claimed is None:
        return
    detail = contracts.submitted_detail(job, services.store.get_shards(job_id)).document()
    services.store.send_once(claimed, "submitted_at", lambda: services.notifier.submitted_event(detail))
    count(Metric.JOBS_SUBMITTED)
