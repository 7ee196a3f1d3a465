"""The pipeline against moto (in-process) and the in-process emulator, on one manual clock.

`Pipeline` plays the parts AWS plays in production: it delivers ingest records to the submit logic,
runs the poller, and drains the collect queue into the collect logic, using the same record shapes
Lambda delivers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import collect_handler
import pytest
import submit_handler
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from moto import mock_aws

from batchdrop.config import Settings
from batchdrop.emulator import Emulator, EmulatorSettings, ManualClock
from batchdrop.local.template import derive_local_resources, find_template, load_template
from batchdrop.pipeline.notify import Notifier
from batchdrop.pipeline.poll import PollSummary, poll_once
from batchdrop.pipeline.runtime import aws_client
from batchdrop.pipeline.services import Services
from batchdrop.pipeline.store import JobStore
from batchdrop.secrets import load_credentials
from batchdrop.zerogpu import RetryPolicy, ZeroGPUClient

BUCKET = "batchdrop-test"
TABLE = "batchdrop-jobs"
API_KEY = "zgpu-test-key-do-not-log"
PROJECT_ID = "0b5d7c1e-0000-4000-8000-000000000001"


def chat_line(custom_id: str, text: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "zgpu-small",
            "messages": [{"role": "user", "content": text or f"question {custom_id}"}],
        },
    } | extra


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


def create_table(dynamodb: Any) -> None:
    """The table exactly as template.yaml defines it, so that schema drift fails these tests."""
    table = derive_local_resources(load_template(find_template()), bucket_name=BUCKET).table
    dynamodb.create_table(**(table.create_table_kwargs | {"TableName": TABLE}))


@dataclass
class Pipeline:
    services: Services
    emulator: Emulator
    clock: ManualClock
    collect_queue_url: str
    events_queue_url: str
    sns_queue_url: str
    s3: Any
    sqs: Any
    finished_events: list[dict[str, Any]] = field(default_factory=list)
    submitted_events: list[dict[str, Any]] = field(default_factory=list)
    sns_messages: list[dict[str, Any]] = field(default_factory=list)

    # dropping files

    def put_input(self, key: str, body: bytes, bucket: str = BUCKET) -> dict[str, Any]:
        reply = self.s3.put_object(Bucket=bucket, Key=key, Body=body)
        head = self.s3.head_object(Bucket=bucket, Key=key)
        return {
            "bucket": bucket,
            "key": key,
            "version_id": reply.get("VersionId"),
            "etag": head["ETag"].strip('"'),
            "size": head["ContentLength"],
        }

    def object_created_body(
        self, obj: dict[str, Any], *, key_in_event: str | None = None, event_id: str | None = None
    ) -> str:
        return json.dumps(
            {
                "version": "0",
                "id": event_id or str(uuid.uuid4()),
                "detail-type": "Object Created",
                "source": "aws.s3",
                "account": "123456789012",
                "time": "2026-01-01T00:00:00Z",
                "region": "us-east-1",
                "resources": [f"arn:aws:s3:::{obj['bucket']}"],
                "detail": {
                    "version": "0",
                    "bucket": {"name": obj["bucket"]},
                    "object": {
                        "key": key_in_event if key_in_event is not None else obj["key"],
                        "size": obj["size"],
                        "etag": obj["etag"],
                        "version-id": obj["version_id"],
                        "sequencer": "00617F08299329D189",
                    },
                    "request-id": "N4N7GDK58NMKJ12R",
                    "requester": "123456789012",
                    "reason": "PutObject",
                },
            }
        )

    def sqs_record(self, body: str) -> SQSRecord:
        return SQSRecord(
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "handle",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1767225600000"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ingest",
                "awsRegion": "us-east-1",
            }
        )

    def deliver(self, body: str) -> None:
        submit_handler.handle_record(self.sqs_record(body), self.services)

    def drop(self, key: str, body: bytes) -> dict[str, Any]:
        obj = self.put_input(key, body)
        self.deliver(self.object_created_body(obj))
        return obj

    # the scheduled parts

    def poll(self) -> PollSummary:
        return poll_once(self.services)

    def collect(self) -> int:
        handled = 0
        while True:
            reply = self.sqs.receive_message(QueueUrl=self.collect_queue_url, MaxNumberOfMessages=10)
            messages = reply.get("Messages", [])
            if not messages:
                return handled
            for message in messages:
                collect_handler.handle_record(self.sqs_record(message["Body"]), self.services)
                self.sqs.delete_message(QueueUrl=self.collect_queue_url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1

    def run(self, *, rounds: int = 20, step: float = 60.0) -> None:
        """Lets time pass and the schedule run until nothing is active any more."""
        for _ in range(rounds):
            self.clock.advance(step)
            self.emulator.process()
            self.poll()
            self.collect()
            if not list(self.services.store.due_shards(10**12, limit=1)):
                break
        self.read_notifications()

    # what came out

    def read_notifications(self) -> None:
        for queue, sink in ((self.events_queue_url, None), (self.sns_queue_url, self.sns_messages)):
            while messages := self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
                for message in messages:
                    body = json.loads(message["Body"])
                    if sink is not None:
                        sink.append(body)
                    elif body["detail-type"] == "Batch Job Finished":
                        self.finished_events.append(body)
                    else:
                        self.submitted_events.append(body)
                    self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def report(self, name: str) -> dict[str, Any]:
        return json.loads(self.read(f"outbox/{name}/report.json"))

    def lines(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.read(key).splitlines() if line.strip()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_767_225_600.0)


@pytest.fixture
def emulators(clock: ManualClock, tmp_path: Path) -> Iterator[list[Emulator]]:
    created: list[Emulator] = []
    yield created
    for emu in created:
        emu.close()


def settings_for(collect_queue_url: str, topic_arn: str, secret_id: str, **overrides: Any) -> Settings:
    values = {
        "TABLE_NAME": TABLE,
        "SECRET_ID": secret_id,
        "API_BASE_URL": "http://zerogpu.test",
        "COLLECT_QUEUE_URL": collect_queue_url,
        "TOPIC_ARN": topic_arn,
        "POLL_MIN_INTERVAL_SECONDS": "30",
        "POLL_MAX_INTERVAL_SECONDS": "600",
    } | {key: str(value) for key, value in overrides.items()}
    return Settings.from_environ(values)


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        aws_client.cache_clear()
        yield
    aws_client.cache_clear()


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
        dynamodb = boto3.client("dynamodb", region_name=region)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        create_table(dynamodb)
        collect_queue = sqs.create_queue(QueueName="collect")["QueueUrl"]
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
        settings = settings_for(collect_queue, topic_arn, secret_id, **overrides)

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
        return Pipeline(services, emulator, clock, collect_queue, events_queue, sns_queue, s3, sqs)

    return build


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    return make_pipeline()


def api_calls(emulator: Emulator) -> list[tuple[str, str]]:
    return [(call.method, call.path) for call in emulator.calls]
