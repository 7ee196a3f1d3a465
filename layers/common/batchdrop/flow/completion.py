"""The end of a job: merged results, report.json, and one announcement.

A job is marked FINISHED (or REJECTED) by one conditional write, which also puts it in the index's
FINISHING partition; then whoever claims the notification (a lease taken by a conditional write, longer
than a collect invocation can run) writes the merged files and the report, sends the event and the SNS
message, each marked sent on the job as soon as it is sent, and marks the job notified, which takes it out
of the index again. A run that fails mid-way gives its claim back at once, so the retry of its message
goes on; a run that dies mid-way is finished after its lease by the poller's sweep of the FINISHING
partition. What was already sent is not sent again, except for the one that was sent in the instant before
a crash: announcements are delivered at least once, each with a stable `event_id` to deduplicate on.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from batchdrop import contracts
from batchdrop.flow import merged_results, progress, redrive
from batchdrop.flow.results import export_results
from batchdrop.flow.results_table import write_results_csv
from batchdrop.flow.split import SplitResult
from batchdrop.integrations import s3io
from batchdrop.integrations.store import StaleRecord
from batchdrop.integrations.zerogpu import NotFoundError
from batchdrop.models import Job, JobStatus, LineCounts, Outcome, Shard, ShardState, add_count
from batchdrop.observability import Metric, count, logger, measure
from batchdrop.services import Services
from batchdrop.timing import NOTIFY_LEASE_SECONDS

RESULT_FILES = ("output.jsonl", "errors.jsonl", "results.csv", "status.json")
"""Everything a job writes beside report.json: a rejected re-upload removes the previous version's."""


def publish_rejection(job: Job, split: SplitResult, services: Services) -> Job:
    """Writes the rejection report, marks the job REJECTED and announces it. No API call is made.
    A job that has moved on meanwhile (another delivery split it) is left as it is."""
    current = services.store.get_job(job.job_id)
    if current is not None and current.status not in (JobStatus.RECEIVED, JobStatus.REJECTED):
        logger.warning("not rejected: another delivery has accepted this input", extra={"status": current.status})
        return current
    now = services.now()
    errors_by_code = dict(sorted(split.problem_codes.items()))
    report = contracts.rejection_report(
        job,
        lines=split.lines,
        problems=split.problems,
        problem_count=split.problem_count,
        errors_by_code=errors_by_code,
        now=now,
        prices=services.prices,
        cost_limit=services.settings.max_estimated_cost_per_job,
    )
    # outbox/<name>/ holds one version's files: the previous version's results go.
    services.s3.delete_objects(
        Bucket=job.input.bucket,
        Delete={"Objects": [{"Key": f"{job.output_prefix}{name}"} for name in RESULT_FILES], "Quiet": True},
    )
    s3io.put_json(services.s3, job.input.bucket, f"{job.output_prefix}report.json", report.document())
    retention = services.settings.job_retention_days * 86400
    job = (
        services.store.modify_job(
            job.job_id,
            lambda fresh: (
                None
                if fresh.status != JobStatus.RECEIVED
                else {
                    "status": JobStatus.REJECTED,
                    "outcome": Outcome.REJECTED,
                    "finished_at": now,
                    "input": job.input,
                    "validation_error_count": split.problem_count,
                    "errors_by_code": errors_by_code,
                    "expires_at": now + retention,
                    "sweep_at": now + NOTIFY_LEASE_SECONDS,
                }
            ),
        )
        or job
    )
    announce_rejection(job, services)
    return job


def announce_rejection(job: Job, services: Services) -> None:
    """The rejection's announcement, from what the job recorded (also when a retry finishes it). A job
    that another delivery accepted meanwhile is not announced as rejected."""
    if job.status != JobStatus.REJECTED:
        return
    detail = contracts.rejected_input_detail(job).document()
    claimed = _claim_notification(job, services)
    if claimed is not None:
        _released_on_failure(job.job_id, services, lambda: _publish(claimed, detail, services))


def finalize_job(job_id: str, services: Services, *, repair: bool = False) -> Job | None:
    """Once every shard is collected: merged output.jsonl and errors.jsonl, report.json, one announcement.
    Also finishes a rejected job whose announcement is still due. With `repair` (the poller's sweep asks),
    the job's progress sets are first checked against its shards: a collect that died between its two
    writes, or was dead-lettered there, is made good."""
    if repair:
        _repair_progress(job_id, services)
    ready: list[Shard] = []  # the job's shards, once every one is collected
    finished_here = False
    planned: redrive.NextRound | None = None  # the job's next round, when its failed lines go again

    counted_before: tuple[LineCounts | None, int | None] = (None, None)  # what an earlier end counted

    def finish(job: Job) -> dict[str, Any] | None:
        nonlocal finished_here, planned, counted_before
        finished_here, planned = False, None
        counted_before = (job.counts, job.counted_round)
        ready.clear()
        if job.notified_at is not None or job.notify_abandoned_at is not None or job.status == JobStatus.REJECTED:
            return None
        if job.status != JobStatus.FINISHED and not job.all_collected:
            return None  # the job's record says so: its shards need not be read
        if job.shard_count is None:
            return None
        # Shards of a round not committed yet (its cutting died) are not the job's yet.
        shards = sorted(
            (shard for shard in services.store.get_shards(job_id) if shard.index < job.shard_count),
            key=lambda shard: shard.index,
        )
        if len(shards) < job.shard_count:
            return None
        if any(shard.state != ShardState.COLLECTED or shard.result is None for shard in shards):
            return None
        ready.extend(shards)
        if job.status == JobStatus.FINISHED:
            return None
        planned = redrive.next_round(job, shards, services)
        if planned is not None:
            if job.redrive_due_at == planned.due_at:
                return None
            return {"redrive_due_at": planned.due_at, "sweep_at": planned.due_at}  # the sweep starts it then
        counts, _ = _totals(job, shards)
        now = services.now()
        finished_here = True
        # Whoever marks the job finished also claims its announcement (in the same write).
        return {
            "status": JobStatus.FINISHED,
            "outcome": _outcome(job, counts.succeeded, counts.failed),
            "counts": LineCounts(total=counts.total, succeeded=counts.succeeded, failed=counts.failed),
            "finished_at": now,
            "expires_at": now + services.settings.job_retention_days * 86400,
            "notify_claimed_at": now,
            "sweep_at": now + NOTIFY_LEASE_SECONDS,
            "retry_codes": None,
            "counted_round": job.round,
        }

    job = services.store.modify_job(job_id, finish)
    if job is None or job.notified_at is not None or job.notify_abandoned_at is not None:
        return job
    if job.status == JobStatus.REJECTED:
        announce_rejection(job, services)
        return services.store.get_job(job_id)
    if not ready:
        return job  # not every shard is in yet
    if planned is not None:
        if planned.due_at > services.now():
            return job  # waits in the sweep until the round is due
        started = redrive.start_round(job, ready, planned, services)
        if started is not None and started.shard_count == job.shard_count:
            return finalize_job(job_id, services)  # no line to send was found: the job ends now
        return started or job
    if finished_here:
        count(Metric.JOBS_FINISHED)
        _count_outcome(job.outcome or Outcome.FAILED)
        _count_recovery(job, ready)
        _count_lines_and_usage(job, ready, services, *counted_before)
    for shard in ready:  # the shards go with the job when its records expire (on every pass: idempotent)
        if shard.expires_at != job.expires_at:
            _expire_with_job(shard, job, services)
    claimed = job if finished_here else _claim_notification(job, services)
    if claimed is None:
        return job  # someone else is announcing it; if they die, the poller's sweep hands it back
    _released_on_failure(job_id, services, lambda: _write_results(claimed, ready, services))
    if services.settings.delete_provider_files:
        delete_provider_files(ready, services)
    return claimed


def delete_provider_files(shards: list[Shard], services: Services) -> None:
    """The job's files at the API (each batch's input, output and error file), deleted once the job has
    ended and announced its results from S3. A failure never fails the job: it is counted and logged (the
    API deletes output files 30 days after completion anyway)."""
    file_ids = sorted(
        {
            file_id
            for shard in shards
            for file_id in (shard.input_file_id, shard.output_file_id, shard.error_file_id)
            if file_id
        }
    )
    deleted = failed = 0
    for file_id in file_ids:
        try:
            services.api.delete_file(file_id)
            deleted += 1
        except NotFoundError:
            deleted += 1  # gone already (an earlier pass, or the API's own expiry)
        except Exception as error:  # the job is done: nothing here may undo that
            failed += 1
            logger.warning("a provider file could not be deleted", extra={"file_id": file_id, "error": repr(error)})
    if deleted:
        count(Metric.PROVIDER_FILES_DELETED, deleted)
    if failed:
        count(Metric.PROVIDER_FILES_NOT_DELETED, failed)


def _repair_progress(job_id: str, services: Services) -> None:
    job = services.store.get_job(job_id)
    if job is None or job.status in (JobStatus.FINISHED, JobStatus.REJECTED) or job.all_collected:
        return
    for shard in services.store.get_shards(job_id):
        collected_missing = shard.state == ShardState.COLLECTED and shard.index not in (job.collected_shards or ())
        started_missing = shard.state != ShardState.PENDING and shard.index not in (job.started_shards or ())
        if collected_missing or started_missing:
            services.store.note_progress(shard)
    job = services.store.get_job(job_id)
    if job is not None and not job.all_collected:
        # Not ready: out of the sweep; the collect of its last shard finishes it.
        services.store.modify_job(job_id, lambda fresh: {"sweep_at": None} if fresh.notified_at is None else None)


def _expire_with_job(shard: Shard, job: Job, services: Services) -> None:
    services.store.modify_shard(
        shard.job_id,
        shard.index,
        lambda fresh: None if fresh.expires_at == job.expires_at else {"expires_at": job.expires_at},
        current=shard,
    )


def _count_outcome(outcome: Outcome) -> None:
    """One metric per outcome, by name (the JobsFailed alarm depends on it)."""
    names = {
        Outcome.SUCCEEDED: Metric.JOBS_SUCCEEDED,
        Outcome.PARTIAL: Metric.JOBS_PARTIAL,
        Outcome.FAILED: Metric.JOBS_FAILED,
        Outcome.REJECTED: Metric.JOBS_REJECTED,
        Outcome.CANCELLED: Metric.JOBS_CANCELLED,
    }
    count(names[outcome])


def _count_recovery(job: Job, shards: list[Shard]) -> None:
    recovered = sum(shard.result.succeeded for shard in shards if shard.round and shard.result)
    if recovered:
        count(Metric.LINES_RECOVERED, recovered)
    _, errors_by_code = _totals(job, shards)
    if awaiting := redrive.awaiting_account_fix(errors_by_code):
        count(Metric.LINES_AWAITING_ACCOUNT_FIX, awaiting)
        logger.error(
            "lines failed for the account (quota or API key): fix it, then `batchdrop jobs retry --all-failed`",
            extra={"lines": awaiting},
        )


def _count_lines_and_usage(
    job: Job, shards: list[Shard], services: Services, counts_before: LineCounts | None, round_before: int | None
) -> None:
    """The dashboard's lines, tokens and cost, once per job: at a retry's end (`counts_before`, the
    previous end's counts and `round_before`, its last round) only what the retry changed, so that the
    sums over time stay each line once (a line it recovered moves from failed to succeeded) and each
    token billed once (the retry's own batches)."""
    counts, _ = _totals(job, shards)
    before = counts_before or LineCounts()
    count(Metric.LINES_SUCCEEDED, counts.succeeded - before.succeeded)
    count(Metric.LINES_FAILED, counts.failed - before.failed)
    if counts_before is not None and round_before is not None:
        shards = [shard for shard in shards if shard.round > round_before]
    usage = contracts.usage_of(shards)
    count(Metric.PROMPT_TOKENS, usage.total.prompt_tokens)
    count(Metric.COMPLETION_TOKENS, usage.total.completion_tokens)
    cost = contracts.cost_of(usage, services.prices)
    if cost.total is not None:
        measure(Metric.COST, cost.total)


def _totals(job: Job, shards: list[Shard]) -> tuple[contracts.Counts, dict[str, int]]:
    """The job's counts and its final failures by code, summed over its collected shards (a line sent
    again in a later round counts there, not in the round it failed in)."""
    succeeded = sum(shard.result.succeeded for shard in shards if shard.result)
    failed = 0
    errors_by_code: dict[str, int] = {}
    for shard in shards:
        if shard.result is None:
            continue
        shard_failed, codes, _ = shard.result.final(job.round)
        failed += shard_failed
        for code, n in codes.items():
            add_count(errors_by_code, code, n)
    return contracts.Counts(total=succeeded + failed, succeeded=succeeded, failed=failed), dict(
        sorted(errors_by_code.items())
    )


def _write_results(job: Job, shards: list[Shard], services: Services) -> None:
    counts, errors_by_code = _totals(job, shards)
    bucket = job.input.bucket
    try:
        _merge(job, shards, services)
    except s3io.SourceMissing:
        _restore_expired_results(job, shards, services)
        _merge(job, shards, services)
    settings = services.settings
    results_csv = settings.results_csv and _results_table(job, shards, services)
    report = contracts.finished_report(
        job,
        shards,
        counts,
        errors_by_code,
        services.prices,
        settings.max_estimated_cost_per_job,
        results_csv=results_csv,
    )
    s3io.put_json(services.s3, bucket, f"{job.output_prefix}report.json", report.document())
    progress.record_final(
        job, shards, LineCounts(total=counts.total, succeeded=counts.succeeded, failed=counts.failed), services
    )
    recovered = contracts.recovery(job, shards)
    detail = contracts.finished_detail(
        job, counts, errors_by_code, recovered, usage=report.usage, cost=report.cost, results_csv=results_csv
    )
    _publish(job, detail.document(), services)


def _results_table(job: Job, shards: list[Shard], services: Services) -> bool:
    """results.csv, best effort: whatever stops it (a shard whose lines are gone, a full disk) never stops
    the report and the announcement; the job's outputs then leave it out (a stale one is removed)."""
    try:
        write_results_csv(job, shards, services)
        return True
    except Exception as error:
        count(Metric.RESULTS_CSV_FAILED)
        logger.error("results.csv could not be written; the job ends without it", extra={"error": repr(error)})
        try:
            services.s3.delete_object(Bucket=job.input.bucket, Key=f"{job.output_prefix}results.csv")
        except Exception as cleanup:  # the lifecycle does not remove it: say so
            logger.warning("a stale results.csv could not be removed", extra={"error": repr(cleanup)})
        return False


def _merge(job: Job, shards: list[Shard], services: Services) -> None:
    """output.jsonl and errors.jsonl from the shards' result files, and where each file lies in them (so a
    retry after the work prefix expired can cut them out again)."""
    results = [shard.result for shard in shards if shard.result]
    outputs = [result.output_key for result in results if result.output_key]
    errors = [key for result in results if (key := result.final(job.round)[2])]
    made = {
        name: (keys, s3io.concatenate(services.s3, job.input.bucket, keys, f"{job.output_prefix}{name}"))
        for keys, name in ((outputs, "output.jsonl"), (errors, "errors.jsonl"))
    }
    merged_results.record(job, services.store, made)


def _restore_expired_results(job: Job, shards: list[Shard], services: Services) -> None:
    """A shard collected long before the job ended may have lost its result files to the work prefix's
    expiry: they are cut from the job's merged files again where its last end merged them (a retry), else
    exported again from the API (which keeps them for 30 days)."""
    merged = merged_results.MergedResults.load(job, services.store, services.s3)
    for shard in shards:
        if shard.result is None:
            continue
        needed = {key for key in (shard.result.output_key, shard.result.final(job.round)[2]) if key}
        missing = {key for key in needed if s3io.head(services.s3, job.input.bucket, key) is None}
        for key in sorted(missing):
            if merged is not None and merged.covers(key):
                merged.restore(key)
                missing.discard(key)
        if missing:
            logger.warning("the shard's results expired; exporting them again", extra={"shard": shard.index})
            export_results(shard, job, services, skip_unavailable=True)


def _outcome(job: Job, succeeded: int, failed: int) -> Outcome:
    if job.cancel_requested_at is not None:
        return Outcome.CANCELLED
    if failed == 0 and succeeded > 0:
        return Outcome.SUCCEEDED
    if succeeded == 0:
        return Outcome.FAILED
    return Outcome.PARTIAL


def _claim_notification(job: Job, services: Services) -> Job | None:
    """The job as claimed by this invocation, or None if it is someone else's (or done)."""
    if job.notified_at is not None or job.notify_abandoned_at is not None:
        return None
    return services.store.claim_job(
        job,
        "notify_claimed_at",
        lease_seconds=NOTIFY_LEASE_SECONDS,
        also={"sweep_at": services.now() + NOTIFY_LEASE_SECONDS},
    )


def _released_on_failure(job_id: str, services: Services, work: Any) -> None:
    """Runs the claimed work; if it fails, the claim is given back before the error goes on, so that the
    retry does the work at once instead of waiting for the lease."""
    try:
        work()
    except Exception:
        try:
            services.store.modify_job(
                job_id,
                lambda job: (
                    None if job.notified_at is not None else {"notify_claimed_at": None, "sweep_at": services.now()}
                ),
            )
        except (StaleRecord, ClientError):
            logger.warning("the announcement's claim could not be given back; the poller's sweep takes over")
        raise


def _publish(job: Job, detail: dict[str, Any], services: Services) -> None:
    """Sends what has not been sent yet, each marked as soon as it is sent, then marks the job notified."""
    store = services.store
    job = store.send_once(job, "finished_event_sent_at", lambda: services.notifier.finished_event(detail))
    done: dict[str, Any] = {"notified_at": services.now(), "sweep_at": None}
    if job.finished_message_sent_at is None:
        # The last announcement's mark goes with the job's (one write fewer per job); a crash between the
        # send and this write sends the message again, at least once, as any send before its mark.
        hours = services.settings.result_link_hours
        links = s3io.presigned_links(detail["outputs"], services.s3, hours=hours)
        services.notifier.finished_message(detail, links=links, link_hours=hours, received_at=job.received_at)
        done["finished_message_sent_at"] = services.now()
    store.mark_job(job, **done)
    logger.info("job finished", extra={"outcome": detail["outcome"], "counts": detail["counts"]})
