"""Submit: from a dropped object to batches at the API, resumable at every step.

Checkpoints, each recorded before the next step starts:
  job recorded -> input validated and split, shards stored under the work prefix and recorded
  -> per shard: file uploaded (`input_file_id`) -> create started (`create_started_at`) -> batch (`batch_id`).
A re-run after a crash starts from the last checkpoint. Once a create may have reached the API, the batch
is looked up by its metadata (job id and shard) and adopted instead of created again, so a duplicate or
late event never makes a second billable batch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.utilities import parameters
from botocore.exceptions import ClientError

from batchdrop.observability import count, logger
from batchdrop.pipeline import s3io
from batchdrop.pipeline.events import SUBMIT_EVENT_SOURCE, ShardRequest, SubmitRequest
from batchdrop.pipeline.finish import announce_rejection, finalize_job, publish_rejection
from batchdrop.pipeline.models import InputInfo, Job, JobStatus, ObjectRef, Shard, ShardState, input_name
from batchdrop.pipeline.services import Services
from batchdrop.pipeline.shard_files import ShardSourceMissing, local_shard_copy
from batchdrop.pipeline.sharding import ShardFile, validate_and_split
from batchdrop.pipeline.store import NoSlotAvailable, StaleRecord
from batchdrop.zerogpu import ZeroGPUError

# API failures that no retry can mend for this shard: its lines end as errors.
PERMANENT_STATUSES = frozenset({400, 404, 413, 420})
RETRY_LATER_SECONDS = 120
GIVE_UP_AFTER_SECONDS = 86_400  # a shard whose submission keeps failing for a day ends as failed
CREATE_LOOKBACK_SECONDS = 600


class SubmitResult(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    result: SubmitResult
    job_id: str | None = None
    reason: str = ""


def submit_object(
    request: SubmitRequest,
    services: Services,
    *,
    once: Callable[..., dict[str, str]] | None = None,
) -> SubmitOutcome:
    """Resolves the object the event names and submits it; `once` guards repeated deliveries."""
    settings = services.settings
    if request.source == SUBMIT_EVENT_SOURCE and settings.bucket_name and request.bucket != settings.bucket_name:
        return SubmitOutcome(SubmitResult.IGNORED, reason=f"only objects of s3://{settings.bucket_name} are submitted")
    ref, reason = resolve_object(request, services)
    if ref is None:
        return SubmitOutcome(SubmitResult.IGNORED, reason=reason)
    name = _name_for(ref.key, request.source, services)
    if name is None:
        return SubmitOutcome(SubmitResult.IGNORED, reason=f"not an input key under {settings.input_prefix!r}")
    identity = {
        "job_id": ref.job_id,
        "bucket": ref.bucket,
        "key": ref.key,
        "version_id": ref.version_id,
        "etag": ref.etag,
        "size": ref.size,
        "name": name,
    }
    run = once or (lambda job: submit_job(job, services))
    reply = run(job=identity)
    return SubmitOutcome(SubmitResult(reply["result"]), reply.get("job_id"), reply.get("reason", ""))


def submit_job(job: dict[str, Any], services: Services) -> dict[str, str]:
    """Records the job (once per object), validates and splits it, then submits its shards."""
    settings = services.settings
    ref = ObjectRef(job["bucket"], job["key"], job.get("version_id"), job.get("etag"), job.get("size"))
    logger.append_keys(job_id=ref.job_id, s3_key=ref.key)
    record = services.store.get_job(ref.job_id) or services.store.create_job(
        Job(
            job_id=ref.job_id,
            status=JobStatus.RECEIVED,
            input=InputInfo(bucket=ref.bucket, key=ref.key, version_id=ref.version_id, etag=ref.etag, bytes=ref.size),
            output_prefix=f"{settings.output_prefix}{job['name']}/",
            received_at=services.now(),
        )
    )
    if record.notified_at is None and record.status == JobStatus.REJECTED:
        announce_rejection(record, services)  # the first attempt died before announcing it
    elif record.notified_at is None and record.submitted_at is not None:
        finalize_job(record.job_id, services)  # idem, if this delivery was the one to finish the job
    if record.status in (JobStatus.FINISHED, JobStatus.REJECTED) or record.submitted_at is not None:
        count("DuplicateEvents")
        return {"result": SubmitResult.DUPLICATE, "job_id": record.job_id, "reason": f"job already {record.status}"}
    if record.status == JobStatus.RECEIVED:
        record = split_input(record, ref, services)
        if record.status == JobStatus.REJECTED:
            return {"result": SubmitResult.REJECTED, "job_id": record.job_id}
    submit_pending_shards(record, services)
    # If an earlier attempt died after storing the shards, the poller may already have run them all.
    finalize_job(record.job_id, services)
    return {"result": SubmitResult.ACCEPTED, "job_id": record.job_id}


def _name_for(key: str, source: str, services: Services) -> str | None:
    settings = services.settings
    if source != SUBMIT_EVENT_SOURCE:
        return input_name(key, settings.input_prefix)
    return input_name(key, settings.input_prefix, reserved_prefixes=(settings.output_prefix, settings.work_prefix))


def resolve_object(request: SubmitRequest, services: Services) -> tuple[ObjectRef | None, str]:
    """The object the event names, if it is still the current one; else None and the reason.

    An S3 event for a version that has since been replaced is late: running it would bill a batch for
    stale data and overwrite the newer results. A `Submit Batch Job` naming a version runs that version.
    """
    expected_etag = (request.etag or "").strip('"') or None
    superseded = False
    for key in request.key_candidates:
        if request.version_id:
            named = s3io.head(services.s3, request.bucket, key, request.version_id)
            if named is None:
                continue  # not this reading of the key
            if request.source == SUBMIT_EVENT_SOURCE:
                return named, ""
            current = s3io.head(services.s3, request.bucket, key)
            if current is None or current.version_id != request.version_id:
                superseded = True
                continue
            return current, ""
        current = s3io.head(services.s3, request.bucket, key)
        if current is None:
            continue
        if expected_etag and current.etag and current.etag != expected_etag:
            continue  # another object (the other reading of the key), or replaced since: not this event's
        return current, ""
    if superseded:
        return None, f"superseded: version {request.version_id} is no longer the current one"
    return None, "the object does not exist (any more)"


def split_input(job: Job, ref: ObjectRef, services: Services) -> Job:
    """Validates every line; either rejects the input (no API call at all) or records its shards."""
    settings = services.settings
    now = services.now()
    shards: list[Shard] = []

    def store_shard(shard_file: ShardFile) -> None:
        """Each complete shard goes to the work prefix at once: local disk holds one shard at a time."""
        work_key = f"{settings.work_prefix}{job.job_id}/shards/{shard_file.index:05d}.jsonl"
        s3io.upload_file(services.s3, shard_file.path, ref.bucket, work_key)
        os.remove(shard_file.path)
        shards.append(
            Shard(
                job_id=job.job_id,
                index=shard_file.index,
                state=ShardState.PENDING,
                work_key=work_key,
                lines=shard_file.lines,
                bytes=shard_file.bytes,
                first_line=shard_file.first_line,
                next_poll_at=now,
            )
        )

    with tempfile.TemporaryDirectory(dir=services.workdir) as directory, s3io.open_object(services.s3, ref) as stream:
        split = validate_and_split(
            stream,
            directory,
            max_lines=settings.max_lines_per_batch,
            max_bytes=settings.max_bytes_per_batch,
            on_shard=store_shard,
        )
    job_input = job.input.model_copy(update={"lines": split.lines})
    if not split.valid:
        # Shards stored before a later line turned out bad are left to the work prefix's expiry.
        logger.info("input rejected", extra={"problems": split.problem_count, "lines": split.lines})
        count("JobsRejected")
        return publish_rejection(job.model_copy(update={"input": job_input}), split, services)
    services.store.put_shards(shards)
    recorded = [(shard.first_line, shard.lines, shard.bytes) for shard in services.store.get_shards(job.job_id)]
    if recorded != [(shard.first_line, shard.lines, shard.bytes) for shard in shards]:
        # An earlier attempt recorded other shards (the limits changed in between): never mix the two.
        raise RuntimeError(
            f"job {job.job_id} was split with other limits by an earlier attempt: restore "
            "MAX_LINES_PER_BATCH / MAX_BYTES_PER_BATCH, or upload the file again"
        )
    job = services.store.update_job(job, status=JobStatus.SUBMITTING, shard_count=len(shards), input=job_input)
    logger.info("input accepted", extra={"lines": split.lines, "shards": len(shards)})
    count("JobsAccepted")
    return job


def submit_held_shard(request: ShardRequest, services: Services) -> SubmitOutcome:
    """A shard the poller handed over (held back by the in-flight limit, or deferred after a failure)."""
    shard = services.store.get_shard(request.job_id, request.shard)
    if shard is None or shard.state != ShardState.PENDING:
        return SubmitOutcome(SubmitResult.DUPLICATE, request.job_id, "the shard is no longer waiting")
    try:
        submit_shard(shard, services)
    except NoSlotAvailable:
        return SubmitOutcome(SubmitResult.IGNORED, request.job_id, "no free slot; the poller hands it over again")
    except StaleRecord:
        return SubmitOutcome(SubmitResult.DUPLICATE, request.job_id, "another invocation is submitting it")
    announce_submitted(request.job_id, services)
    return SubmitOutcome(SubmitResult.ACCEPTED, request.job_id)


def submit_pending_shards(job: Job, services: Services) -> None:
    for shard in services.store.get_shards(job.job_id):
        if shard.state != ShardState.PENDING:
            continue
        if not services.time_left():
            break
        try:
            submit_shard(shard, services)
        except NoSlotAvailable:
            logger.info("in-flight limit reached; the poller submits the rest", extra={"shard": shard.index})
            break
        except StaleRecord:
            continue
    announce_submitted(job.job_id, services)


def submit_shard(shard: Shard, services: Services) -> Shard:
    """Uploads the shard and creates its batch, resuming from the shard's checkpoints.

    Raises NoSlotAvailable when the in-flight limit is reached and StaleRecord when another worker holds
    the shard. API failures are recorded on the shard: permanent ones end it, the rest retry later.
    """
    settings = services.settings
    job = services.store.get_job(shard.job_id)
    if job is None:
        raise StaleRecord(f"job {shard.job_id} is gone")
    if job.cancel_requested_at is not None:
        return _end_cancelled(shard, services)
    api = services.api  # credentials first: a missing secret must not leave a lease behind
    lease = int(min(services.remaining_time(), 900.0)) + 60
    shard = services.store.claim_shard(
        shard, owner=services.owner, lease_seconds=lease, max_in_flight=settings.max_batches_in_flight
    )
    try:
        if shard.input_file_id is None:
            shard = _upload(shard, job, services)
        if shard.create_started_at is None:
            shard = services.store.update_shard(shard, create_started_at=services.now())
            batch = None
        else:
            # A previous attempt may have created the batch and lost the reply: adopt it if so.
            batch = api.find_batch(shard.metadata, created_after=shard.create_started_at - CREATE_LOOKBACK_SECONDS)
        batch = batch or api.create_batch_or_adopt(
            shard.input_file_id,
            metadata=shard.metadata,
            created_after=shard.create_started_at - CREATE_LOOKBACK_SECONDS,
        )
    except ZeroGPUError as error:
        code = error.code or error.type or f"http_{error.status}"
        if error.status in (401, 403):
            parameters.clear_caches()  # the key may have been rotated: read the secret afresh next time
        return _record_submit_failure(
            shard, code, f"{type(error).__name__}: {error}", error.status in PERMANENT_STATUSES, services
        )
    except ShardSourceMissing as error:
        return _record_submit_failure(shard, "input_missing", str(error), True, services)
    except ClientError as error:  # S3 or DynamoDB: the next attempt decides again
        return _record_submit_failure(shard, "aws_error", repr(error), False, services)
    count("BatchesCreated")
    logger.info("batch created", extra={"shard": shard.index, "batch_id": batch.id})
    return services.store.update_shard(
        shard,
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
        batch_status="not_created",
        failure_code="batch_cancelled",
        failure_message="the job was cancelled before this shard was submitted",
        next_poll_at=services.now(),
    )


def _upload(shard: Shard, job: Job, services: Services) -> Shard:
    api = services.api
    if shard.upload_started_at is None:
        shard = services.store.update_shard(shard, upload_started_at=services.now())
    else:
        # A previous attempt may have stored the file and died before recording its id.
        found = api.find_file(
            shard.upload_filename,
            shard.bytes,
            created_after=shard.upload_started_at - CREATE_LOOKBACK_SECONDS,
        )
        if found is not None:
            return services.store.update_shard(shard, input_file_id=found.id)
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        path = local_shard_copy(shard, job, directory, services)
        uploaded = api.upload_file_or_adopt(
            path, shard.upload_filename, created_after=shard.upload_started_at - CREATE_LOOKBACK_SECONDS
        )
    return services.store.update_shard(shard, input_file_id=uploaded.id)


def _record_submit_failure(shard: Shard, code: str, message: str, permanent: bool, services: Services) -> Shard:
    """A permanent failure ends the shard (its lines become errors; its slot is given back). Any other
    releases the lease and is retried by the poller, for a day at most."""
    now = services.now()
    gave_up = shard.first_deferred_at is not None and now - shard.first_deferred_at > GIVE_UP_AFTER_SECONDS
    if permanent or gave_up:
        logger.error("batch cannot be created", extra={"shard": shard.index, "code": code, "reason": message})
        count("BatchesRefused")
        return services.store.end_shard(
            shard,
            batch_status="not_created",
            failure_code="input_missing" if code == "input_missing" else "batch_create_failed",
            failure_message=message,
            next_poll_at=now,
        )
    logger.warning("submission deferred", extra={"shard": shard.index, "code": code, "reason": message})
    count("SubmitsDeferred")
    return services.store.update_shard(
        shard,
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
    if job is None or job.status != JobStatus.SUBMITTING or job.submitted_at is not None:
        return
    shards = services.store.get_shards(job_id)
    if len(shards) < (job.shard_count or 0) or any(shard.state == ShardState.PENDING for shard in shards):
        return
    now = services.now()
    if job.submit_announce_claimed_at is not None and job.submit_announce_claimed_at > now - 300:
        return
    try:
        job = services.store.update_job(job, submit_announce_claimed_at=now)
    except StaleRecord:
        return
    batch_ids = [shard.batch_id for shard in shards if shard.batch_id]
    services.notifier.put_event(
        "Batch Job Submitted",
        {
            "schema_version": 1,
            "job_id": job.job_id,
            "input": job.input.model_dump(mode="json"),
            "batch_count": len(batch_ids),
            "batch_ids": batch_ids,
            "shard_count": len(shards),
        },
    )
    for _ in range(3):  # the claim above makes this ours; only unrelated fields may have changed meanwhile
        try:
            services.store.update_job(job, submitted_at=now)
            break
        except StaleRecord:
            job = services.store.get_job(job_id) or job
    count("JobsSubmitted")
