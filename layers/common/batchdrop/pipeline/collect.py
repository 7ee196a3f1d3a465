"""Collect: a terminal shard's output and error files, streamed from the API into S3 and counted
(see results.py); once every shard of the job is collected, the job is finalized."""

from __future__ import annotations

from batchdrop.observability import count, logger
from batchdrop.pipeline.finish import finalize_job
from batchdrop.pipeline.models import ShardResult, ShardState
from batchdrop.pipeline.results import export_results
from batchdrop.pipeline.services import Services
from batchdrop.pipeline.store import StaleRecord

_ATTEMPTS = 5


def collect_shard(job_id: str, index: int, services: Services) -> None:
    job = services.store.get_job(job_id)
    if job is None:
        logger.warning("collect request for an unknown job", extra={"job_id": job_id, "shard": index})
        return
    result: ShardResult | None = None
    for _ in range(_ATTEMPTS):
        shard = services.store.get_shard(job_id, index)
        if shard is None or shard.state == ShardState.COLLECTED:
            break
        if shard.state != ShardState.TERMINAL:
            logger.warning("collect request for a shard still running", extra={"shard": index, "state": shard.state})
            return
        result = result or export_results(shard, job, services)
        try:
            services.store.update_shard(shard, state=ShardState.COLLECTED, result=result)
            count("ShardsCollected")
            break
        except StaleRecord:
            continue  # e.g. the poller moved its next look; the exported results stay valid
    else:
        raise StaleRecord(f"shard {job_id}/{index} kept changing while it was being collected")
    finalize_job(job_id, services)
