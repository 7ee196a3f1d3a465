"""Collection: a terminal shard's results, streamed from the API into S3 and sorted, then counted; once
every shard of the job is collected, the job goes on to completion.

The sorting itself is results.py (completion uses it too, for shards that end with the job).

A result file the API does not hand over (an outage, or a 404: deleted, or the key now belongs to another
project) is tried again each time the poller asks (every 15 minutes), never forever: after
BATCH_NOT_FOUND_GRACE_MINUTES of 404s, or COLLECT_RETRY_LIMIT_HOURS of other failures, the shard is
collected without it and the lines it would have reported end as `results_unavailable`.
"""

from __future__ import annotations

from typing import Any

from batchdrop.flow.completion import finalize_job
from batchdrop.flow.results import ResultsUnavailable, export_results
from batchdrop.flow.submission import announce_submitted
from batchdrop.integrations.zerogpu import NotFoundError
from batchdrop.models import Job, Shard, ShardResult, ShardState
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services

_MAX_MESSAGE_CHARS = 500


def collect_shard(job_id: str, index: int, services: Services) -> None:
    job = services.store.get_job(job_id)
    if job is None:
        logger.warning("collect request for an unknown job", extra={"job_id": job_id, "shard": index})
        return
    shard = services.store.get_shard(job_id, index)
    written_here = False
    if shard is not None and shard.state == ShardState.TERMINAL:
        result = _export(shard, job, services)
        if result is None:
            return  # recorded; the poller asks again

        def collected(fresh: Shard) -> dict[str, Any] | None:
            # e.g. the poller moved its next look meanwhile: the exported results stay valid
            nonlocal written_here
            written_here = fresh.state == ShardState.TERMINAL  # the write is asked for; it raises if it fails
            return {"state": ShardState.COLLECTED, "result": result} if written_here else None

        shard = services.store.modify_shard(job_id, index, collected, current=shard)
        if written_here:
            count(Metric.SHARDS_COLLECTED)  # and its write noted the progress on the job
    if shard is not None and shard.state == ShardState.COLLECTED:
        if not written_here and index not in (job.collected_shards or ()):
            services.store.note_progress(shard)  # an earlier attempt died between the two writes
    elif shard is not None:
        logger.warning("collect request for a shard still running", extra={"shard": index, "state": shard.state})
        return
    # The poller may have moved the job's last shard out of the queue (a bound): submit never learnt of it.
    announce_submitted(job_id, services)
    finalize_job(job_id, services)


def _export(shard: Shard, job: Job, services: Services) -> ShardResult | None:
    """The shard's results, or None when a result file cannot be had yet (the failure is recorded)."""
    settings = services.settings
    try:
        return export_results(shard, job, services)
    except ResultsUnavailable as error:
        reason = str(error)[:_MAX_MESSAGE_CHARS]
        now = services.now()
        since = shard.collect_failing_since or now
        # The 404 grace counts 404s only; other failures have their own, longer bound.
        not_found_since = (shard.collect_not_found_since or now) if isinstance(error.cause, NotFoundError) else None
        if not_found_since is not None:
            expired = now - not_found_since >= settings.batch_not_found_grace_minutes * 60
        else:
            expired = now - since >= settings.collect_retry_limit_hours * 3600
        if expired:
            logger.error("result file unavailable past its bound; collected without it", extra={"error": reason})
            count(Metric.RESULTS_UNAVAILABLE)
            return export_results(shard, job, services, skip_unavailable=True)
        logger.warning("result file unavailable; tried again later", extra={"error": reason})
        services.store.modify_shard(
            shard.job_id,
            shard.index,
            lambda fresh: (
                {
                    "collect_failing_since": fresh.collect_failing_since or since,
                    "collect_not_found_since": (fresh.collect_not_found_since or not_found_since)
                    if not_found_since is not None
                    else None,
                    "collect_error": reason,
                }
                if fresh.state == ShardState.TERMINAL
                else None
            ),
        )
        return None
