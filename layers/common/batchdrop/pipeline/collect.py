"""Collect: a terminal shard's output and error files, streamed from the API into S3, and counted.

Every input line of the shard ends in exactly one of the two result files: lines the API reported twice
are kept once, and lines it never reported (a batch that failed or could not be created, or an
anomaly) get an error line of our own. Once every shard of the job is collected, the job is finalized.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Any

from batchdrop.observability import count, logger
from batchdrop.pipeline import s3io
from batchdrop.pipeline.finish import finalize_job
from batchdrop.pipeline.models import Shard, ShardResult, ShardState
from batchdrop.pipeline.services import Services
from batchdrop.pipeline.store import StaleRecord
from batchdrop.validation import iter_physical_lines
from batchdrop.zerogpu import parse_result_line

UNREPORTED_MESSAGES = {
    "batch_create_failed": "The batch for this line could not be created: {detail}",
    "batch_failed": "The batch for this line failed before the line ran: {detail}",
    "missing_result": "The API reported no result for this line (batch status {detail}).",
    "batch_cancelled": "The job was cancelled before this line ran.",
}


def collect_shard(job_id: str, index: int, services: Services) -> None:
    shard = services.store.get_shard(job_id, index)
    if shard is None:
        logger.warning("collect request for an unknown shard", extra={"job_id": job_id, "shard": index})
        return
    if shard.state == ShardState.TERMINAL:
        result = export_results(shard, services)
        try:
            services.store.update_shard(shard, state=ShardState.COLLECTED, result=result)
            count("ShardsCollected")
        except StaleRecord:
            fresh = services.store.get_shard(job_id, index)
            if fresh is None or fresh.state != ShardState.COLLECTED:
                raise
    elif shard.state != ShardState.COLLECTED:
        logger.warning("collect request for a shard still running", extra={"shard": index, "state": shard.state})
        return
    finalize_job(job_id, services)


def export_results(shard: Shard, services: Services) -> ShardResult:
    job = services.store.get_job(shard.job_id)
    if job is None:
        raise StaleRecord(f"job {shard.job_id} is gone")
    bucket = job.input.bucket
    base = f"{services.settings.work_prefix}{shard.job_id}/results/{shard.index:05d}"
    result = ShardResult(output_key=f"{base}.output.jsonl", errors_key=f"{base}.errors.jsonl")
    seen: set[str] = set()
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        output_path, errors_path = (
            os.path.join(directory, "output.jsonl"),
            os.path.join(directory, "errors.jsonl"),
        )
        with open(output_path, "wb") as output, open(errors_path, "wb") as errors:
            for file_id in (shard.output_file_id, shard.error_file_id):
                if file_id:
                    _sort_api_file(file_id, directory, output, errors, seen, result, services)
            _add_unreported(shard, bucket, errors, seen, result, services)
        s3io.upload_file(services.s3, output_path, bucket, result.output_key)
        s3io.upload_file(services.s3, errors_path, bucket, result.errors_key)
    logger.info(
        "shard collected",
        extra={"shard": shard.index, "succeeded": result.succeeded, "failed": result.failed},
    )
    return result


def _sort_api_file(
    file_id: str,
    directory: str,
    output: IO[bytes],
    errors: IO[bytes],
    seen: set[str],
    result: ShardResult,
    services: Services,
) -> None:
    """Downloads one result file (streamed to disk) and routes each line by what it says, not by file."""
    path = os.path.join(directory, f"{file_id}.download")
    with open(path, "w+b") as download:
        services.api.download_file_content(file_id, download)
        download.seek(0)
        for physical in iter_physical_lines(download, max_line_bytes=64 * 1024 * 1024):
            if physical.too_long or not physical.content.strip():
                continue
            line = parse_result_line(physical.content)
            if not line.custom_id or line.custom_id in seen:
                continue
            seen.add(line.custom_id)
            if line.succeeded:
                output.write(physical.content + b"\n")
                result.succeeded += 1
            else:
                errors.write(physical.content + b"\n")
                _count_failure(result, line.code or "unknown_error")
    os.remove(path)


def _add_unreported(
    shard: Shard, bucket: str, errors: IO[bytes], seen: set[str], result: ShardResult, services: Services
) -> None:
    if shard.failure_code:
        code, detail = shard.failure_code, shard.failure_message or ""
    elif shard.batch_status == "failed":
        code, detail = "batch_failed", shard.failure_message or "the API failed the batch"
    else:
        code, detail = "missing_result", shard.batch_status or "unknown"
    body = services.s3.get_object(Bucket=bucket, Key=shard.work_key)["Body"]
    try:
        for physical in iter_physical_lines(body):
            if not physical.content.strip():
                continue
            custom_id = json.loads(physical.content)["custom_id"]
            if custom_id in seen:
                continue
            seen.add(custom_id)
            errors.write(json.dumps(_error_line(custom_id, code, detail)).encode() + b"\n")
            _count_failure(result, code)
    finally:
        body.close()


def _error_line(custom_id: str, code: str, detail: str) -> dict[str, Any]:
    message = UNREPORTED_MESSAGES.get(code, "{detail}").format(detail=detail)
    return {
        "id": None,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message, "param": None},
    }


def _count_failure(result: ShardResult, code: str) -> None:
    result.failed += 1
    result.errors_by_code[code] = result.errors_by_code.get(code, 0) + 1
