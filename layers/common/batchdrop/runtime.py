"""Builds the Services of one invocation from the settings and the Lambda context.

boto3 clients are created lazily and cached per process (warm invocations reuse connections), never at
import time; they honour AWS_ENDPOINT_URL, which is how the local stack points them at moto.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from batchdrop.integrations.notifier import Notifier
from batchdrop.integrations.secrets import load_credentials
from batchdrop.integrations.store import JobStore
from batchdrop.integrations.zerogpu import ZeroGPUClient
from batchdrop.observability import count_api_error
from batchdrop.services import DEADLINE_MARGIN_SECONDS, Services
from batchdrop.settings import Settings

if TYPE_CHECKING:
    # Powertools Idempotency is imported where it is used: only submit uses it.
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

_BOTO_CONFIG = Config(
    connect_timeout=5,
    read_timeout=60,
    retries={"mode": "standard", "max_attempts": 5},
    max_pool_connections=48,  # the poller's 32 threads and its read-ahead
)
IDEMPOTENCY_SECONDS = 2 * 86400  # longer than any redelivery window (EventBridge retries for 24 h)


@lru_cache(maxsize=16)
def aws_client(service: str) -> Any:
    create: Any = boto3.client  # the service is named at run time: its typed overloads cannot apply
    return create(service, config=_s3_config() if service == "s3" else _BOTO_CONFIG)


def _s3_config() -> Config:
    """S3 also pre-signs the SNS message's links: SigV4 (the legacy signature is refused in newer regions),
    for the bucket's regional host (the global one redirects a new bucket's requests, and a redirected
    signature fails). Against another endpoint (the local stack) the addressing stays botocore's choice."""
    on_aws = not (os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3"))
    return _BOTO_CONFIG.merge(Config(signature_version="s3v4", s3={"addressing_style": "virtual"} if on_aws else None))


def build_services(settings: Settings, context: Any | None = None) -> Services:
    remaining = _remaining_time(context)

    def api_factory() -> ZeroGPUClient:
        credentials = load_credentials(settings.secret_id, max_age=settings.secret_max_age_seconds)
        return ZeroGPUClient(
            credentials.api_key,
            credentials.project_id,
            settings.api_base_url,
            remaining_time=lambda: remaining() - DEADLINE_MARGIN_SECONDS,
            on_error=count_api_error,
        )

    dynamodb = aws_client("dynamodb")
    return Services(
        settings=settings,
        s3=aws_client("s3"),
        sqs=aws_client("sqs"),
        store=JobStore(dynamodb, settings.table_name, clock=time.time),
        notifier=Notifier(
            events=aws_client("events"),
            sns=aws_client("sns"),
            bus_name=settings.event_bus_name,
            topic_arn=settings.topic_arn,
        ),
        api_factory=api_factory,
        workdir=_workdir(),
        owner=getattr(context, "aws_request_id", None) or f"local-{os.getpid()}-{time.time_ns()}",
        remaining_time=remaining,
    )


def _remaining_time(context: Any | None):  # type: ignore[no-untyped-def]
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        return lambda: context.get_remaining_time_in_millis() / 1000.0
    deadline = time.monotonic() + 900.0
    return lambda: deadline - time.monotonic()


def _workdir() -> str:
    path = os.path.join(tempfile.gettempdir(), "batchdrop")
    os.makedirs(path, exist_ok=True)
    return path


@lru_cache(maxsize=4)
def idempotency_store(table_name: str) -> DynamoDBPersistenceLayer:
    """Powertools idempotency records in the jobs table, under their own partition."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    return DynamoDBPersistenceLayer(
        table_name=table_name,
        key_attr="pk",
        sort_key_attr="sk",
        static_pk_value="IDEMPOTENCY#submit",
        expiry_attr="expires_at",
        boto3_client=aws_client("dynamodb"),
    )


def once_per_object(function: Any, settings: Settings, context: Any | None) -> Any:
    """Wraps `function(job=...)` so that concurrent or repeated deliveries for one object run it once.

    This is the first guard only: after a timeout Powertools lets the work run again, and then the job's
    checkpoints and the adoption of batches found by metadata keep it from creating a second batch.
    """
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

    config = IdempotencyConfig(
        event_key_jmespath="job_id",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=IDEMPOTENCY_SECONDS,
    )
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)
    return idempotent_function(
        function,
        data_keyword_argument="job",
        persistence_store=idempotency_store(settings.table_name),
        config=config,
        key_prefix="submit",
    )
