"""Collect function: SQS records `{"job_id", "shard"}` -> results in S3; the job's end when all are in.
`{"job_id", "finalize": true}` (from the poller's sweep) finishes a job whose announcement is overdue."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batchdrop.flow.collection import collect_shard
from batchdrop.flow.completion import finalize_job
from batchdrop.messages import FinalizeRequest, parse_collect_message
from batchdrop.observability import logger, metrics, tracer
from batchdrop.runtime import build_services
from batchdrop.services import Services
from batchdrop.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
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
    """A failure leaves the record on the queue (retried, then dead-lettered, where an operator sees it):
    so does a message that is not a collect request (InvalidMessage). Lost races end quietly."""
    request = parse_collect_message(record.body)
    if isinstance(request, FinalizeRequest):
        logger.append_keys(job_id=request.job_id)
        finalize_job(request.job_id, services, repair=True)
        return
    logger.append_keys(job_id=request.job_id, shard=request.shard)
    collect_shard(request.job_id, request.shard, services)
