"""The real Lambda handlers, decorators and all, fed the events Lambda delivers (moto + emulator socket)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import collect_handler
import poll_handler
import pytest
import submit_handler
from pipeline_harness import Pipeline, chat_line, jsonl
from testsupport import load_event

from batchdrop_tools.emulator.server import EmulatorServer


class Context:
    function_name = "batchdrop-test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:batchdrop-test"
    memory_limit_in_mb = 1024
    log_group_name = "/aws/lambda/batchdrop-test"
    log_stream_name = "test"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 600_000


@pytest.fixture
def deployed(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """The pipeline's resources, with the functions' environment pointing at them and the emulator socket."""
    with EmulatorServer(pipeline.emulator, "127.0.0.1", 0) as server:
        settings = pipeline.services.settings
        environment = {name: str(value) for name, value in settings.model_dump(by_alias=True).items()} | {
            "API_BASE_URL": server.url,
            "POLL_MIN_INTERVAL_SECONDS": "0",
        }
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        yield pipeline


def sqs_event(*bodies: str) -> dict[str, Any]:
    template = load_event("sqs_object_created.json")["Records"][0]
    return {"Records": [template | {"messageId": str(uuid.uuid4()), "body": body} for body in bodies]}


def test_submit_reports_only_the_poison_record_as_failed_and_runs_duplicates_once(deployed: Pipeline) -> None:
    obj = deployed.put_input("inbox/handlers.jsonl", jsonl([chat_line("h-1"), chat_line("h-2")]))
    body = deployed.object_created_body(obj)
    event = sqs_event(body, "this is not an event", body)

    reply = submit_handler.lambda_handler(event, Context())

    poison = event["Records"][1]["messageId"]
    assert reply == {"batchItemFailures": [{"itemIdentifier": poison}]}
    assert deployed.emulator.count_calls("POST", "/v1/batches") == 1


def test_poll_then_collect_handlers_finish_the_job(deployed: Pipeline) -> None:
    obj = deployed.put_input("inbox/scheduled.jsonl", jsonl([chat_line("s-1")]))
    submit_handler.lambda_handler(sqs_event(deployed.object_created_body(obj)), Context())
    deployed.emulator.process()
    deployed.emulator.process()

    summary = poll_handler.lambda_handler(load_event("scheduled_poll.json"), Context())
    messages = deployed.sqs.receive_message(QueueUrl=deployed.collect_queue_url, MaxNumberOfMessages=10)["Messages"]
    reply = collect_handler.lambda_handler(sqs_event(*(message["Body"] for message in messages)), Context())

    assert summary["ended"] == 1
    assert reply == {"batchItemFailures": []}
    assert json.loads(deployed.read("outbox/scheduled/report.json"))["outcome"] == "succeeded"
