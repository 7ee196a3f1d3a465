"""The pipeline harness: moto (in-process) and the in-process emulator, on one manual clock.

`Pipeline` plays the parts AWS plays in production: it delivers ingest records to the submit logic,
runs the poller, and drains the collect queue into the collect logic, using the same record shapes
Lambda delivers.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import collect_handler
import submit_handler
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from batchdrop.flow.polling import PollSummary, poll_once
from batchdrop.services import Services
from batchdrop.settings import Settings
from batchdrop_tools.emulator import Emulator, ManualClock
from batchdrop_tools.local.template import derive_local_resources, find_template, load_template

BUCKET = "batchdrop-test"
TABLE = "batchdrop-jobs"
API_KEY = "zgpu-test-key-do-not-log"
PROJECT_ID = "0b5d7c1e-0000-4000-8000-000000000001"


class Crash(BaseException):
    """Stands for the Lambda runtime killing the invocation (not an Exception: nothing catches it)."""


def fail_once(target: Any, method: str, error: BaseException, when: Any = None) -> None:
    """Makes `target.method` raise `error` the first time it is called (with arguments that satisfy
    `when`, if given); every other call goes through."""
    original = getattr(target, method)
    pending = [error]

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        if pending and (when is None or when(*args, **kwargs)):
            raise pending.pop()
        return original(*args, **kwargs)

    setattr(target, method, failing_once)


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
    ingest_queue_url: str
    events_queue_url: str
    sns_queue_url: str
    s3: Any
    sqs: Any
    finished_events: list[dict[str, Any]] = field(default_factory=list)
    submitted_events: list[dict[str, Any]] = field(default_factory=list)
    rejected_requests: list[dict[str, Any]] = field(default_factory=list)
    round_events: list[dict[str, Any]] = field(default_factory=list)
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
        try:
            submit_handler.handle_record(self.sqs_record(body), self.services)
        finally:
            self.end_invocation()

    def end_invocation(self) -> None:
        """What an invocation keeps on local disk is gone after it (each Lambda invocation has its own)."""
        self.services.local_shards.close()

    def drop(self, key: str, body: bytes) -> dict[str, Any]:
        obj = self.put_input(key, body)
        self.deliver(self.object_created_body(obj))
        return obj

    # the scheduled parts

    def poll(self) -> PollSummary:
        try:
            return poll_once(self.services)
        finally:
            self.end_invocation()

    def collect(self) -> int:
        """Delivers what is on the collect queue to the collect function."""
        return self._drain(self.collect_queue_url, collect_handler.handle_record)

    def submit_handovers(self) -> int:
        """Delivers the shards the poller handed over to the submit function."""
        return self._drain(self.ingest_queue_url, submit_handler.handle_record)

    def _drain(self, queue_url: str, handle: Any) -> int:
        handled = 0
        while messages := self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                try:
                    handle(self.sqs_record(message["Body"]), self.services)
                finally:
                    self.end_invocation()
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                handled += 1
        return handled

    def step(self, seconds: float = 60.0) -> PollSummary:
        """One tick of the schedule: time passes, the poller runs, the queues are delivered."""
        self.clock.advance(seconds)
        self.emulator.process()
        summary = self.poll()
        self.submit_handovers()
        self.collect()
        return summary

    def run(self, *, rounds: int = 20, step: float = 60.0) -> int:
        """Lets time pass and the schedule run until nothing is active any more; returns the rounds run."""
        done = 0
        while done < rounds:
            done += 1
            self.step(step)
            if self.idle():
                break
        self.read_notifications()
        return done

    def idle(self) -> bool:
        """Nothing left in any partition of the sparse index: no shard to poll, none waiting, no job to finish."""
        store = self.services.store
        return (
            next(store.due_shards(10**12, limit=1), None) is None
            and next(store.waiting_shards(limit=1), None) is None
            and next(store.finishing_jobs(10**12, limit=1), None) is None
        )

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
                    elif body["detail-type"] == "Batch Job Rejected":
                        self.rejected_requests.append(body)
                    elif body["detail-type"] == "Batch Job Round Finished":
                        self.round_events.append(body)
                    else:
                        self.submitted_events.append(body)
                    self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def report(self, name: str) -> dict[str, Any]:
        return json.loads(self.read(f"outbox/{name}/report.json"))

    def lines(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.read(key).splitlines() if line.strip()]


def settings_for(
    collect_queue_url: str, ingest_queue_url: str, topic_arn: str, secret_id: str, **overrides: Any
) -> Settings:
    values = {
        "TABLE_NAME": TABLE,
        "SECRET_ID": secret_id,
        "API_BASE_URL": "http://zerogpu.test",
        "COLLECT_QUEUE_URL": collect_queue_url,
        "INGEST_QUEUE_URL": ingest_queue_url,
        "BUCKET_NAME": BUCKET,
        "TOPIC_ARN": topic_arn,
        "INPUT_PREFIX": "inbox/",
        "OUTPUT_PREFIX": "outbox/",
        "WORK_PREFIX": "work/",
        "POLL_MIN_INTERVAL_SECONDS": "30",
        "POLL_MAX_INTERVAL_SECONDS": "600",
    } | {key: str(value) for key, value in overrides.items()}
    return Settings.from_environ(values)


def api_calls(emulator: Emulator) -> list[tuple[str, str]]:
    return [(call.method, call.path) for call in emulator.calls]
