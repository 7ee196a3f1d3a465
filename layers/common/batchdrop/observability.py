"""The one place that creates the Powertools Logger, Tracer and Metrics.

Every handler decorates in the same order:
    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    @tracer.capture_lambda_handler(capture_response=False)
Responses are never captured in traces: they can carry user data. The event is never logged.

The Tracer is built on first use, and only where tracing is enabled (deployed: `Tracing: Active`, in Lambda):
the X-Ray SDK it loads is about half of a handler's import. Where Powertools would disable it (not in Lambda,
under SAM local, or POWERTOOLS_TRACE_DISABLED, as locally and in the tests) the decorators return the function
unchanged and the X-Ray SDK is never imported.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from typing import Any, TypeVar, cast, overload

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

SERVICE = "batchdrop"
# At DEBUG these libraries log request and response bodies, the Secrets Manager reply (the API key)
# among them. Whatever level the operator chooses for batchdrop, they stay at WARNING.
for _library in ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore"):
    logging.getLogger(_library).setLevel(logging.WARNING)

F = TypeVar("F", bound=Callable[..., Any])


def tracing_enabled() -> bool:
    """Whether the Powertools Tracer would trace here: its own decision, from the environment (it reads
    POWERTOOLS_TRACE_DISABLED, LAMBDA_TASK_ROOT, AWS_SAM_LOCAL and AWS_CHALICE_CLI_MODE)."""
    return not Tracer._is_tracer_disabled()


class LazyTracer:
    """The Powertools Tracer's decorators, the Tracer itself (and the X-Ray SDK) built at the first decoration
    that happens with tracing enabled; with tracing disabled they return the function unchanged. The decision
    is taken at decoration, that is when a handler module is imported, as the Tracer took it when built."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._tracer: Tracer | None = None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None or tracing_enabled()

    @property
    def real(self) -> Tracer:
        """The Powertools Tracer, built (and the X-Ray SDK imported, the libraries patched) on first use."""
        if self._tracer is None:
            self._tracer = Tracer(service=self.service)
        return self._tracer

    @overload
    def capture_lambda_handler(
        self, lambda_handler: F, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> F: ...

    @overload
    def capture_lambda_handler(
        self, lambda_handler: None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> Callable[[F], F]: ...

    def capture_lambda_handler(
        self, lambda_handler: F | None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> F | Callable[[F], F]:
        return self._decorate("capture_lambda_handler", lambda_handler, capture_response, capture_error)

    @overload
    def capture_method(
        self, method: F, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> F: ...

    @overload
    def capture_method(
        self, method: None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> Callable[[F], F]: ...

    def capture_method(
        self, method: F | None = None, capture_response: bool | None = None, capture_error: bool | None = None
    ) -> F | Callable[[F], F]:
        return self._decorate("capture_method", method, capture_response, capture_error)

    def _decorate(
        self, decorator: str, function: F | None, capture_response: bool | None, capture_error: bool | None
    ) -> F | Callable[[F], F]:
        """Both decorators, used bare or with arguments: the function itself while tracing is off, else the
        real Tracer's decorator of that name around it."""
        if function is None:
            decorate = functools.partial(
                self._decorate, decorator, capture_response=capture_response, capture_error=capture_error
            )
            return cast(Callable[[F], F], decorate)
        if not self.enabled:
            return function
        real = getattr(self.real, decorator)
        return cast(F, real(function, capture_response=capture_response, capture_error=capture_error))


logger = Logger(service=SERVICE, log_uncaught_exceptions=True)
tracer = LazyTracer(service=SERVICE)
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
    BATCHES_STUCK = "BatchesStuck"
    BATCHES_NEAR_EXPIRY = "BatchesNearExpiry"
    BATCHES_CANCELLED_EARLY = "BatchesCancelledEarly"
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
    PROVIDER_FILES_DELETED = "ProviderFilesDeleted"
    RESULTS_CSV_FAILED = "ResultsCsvFailed"
    PROVIDER_FILES_NOT_DELETED = "ProviderFilesNotDeleted"
    # re-drive
    ROUNDS_STARTED = "RedriveRoundsStarted"
    LINES_REDRIVEN = "LinesRedriven"
    LINES_RECOVERED = "LinesRecovered"
    LINES_AWAITING_ACCOUNT_FIX = "LinesAwaitingAccountFix"
    # what the dashboard shows (template.yaml OperatorDashboard)
    LINES_SUCCEEDED = "LinesSucceeded"
    LINES_FAILED = "LinesFailed"
    PROMPT_TOKENS = "PromptTokens"
    COMPLETION_TOKENS = "CompletionTokens"
    COST = "Cost"
    """In the price table's currency (USD by default), at list prices: an upper bound."""
    BATCHES_IN_FLIGHT = "BatchesInFlight"
    SHARDS_WAITING = "ShardsWaiting"
    """Shards held back by MaxBatchesInFlight, as each poll run saw them."""
    API_ERRORS_RETRYABLE = "ApiErrorsRetryable"
    API_ERRORS_PERMANENT = "ApiErrorsPermanent"
    API_ERRORS_OPERATIONAL = "ApiErrorsOperational"
    """Failed API calls (each attempt), by what they mean (zerogpu.ErrorKind)."""


_metrics_lock = threading.Lock()


def count(metric: Metric, value: int = 1) -> None:
    """A business event, one metric each (from any thread: Powertools' metric set has no lock of its own)."""
    _add(metric, MetricUnit.Count, value)


def measure(metric: Metric, value: float) -> None:
    """A figure that is not a count (a cost), without a unit."""
    _add(metric, MetricUnit.NoUnit, value)


def _add(metric: Metric, unit: MetricUnit, value: float) -> None:
    # With POWERTOOLS_METRICS_DISABLED (the local stack, the tests) Powertools never clears what it is
    # given, and prints it all the same once a metric holds 100 values: a long line of EMF every
    # hundred poll runs, and a set that only grows. Nothing is added then.
    if is_metrics_disabled():
        return
    with _metrics_lock:
        metrics.add_metric(name=metric.value, unit=unit, value=value)


def count_api_error(error: Any) -> None:
    """The API client's on_error hook: each failed attempt, by its kind (retryable, permanent, operational)."""
    kind = str(getattr(error, "kind", "retryable"))
    metric = {
        "permanent": Metric.API_ERRORS_PERMANENT,
        "operational": Metric.API_ERRORS_OPERATIONAL,
    }.get(kind, Metric.API_ERRORS_RETRYABLE)
    count(metric)
