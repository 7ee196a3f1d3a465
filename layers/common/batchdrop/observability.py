"""The one place that creates the Powertools Logger, Tracer and Metrics.

Every handler decorates in the same order:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
Responses are never captured in traces: they can carry user data. The event is never logged.
"""

from __future__ import annotations

import logging

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


def count(name: str, value: int = 1) -> None:
    """A business event, one metric each (JobsSubmitted, JobsRejected, BatchesCreated, ...)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
