"""Fixtures of the pipeline tier: moto in-process, the in-process emulator, one manual clock."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pipeline_harness import API_KEY, BUCKET, PROJECT_ID, TABLE, Pipeline, create_table, settings_for

from batchdrop.integrations.notifier import Notifier
from batchdrop.integrations.secrets import load_credentials
from batchdrop.integrations.store import JobStore
from batchdrop.integrations.zerogpu import RetryPolicy, ZeroGPUClient
from batchdrop.runtime import aws_client, idempotency_store
from batchdrop.services import Services
from batchdrop_tools.emulator import Emulator, EmulatorSettings, ManualClock

_DYNAMODB_TURNS = threading.Lock()


def serialized(client: Any) -> Any:
    """DynamoDB is safe to call from many threads; moto's in-process backend is not (a transaction
    deep-copies the tables while another thread writes, and two conditional writes can both pass), so
    calls on every DynamoDB client of the tests take turns, through one lock."""
    call = client._make_api_call

    def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _DYNAMODB_TURNS:
            return call(*args, **kwargs)

    client._make_api_call = one_at_a_time
    return client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_767_225_600.0)


@pytest.fixture
def emulators(clock: ManualClock, tmp_path: Path) -> Iterator[list[Emulator]]:
    created: list[Emulator] = []
    yield created
    for emu in created:
        emu.close()


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        aws_client.cache_clear()
        idempotency_store.cache_clear()
        serialized(aws_client("dynamodb"))  # the idempotency records' client (runtime.idempotency_store)
        yield
    aws_client.cache_clear()
    idempotency_store.cache_clear()


@pytest.fixture
def make_pipeline(aws: None, emulators: list[Emulator], clock: ManualClock, tmp_path: Path):
    """Builds a Pipeline; keyword arguments override settings (e.g. MAX_LINES_PER_BATCH=10), and
    `emulator_settings` configures the emulator (e.g. {"lines_per_second": 2})."""

    def build(emulator_settings: dict[str, Any] | None = None, **overrides: Any) -> Pipeline:
        emulator = Emulator(
            settings=EmulatorSettings(
                api_key=API_KEY,
                project_id=PROJECT_ID,
                storage_dir=str(tmp_path / "emulator"),
                **(emulator_settings or {}),
            ),
            clock=clock,
        )
        emulators.append(emulator)
        region = "us-east-1"
        s3 = boto3.client("s3", region_name=region)
        sqs = boto3.client("sqs", region_name=region)
        sns = boto3.client("sns", region_name=region)
        events = boto3.client("events", region_name=region)
        secrets = boto3.client("secretsmanager", region_name=region)
        dynamodb = serialized(boto3.client("dynamodb", region_name=region))
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        create_table(dynamodb)
        collect_queue = sqs.create_queue(QueueName="collect")["QueueUrl"]
        ingest_queue = sqs.create_queue(QueueName="ingest")["QueueUrl"]
        events_queue = sqs.create_queue(QueueName="events")["QueueUrl"]
        sns_queue = sqs.create_queue(QueueName="sns")["QueueUrl"]
        topic_arn = sns.create_topic(Name="notifications")["TopicArn"]
        sns_queue_arn = sqs.get_queue_attributes(QueueUrl=sns_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=sns_queue_arn)
        events_queue_arn = sqs.get_queue_attributes(QueueUrl=events_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        events.put_rule(Name="batchdrop-events", EventPattern=json.dumps({"source": ["batchdrop"]}))
        events.put_targets(Rule="batchdrop-events", Targets=[{"Id": "q", "Arn": events_queue_arn}])
        secret_id = secrets.create_secret(
            Name="batchdrop/zerogpu", SecretString=json.dumps({"api_key": API_KEY, "project_id": PROJECT_ID})
        )["ARN"]
        settings = settings_for(collect_queue, ingest_queue, topic_arn, secret_id, **overrides)

        def api_factory() -> ZeroGPUClient:
            credentials = load_credentials(settings.secret_id, force_fetch=True)
            return ZeroGPUClient(
                credentials.api_key,
                credentials.project_id,
                "http://zerogpu.test",
                transport=emulator.transport(),
                retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
                sleep=lambda seconds: None,
            )

        services = Services(
            settings=settings,
            s3=s3,
            sqs=sqs,
            store=JobStore(dynamodb, TABLE, clock=clock.now),
            notifier=Notifier(events=events, sns=sns, bus_name="default", topic_arn=topic_arn),
            api_factory=api_factory,
            workdir=str(tmp_path),
            owner="test-invocation",
            clock=clock.now,
        )
        return Pipeline(services, emulator, clock, collect_queue, ingest_queue, events_queue, sns_queue, s3, sqs)

    return build


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    return make_pipeline()
