"""The one place that creates the Powertools Logger, Tracer and Metrics.

Every handler decorates in the same order:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
Responses are never captured in traces: they can carry user data. The event is never logged.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "batchdrop"
# At DEBUG these libraries log request and response bodies, the Secrets Manager reply (the API key)
# among them. Whatever level the operator chooses for batchdrop, they stay at WARNING.
for _library in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore"):
    logging.getLogger(_library).setLevel(logging.WARNING)

logger = Logger(service=SERVICE, log_uncaught_exceptions=True)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=SERVICE)


class Metric(StrEnum):
    """Every metric the functions emit (namespace `batchdrop`, unit Count). The alarms in template.yaml
    name some of them; tests/unit/test_template.py checks that each such name is one of these."""

    # intake and split
    DUPLICATE_EVENTS = "DuplicateEvents"
    OBJECTS_IGNORED = "ObjectsIgnored"
    SUBMIT_REQUESTS_REJECTED = "SubmitRequestsRejected"
    JOBS_ACCEPTED = "JobsAccepted"
    JOBS_REJECTED = "JobsRejected"
    # submission
    BATCHES_CREATED = "BatchesCreated"
    BATCHES_REFUSED = "BatchesRefused"
    SUBMITS_DEFERRED = "SubmitsDeferred"
    SHARDS_REBUILT = "ShardsRebuilt"
    JOBS_SUBMITTED = "JobsSubmitted"
    # polling
    BATCHES_ENDED = "BatchesEnded"
    BATCHES_NOT_FOUND = "BatchesNotFound"
    BATCHES_TIMED_OUT = "BatchesTimedOut"
    SHARDS_TIMED_OUT = "ShardsTimedOut"
    SHARDS_ABANDONED = "ShardsAbandoned"
    UNKNOWN_BATCH_STATUS = "UnknownBatchStatus"
    POLL_ERRORS = "PollErrors"
    # collection
    SHARDS_COLLECTED = "ShardsCollected"
    RESULTS_UNAVAILABLE = "ResultsUnavailable"
    UNEXPECTED_RESULT_LINES = "UnexpectedResultLines"
    # completion
    JOBS_FINISHED = "JobsFinished"
    JOBS_SUCCEEDED = "JobsSucceeded"
    JOBS_PARTIAL = "JobsPartial"
    JOBS_FAILED = "JobsFailed"
    JOBS_CANCELLED = "JobsCancelled"
    ANNOUNCEMENTS_ABANDONED = "AnnouncementsAbandoned"


def count(metric: Metric, value: int = 1) -> None:
    """A business event, one metric each."""
    metrics.add_metric(name=metric.value, unit=MetricUnit.Count, value=value)
