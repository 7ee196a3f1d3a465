"""Submit function: SQS ingest records (S3 Object Created, Submit Batch Job, Retry Batch Job, shards the
poller hands over) -> jobs and batches."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batchdrop.flow.intake import reject_request, retry_job, submit_job, submit_object
from batchdrop.flow.submission import submit_held_shard
from batchdrop.messages import RejectedRequest, RetryRequest, ShardRequest, SubmitResult, parse_ingest_message
from batchdrop.observability import Metric, count, logger, metrics, tracer
from batchdrop.runtime import build_services, once_per_object
from batchdrop.services import Services
from batchdrop.settings import load_settings


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    settings = load_settings("submit")
    services = build_services(settings, context)
    once = once_per_object(lambda job: submit_job(job, services), settings, context)
    try:
        return process_partial_response(
            event=event,
            record_handler=lambda record: handle_record(record, services, once),
            processor=BatchProcessor(event_type=EventType.SQS),
            context=context,
        )
    finally:
        services.close()


def handle_record(record: SQSRecord, services: Services, once: Any = None) -> None:
    """A failure leaves the record on the queue (retried, then dead-lettered); the input stays in place.
    Duplicates, lost races and requests that cannot be taken end here, quietly (counted, and a rejected
    `Submit Batch Job` answered with `Batch Job Rejected`): retrying them could not help."""
    for request in parse_ingest_message(record.body):
        if isinstance(request, ShardRequest):
            outcome = submit_held_shard(request, services)
        elif isinstance(request, RejectedRequest):
            outcome = reject_request(request, services)
        elif isinstance(request, RetryRequest):
            outcome = retry_job(request, services)
        else:
            outcome = submit_object(request, services, once=once)
        logger.info(
            "ingest record handled",
            extra={"result": outcome.result, "job_id": outcome.job_id, "reason": outcome.reason},
        )
        if outcome.result == SubmitResult.IGNORED:
            count(Metric.OBJECTS_IGNORED)
