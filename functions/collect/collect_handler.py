"""Collect function: SQS records `{"job_id", "shard"}` -> results in S3; the job's end when all are in.
`{"job_id", "finalize": true}` (from the poller's sweep) finishes a job whose announcement is overdue."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batchdrop.config import load_settings
from batchdrop.observability import logger, metrics, tracer
from batchdrop.pipeline.collect import collect_shard
from batchdrop.pipeline.finish import finalize_job
from batchdrop.pipeline.runtime import build_services
from batchdrop.pipeline.services import Services


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = build_services(load_settings("collect"), context)
    try:
        return process_partial_response(
            event=event,
            record_handler=lambda record: handle_record(record, services),
            processor=BatchProcessor(event_type=EventType.SQS),
            context=context,
        )
    finally:
        services.close()


def handle_record(record: SQSRecord, services: Services) -> None:
    message = json.loads(record.body)
    if message.get("finalize"):
        logger.append_keys(job_id=message["job_id"])
        finalize_job(message["job_id"], services, repair=True)
        return
    logger.append_keys(job_id=message["job_id"], shard=message["shard"])
    collect_shard(message["job_id"], int(message["shard"]), services)
