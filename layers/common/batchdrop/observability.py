"""The one place that creates the Powertools Logger, Tracer and Metrics.

Every handler decorates in the same order:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
Responses are never captured in traces: they can carry user data. The event is never logged.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "batchdrop"

logger = Logger(service=SERVICE, log_uncaught_exceptions=True)
tracer = Tracer(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=SERVICE)


def count(name: str, value: int = 1) -> None:
    """A business event, one metric each (JobsSubmitted, JobsRejected, BatchesCreated, ...)."""
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
