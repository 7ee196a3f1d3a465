"""Intake: from an event to a job. The event names an object; the object is resolved (a late event for
a replaced version is ignored), its key is classified (a key that cannot name a folder gets a rejected
report), the job is recorded once per object, and its input goes on to the split and the submission.

A `Submit Batch Job` request that cannot be taken is answered with `Batch Job Rejected`, at once.
Duplicate deliveries and lost races end quietly (counted as DuplicateEvents).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from batchdrop import contracts
from batchdrop.flow import redrive
from batchdrop.flow.completion import announce_rejection, finalize_job, publish_rejection
from batchdrop.flow.split import (
    SplitResult,
    adopt_recorded_split,
    split_input,
)
from batchdrop.flow.submission import submit_pending_shards
from batchdrop.integrations import s3io
from batchdrop.messages import (
    SUBMIT_EVENT_SOURCE,
    RejectedRequest,
    RetryRequest,
    SubmitOutcome,
    SubmitRequest,
    SubmitResult,
)
from batchdrop.models import InputInfo, InputKey, Job, JobStatus, ObjectRef, classify_key
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services
from batchdrop.validation import Problem, ProblemCode


def submit_object(
    request: SubmitRequest,
    services: Services,
    *,
    once: Callable[..., dict[str, str]] | None = None,
) -> SubmitOutcome:
    """Resolves the object the event names and submits it; `once` guards repeated deliveries."""
    settings = services.settings
    if request.source == SUBMIT_EVENT_SOURCE and request.bucket != settings.bucket_name:
        return reject_request(
            RejectedRequest(
                request.detail, f"only objects of the stack's bucket s3://{settings.bucket_name} are submitted"
            ),
            services,
        )
    ref, reason = resolve_object(request, services)
    if ref is None:
        if request.source == SUBMIT_EVENT_SOURCE:
            return reject_request(RejectedRequest(request.detail, reason), services)
        return SubmitOutcome(SubmitResult.IGNORED, reason=reason)
    key = classify_key(
        ref.key,
        input_prefix=settings.input_prefix,
        output_prefix=settings.output_prefix,
        reserved_prefixes=settings.reserved_prefixes,
        any_key=request.source == SUBMIT_EVENT_SOURCE,
    )
    if key is None:
        reason = _not_an_input(ref.key, services)
        if request.source == SUBMIT_EVENT_SOURCE:
            return reject_request(RejectedRequest(request.detail, reason), services)
        return SubmitOutcome(SubmitResult.IGNORED, reason=reason)
    identity = {
        "job_id": ref.job_id,
        "bucket": ref.bucket,
        "key": ref.key,
        "version_id": ref.version_id,
        "etag": ref.etag,
        "size": ref.size,
        "name": key.name,
        "key_problem": None
        if key.problem is None
        else {"code": key.problem.code.value, "message": key.problem.message},
    }
    run = once or (lambda job: submit_job(job, services))
    try:
        reply = run(job=identity)
    except IdempotencyAlreadyInProgressError:
        # Another delivery for this object is running now; if it dies, its own message comes back. (Safe
        # because the ingest queue's visibility timeout outlasts the function's: a redelivery of the *same*
        # message finds the in-progress record expired. tests/unit/test_template.py holds that ratio.)
        count(Metric.DUPLICATE_EVENTS)
        return SubmitOutcome(SubmitResult.DUPLICATE, ref.job_id, "another delivery of this object is being processed")
    return SubmitOutcome(SubmitResult(reply["result"]), reply.get("job_id"), reply.get("reason", ""))


def retry_job(request: RetryRequest, services: Services) -> SubmitOutcome:
    """`Retry Batch Job`: the job's failed lines go again as a new round, or the request is answered with
    `Batch Job Rejected`, saying why."""
    try:
        job, lines = redrive.request_retry(
            services.store,
            request.job_id,
            now=services.now(),
            codes=request.codes,
            all_failed=request.all_failed,
            s3=services.s3,
        )
    except redrive.RetryRefused as error:
        return reject_request(RejectedRequest(request.detail, str(error)), services)
    logger.info("retry requested", extra={"job_id": job.job_id, "lines": lines, "codes": job.retry_codes})
    return SubmitOutcome(SubmitResult.ACCEPTED, job.job_id, f"{lines} failed lines go again")


def _not_an_input(key: str, services: Services) -> str:
    settings = services.settings
    if any(key.startswith(prefix) for prefix in settings.reserved_prefixes):
        return f"the key lies under {settings.output_prefix!r} or {settings.work_prefix!r}, where the pipeline writes"
    if not key.endswith((".jsonl", ".jsonl.gz")):
        return "not a .jsonl or .jsonl.gz key"
    return f"not an input key under {settings.input_prefix!r}"


def reject_request(rejected: RejectedRequest, services: Services) -> SubmitOutcome:
    """Answers a `Submit Batch Job` request that cannot be taken with `Batch Job Rejected`."""
    detail = contracts.rejected_request_detail(rejected.detail, rejected.reason, services.now())
    services.notifier.request_rejected(detail.document())
    count(Metric.SUBMIT_REQUESTS_REJECTED)
    logger.warning("submit request rejected", extra={"reason": rejected.reason})
    return SubmitOutcome(SubmitResult.REJECTED, reason=rejected.reason)


def submit_job(job: dict[str, Any], services: Services) -> dict[str, str]:
    """Records the job (once per object), validates and splits it, then submits its shards."""
    settings = services.settings
    ref = ObjectRef(job["bucket"], job["key"], job.get("version_id"), job.get("etag"), job.get("size"))
    logger.append_keys(job_id=ref.job_id, s3_key=ref.key)
    key = _input_key(job)
    record = services.store.get_job(ref.job_id)
    first_attempt = record is None
    if record is None:
        new = Job(
            job_id=ref.job_id,
            status=JobStatus.RECEIVED,
            input=InputInfo(bucket=ref.bucket, key=ref.key, version_id=ref.version_id, etag=ref.etag, bytes=ref.size),
            output_prefix=key.output_prefix(settings.output_prefix, ref.job_id),
            received_at=services.now(),
        )
        record = services.store.create_job(new)
        first_attempt = record is new  # else another delivery recorded it meanwhile
    if record.notified_at is None and record.status == JobStatus.REJECTED:
        announce_rejection(record, services)  # the first attempt died before announcing it
    elif record.notified_at is None and record.submitted_at is not None:
        finalize_job(record.job_id, services)  # idem, if this delivery was the one to finish the job
    if record.status in (JobStatus.FINISHED, JobStatus.REJECTED) or record.submitted_at is not None:
        count(Metric.DUPLICATE_EVENTS)
        return {"result": SubmitResult.DUPLICATE, "job_id": record.job_id, "reason": f"job already {record.status}"}
    if record.status == JobStatus.RECEIVED and key.problem is not None:
        logger.info("input rejected: its key cannot be run", extra={"code": key.problem.code})
        count(Metric.JOBS_REJECTED)
        split = SplitResult()
        split.note(key.problem)
        publish_rejection(record, split, services)
        return {"result": SubmitResult.REJECTED, "job_id": record.job_id}
    shards = None
    if record.status == JobStatus.RECEIVED:
        # An earlier attempt that died after recording every shard has validated the file already.
        adopted = None if first_attempt else adopt_recorded_split(record, services)
        if adopted is not None:
            record = adopted
        else:
            record, split, shards = split_input(record, ref, services, first_attempt=first_attempt)
            if not split.valid:
                record = publish_rejection(record, split, services)
        if record.status == JobStatus.REJECTED:
            return {"result": SubmitResult.REJECTED, "job_id": record.job_id}
    # Just split: the job and its shards are as this invocation wrote them (nothing to read again).
    submit_pending_shards(record, services, shards=shards if record.status == JobStatus.SUBMITTING else None)
    # If an earlier attempt died after storing the shards, the poller may already have run them all.
    finalize_job(record.job_id, services)
    return {"result": SubmitResult.ACCEPTED, "job_id": record.job_id}


def _input_key(job: dict[str, Any]) -> InputKey:
    problem = job.get("key_problem")
    if problem is None:
        return InputKey(job["name"])
    return InputKey(job.get("name"), Problem(ProblemCode(problem["code"]), problem["message"]))


def resolve_object(request: SubmitRequest, services: Services) -> tuple[ObjectRef | None, str]:
    """The object the event names, if it is still the current one; else None and the reason.

    An S3 event for a version that has since been replaced is late: running it would bill a batch for
    stale data and overwrite the newer results. A `Submit Batch Job` naming a version runs that version.
    """
    expected_etag = (request.etag or "").strip('"') or None
    superseded = False
    for key in request.key_candidates:
        if request.version_id and request.source == SUBMIT_EVENT_SOURCE:
            named = s3io.head(services.s3, request.bucket, key, request.version_id)
            if named is not None:
                return named, ""
            continue
        current = s3io.head(services.s3, request.bucket, key)
        if current is None:
            continue  # not this reading of the key (or deleted since)
        if request.version_id:
            if current.version_id == request.version_id:
                return current, ""
            superseded = True  # replaced since, or the other reading of the key: the next one decides
            continue
        if expected_etag and current.etag and current.etag != expected_etag:
            continue  # another object (the other reading of the key), or replaced since: not this event's
        return current, ""
    if superseded:
        return None, f"superseded: version {request.version_id} is no longer the current one"
    if request.version_id:
        return None, f"version {request.version_id} of the object does not exist (any more)"
    return None, "the object does not exist (any more)"
