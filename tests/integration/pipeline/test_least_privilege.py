"""Every AWS call each function makes is one its role in template.yaml allows: the pipeline runs through
its paths (a job that needs a second round, a rejected file, a cancelled job, the results table) with
each call recorded under the function that made it, and each is checked against that function's role
as CloudFormation receives it. A call the template does not grant fails in AWS only, where a best-effort
path would hide it (the poller's batched job reads did, with BatchGetItem missing from its role; so
did collect's creation of a re-drive round's shards, with PutItem missing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import collect_handler
import pipeline_harness
import pytest
import submit_handler
from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl
from template_support import BUCKET_ARN, allow_statements, cloudformation, function_role

TABLE_ARN = "arn:test:JobsTable"
QUEUE_ARNS = {"collect": "arn:test:CollectQueue", "ingest": "arn:test:IngestQueue"}


class Calls:
    """The AWS calls made while a function runs, by function (the harness runs one at a time)."""

    def __init__(self) -> None:
        self.function: str | None = None
        self.made: list[tuple[str, str, str, dict[str, Any]]] = []

    def hook(self, client: Any) -> None:
        service = client.meta.service_model.service_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            if self.function is not None:
                self.made.append((self.function, service, model.name, dict(params)))

        client.meta.events.register("provide-client-params", record)

    def wrap(self, function: str, target: Any) -> Any:
        def as_function(*args: Any, **kwargs: Any) -> Any:
            outer, self.function = self.function, function
            try:
                return target(*args, **kwargs)
            finally:
                self.function = outer

        return as_function


def _object(bucket: str, key: str) -> str:
    assert bucket == BUCKET, f"a call outside the stack's bucket: {bucket}"
    return f"{BUCKET_ARN}/{key}"


def _copy_source(params: dict[str, Any]) -> tuple[str, str]:
    source = params["CopySource"]
    if isinstance(source, str):
        bucket, _, key = source.partition("/")
        key, _, version = key.partition("?versionId=")
        return (_object(bucket, key), "s3:GetObjectVersion" if version else "s3:GetObject")
    versioned = "s3:GetObjectVersion" if source.get("VersionId") else "s3:GetObject"
    return (_object(source["Bucket"], source["Key"]), versioned)


def permissions(service: str, operation: str, params: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The IAM (action, resource) pairs a call needs."""
    if service == "dynamodb":
        if operation in ("TransactWriteItems",):
            needed = {
                "Update": "UpdateItem",
                "Put": "PutItem",
                "Delete": "DeleteItem",
                "ConditionCheck": "ConditionCheckItem",
            }
            for item in params["TransactItems"]:
                for kind, action in needed.items():
                    if kind in item:
                        yield (f"dynamodb:{action}", TABLE_ARN)
            return
        index = params.get("IndexName")
        yield (f"dynamodb:{operation}", f"{TABLE_ARN}/index/{index}" if index else TABLE_ARN)
        return
    if service == "s3":
        versioned = bool(params.get("VersionId"))
        if operation in ("GetObject", "HeadObject"):
            action = "s3:GetObjectVersion" if versioned else "s3:GetObject"
            yield (action, _object(params["Bucket"], params["Key"]))
        elif operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
            yield ("s3:PutObject", _object(params["Bucket"], params["Key"]))
        elif operation in ("UploadPartCopy", "CopyObject"):
            yield ("s3:PutObject", _object(params["Bucket"], params["Key"]))
            source, action = _copy_source(params)
            yield (action, source)
        elif operation == "AbortMultipartUpload":
            yield ("s3:AbortMultipartUpload", _object(params["Bucket"], params["Key"]))
        elif operation == "DeleteObject":
            action = "s3:DeleteObjectVersion" if versioned else "s3:DeleteObject"
            yield (action, _object(params["Bucket"], params["Key"]))
        elif operation == "DeleteObjects":
            for item in params["Delete"]["Objects"]:
                action = "s3:DeleteObjectVersion" if item.get("VersionId") else "s3:DeleteObject"
                yield (action, _object(params["Bucket"], item["Key"]))
        elif operation in ("ListObjectsV2", "ListObjectVersions"):
            yield ("s3:ListBucket" if operation == "ListObjectsV2" else "s3:ListBucketVersions", BUCKET_ARN)
        else:
            pytest.fail(f"no IAM mapping in this test for s3:{operation}: add it")
        return
    if service == "sqs":
        queue = params["QueueUrl"].rsplit("/", 1)[-1]
        action = {"SendMessageBatch": "SendMessage"}.get(operation, operation)
        yield (f"sqs:{action}", QUEUE_ARNS.get(queue, f"arn:unknown:{queue}"))
        return
    if service == "sns":
        yield (f"sns:{operation}", "ref:NotificationTopic")
        return
    if service == "events":
        yield (f"events:{operation}", "arn:aws:events:us-east-1:123456789012:event-bus/default")
        return
    pytest.fail(f"no IAM mapping in this test for {service}:{operation}: add it")


@pytest.fixture
def recorded(make_pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Pipeline, Calls]:
    from batchdrop.runtime import aws_client

    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=40, DELETE_PROVIDER_FILES="true")
    calls = Calls()
    services = pipeline.services
    for client in (
        services.s3,
        services.sqs,
        services.store._db,
        services.notifier._events,
        services.notifier._sns,
        aws_client("dynamodb"),
    ):
        calls.hook(client)
    monkeypatch.setattr(submit_handler, "handle_record", calls.wrap("SubmitFunction", submit_handler.handle_record))
    monkeypatch.setattr(collect_handler, "handle_record", calls.wrap("CollectFunction", collect_handler.handle_record))
    monkeypatch.setattr(pipeline_harness, "poll_once", calls.wrap("PollFunction", pipeline_harness.poll_once))
    return pipeline, calls


def test_every_call_of_each_function_is_granted_by_its_role(recorded: tuple[Pipeline, Calls]) -> None:
    pipeline, calls = recorded
    # Given a pipeline whose functions' calls are recorded, and an API that rate-limits some lines once
    # and refuses one for good
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", rate=0.3, seed=5, times_per_line=1)
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"h-7"})

    # When a job of three batches needs a second round, a file is rejected, another is cancelled
    pipeline.drop("inbox/heal.jsonl", jsonl([chat_line(f"h-{i}") for i in range(100)]))
    pipeline.drop("inbox/bad.jsonl", b'{"custom_id": "x"}\nnot json\n')
    pipeline.drop("inbox/cancel.jsonl", jsonl([chat_line(f"c-{i}") for i in range(3)]))
    (cancel,) = [job for job in pipeline.services.store.recent_jobs(limit=5) if job.input.key == "inbox/cancel.jsonl"]
    pipeline.step()
    pipeline.services.store.request_cancel(cancel.job_id)
    pipeline.run(rounds=30)
    # and the permanent failure is retried by an event, another service's way
    (heal,) = [job for job in pipeline.services.store.recent_jobs(limit=5) if job.input.key == "inbox/heal.jsonl"]
    detail = {"job_id": heal.job_id, "codes": ["invalid_request_error"]}
    pipeline.deliver(json.dumps({"detail-type": "Retry Batch Job", "source": "other.service", "detail": detail}))
    pipeline.run(rounds=30)
    assert pipeline.report("heal")["outcome"] == "partial" and len(pipeline.report("heal")["rounds"]) == 3
    # and once more after the work prefix expired and the fault was fixed (cut from the outbox files)
    listing = pipeline.s3.list_object_versions(Bucket=BUCKET, Prefix="work/")
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        pipeline.s3.delete_object(Bucket=BUCKET, Key=entry["Key"], VersionId=entry["VersionId"])
    pipeline.emulator.faults.clear()
    pipeline.deliver(json.dumps({"detail-type": "Retry Batch Job", "source": "other.service", "detail": detail}))
    pipeline.run(rounds=30)

    # Then the paths ran (so the check below has calls to look at)
    assert pipeline.report("heal")["outcome"] == "succeeded" and len(pipeline.report("heal")["rounds"]) == 4
    assert pipeline.report("bad")["outcome"] == "rejected"
    assert pipeline.report("cancel")["outcome"] == "cancelled"
    functions = {function for function, *_ in calls.made}
    outbox_reads = {
        (function, params["Key"])
        for function, service, operation, params in calls.made
        if (service, operation) == ("s3", "GetObject") and params["Key"].startswith("outbox/heal/")
    }
    assert ("CollectFunction", "outbox/heal/output.jsonl") in outbox_reads, outbox_reads
    assert functions == {"SubmitFunction", "PollFunction", "CollectFunction"}

    # and every call is allowed by the role of the function that made it
    template = cloudformation()
    statements = list(allow_statements(template))
    refused: set[tuple[str, str, str]] = set()
    for function, service, operation, params in calls.made:
        role = function_role(template, function)
        for action, resource in permissions(service, operation, params):
            if not any(
                role_id == role
                and any(fnmatchcase(action, pattern) for pattern in statement["Action"])
                and any(fnmatchcase(resource, pattern) for pattern in statement["Resource"])
                for role_id, statement in statements
            ):
                refused.add((function, action, resource))
    assert sorted(refused) == []
