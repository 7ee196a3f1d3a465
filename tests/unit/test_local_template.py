"""The local stack's resources come from template.yaml; created in moto they route events as AWS would."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchdrop.settings import Settings
from batchdrop_tools.local.template import (
    IntrinsicResolver,
    LocalResources,
    TemplateError,
    derive_local_resources,
    find_template,
    load_template,
)

BUCKET = "batchdrop-local"
REGION = "us-east-1"
EVENTS = find_template().parent / "events"
NAMES = {
    "JobsTable": "batchdrop-local-jobs",
    "ApiSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:batchdrop-local-api-AbCdEf",
    "NotificationTopic": "arn:aws:sns:us-east-1:123456789012:NotificationTopic",
    "CollectQueue": "http://127.0.0.1:4566/123456789012/CollectQueue",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(find_template())


@pytest.fixture(scope="module")
def local(template: dict[str, Any]) -> LocalResources:
    return derive_local_resources(template, bucket_name=BUCKET, names=NAMES)


def test_short_form_tags_load_in_long_form(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(
        "Resources:\n"
        "  A:\n"
        "    Type: X\n"
        "    Properties:\n"
        "      Ref: !Ref B\n"
        "      Sub: !Sub '${B}/x'\n"
        "      Att: !GetAtt B.Arn\n"
        "      If: !If [C, !Join ['', [a, !Select [0, !Split [',', 'b,c']]]], !Ref AWS::NoValue]\n"
    )
    assert load_template(path)["Resources"]["A"]["Properties"] == {
        "Ref": {"Ref": "B"},
        "Sub": {"Fn::Sub": "${B}/x"},
        "Att": {"Fn::GetAtt": ["B", "Arn"]},
        "If": {
            "Fn::If": [
                "C",
                {"Fn::Join": ["", ["a", {"Fn::Select": [0, {"Fn::Split": [",", "b,c"]}]}]]},
                {"Ref": "AWS::NoValue"},
            ]
        },
    }


def test_resolver_covers_sub_join_select_split_and_conditions() -> None:
    template = {
        "Parameters": {"Prefix": {"Default": "inbox/"}, "Mail": {"Default": ""}},
        "Conditions": {
            "HasMail": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Mail"}, ""]}]},
            "Either": {"Fn::Or": [{"Condition": "HasMail"}, {"Fn::And": [{"Fn::Equals": ["a", "a"]}]}]},
        },
        "Resources": {},
    }
    resolver = IntrinsicResolver(template, parameter_overrides={"Mail": "ops@example.com"}, names={"Q.Arn": "arn:q"})
    assert resolver.resolve({"Fn::Sub": "${Prefix}${!Literal}:${AWS::Region}:${Q.Arn}"}) == (
        "inbox/${Literal}:us-east-1:arn:q"
    )
    assert resolver.resolve({"Fn::Sub": ["${X}-y", {"X": {"Ref": "Prefix"}}]}) == "inbox/-y"
    assert resolver.resolve({"Fn::Join": ["-", ["a", {"Fn::Select": [1, {"Fn::Split": ["/", "x/y"]}]}]]}) == "a-y"
    assert resolver.resolve({"Fn::If": ["HasMail", "yes", "no"]}) == "yes"
    assert resolver.condition("Either") is True
    with pytest.raises(TemplateError, match="unknown template parameters: Nope"):
        IntrinsicResolver(template, parameter_overrides={"Nope": "1"})


def test_table_definition_comes_from_the_template(local: LocalResources) -> None:
    kwargs = local.table.create_table_kwargs
    assert kwargs["TableName"] == "batchdrop-local-jobs"
    assert kwargs["BillingMode"] == "PAY_PER_REQUEST"
    assert kwargs["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    active, by_day = kwargs["GlobalSecondaryIndexes"]
    assert active["IndexName"] == "ActiveShards"
    assert [key["AttributeName"] for key in active["KeySchema"]] == ["active_pk", "next_poll_at"]
    assert by_day["IndexName"] == "JobsByDay"
    assert [key["AttributeName"] for key in by_day["KeySchema"]] == ["listed_day", "received_at"]
    assert local.table.ttl_attribute == "expires_at"
    assert (local.bucket.name, local.bucket.versioning, local.bucket.eventbridge) == (BUCKET, True, True)


def test_queues_and_their_redrive(local: LocalResources) -> None:
    redrive = {q.logical_id: (q.dead_letter_queue, q.max_receive_count) for q in local.queues.values()}
    assert redrive == {
        "IngestQueue": ("IngestDeadLetterQueue", 5),
        "IngestDeadLetterQueue": (None, None),
        "CollectQueue": ("CollectDeadLetterQueue", 5),
        "CollectDeadLetterQueue": (None, None),
        "PollScheduleDeadLetterQueue": (None, None),
    }
    assert local.queues["IngestQueue"].attributes["VisibilityTimeout"] == "5400"
    assert local.queues["CollectDeadLetterQueue"].attributes["MessageRetentionPeriod"] == "1209600"


def test_rules_with_parameters_and_bucket_resolved(template: dict[str, Any]) -> None:
    local = derive_local_resources(
        template, bucket_name="b", parameter_overrides={"InputPrefix": "drop/", "EventBusName": "jobs"}
    )
    created = local.rules["ObjectCreatedRule"]
    assert created.event_bus_name == "default"
    assert created.event_pattern["detail"] == {
        "bucket": {"name": ["b"]},
        "object": {"key": [{"wildcard": "drop/*"}]},
    }
    assert (created.target_queue, created.dead_letter_queue) == ("IngestQueue", "IngestDeadLetterQueue")
    submit = local.rules["SubmitJobRule"]
    assert submit.event_bus_name == "jobs"
    assert submit.event_pattern == {"detail-type": ["Submit Batch Job", "Retry Batch Job"]}
    assert submit.target_queue == "IngestQueue"


def test_functions_environment_handler_and_triggers(local: LocalResources) -> None:
    settings = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert set(local.functions) == {"SubmitFunction", "PollFunction", "CollectFunction"}
    for function in local.functions.values():
        assert settings - {"COLLECT_QUEUE_URL", "INGEST_QUEUE_URL"} <= set(function.environment)
        assert function.environment["TABLE_NAME"] == "batchdrop-local-jobs"
        assert function.environment["SECRET_ID"] == NAMES["ApiSecret"]
        assert function.environment["INPUT_PREFIX"] == "inbox/"
        assert function.environment["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
    submit, poll, collect = (local.functions[f"{name}Function"] for name in ("Submit", "Poll", "Collect"))
    assert (submit.code_uri, submit.handler, submit.timeout) == (
        "functions/submit/",
        "submit_handler.lambda_handler",
        900,
    )
    assert (submit.sqs_queue, submit.batch_size, collect.sqs_queue, collect.batch_size) == (
        "IngestQueue",
        1,
        "CollectQueue",
        1,
    )
    assert poll.environment["COLLECT_QUEUE_URL"] == NAMES["CollectQueue"]
    assert poll.schedule_input is not None and "<aws.scheduler.scheduled-time>" in poll.schedule_input
    assert (poll.handler, poll.timeout, poll.schedule_expression) == (
        "poll_handler.lambda_handler",
        50,
        "rate(1 minute)",
    )
    assert local.secrets == {"ApiSecret": '{"api_key": "", "project_id": ""}'}
    assert set(local.topics) == {"NotificationTopic", "AlarmTopic"}


def test_unmapped_resources_leave_the_value_open_and_an_existing_secret_is_used(
    template: dict[str, Any],
) -> None:
    existing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-AbCdEf"
    local = derive_local_resources(template, bucket_name=BUCKET, parameter_overrides={"ExistingApiSecretArn": existing})
    poll = local.functions["PollFunction"]
    assert poll.environment["COLLECT_QUEUE_URL"] is None
    assert poll.environment["SECRET_ID"] == existing
    assert local.secrets == {}
    assert local.table.create_table_kwargs["TableName"] == "JobsTable"


@pytest.fixture
def moto_stack(local: LocalResources) -> Iterator[dict[str, str]]:
    """The derived resources created in moto, as the local stack does; yields queue URLs by logical id."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        urls: dict[str, str] = {}
        arns: dict[str, str] = {}
        # Dead-letter queues first: a redrive policy needs its target's ARN.
        for queue in sorted(local.queues.values(), key=lambda q: q.dead_letter_queue is not None):
            attributes = dict(queue.attributes)
            if queue.dead_letter_queue:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": arns[queue.dead_letter_queue],
                        "maxReceiveCount": queue.max_receive_count,
                    }
                )
            urls[queue.logical_id] = sqs.create_queue(QueueName=queue.logical_id, Attributes=attributes)["QueueUrl"]
            arns[queue.logical_id] = sqs.get_queue_attributes(
                QueueUrl=urls[queue.logical_id], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=local.bucket.name)
        s3.put_bucket_versioning(Bucket=local.bucket.name, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_notification_configuration(
            Bucket=local.bucket.name, NotificationConfiguration={"EventBridgeConfiguration": {}}
        )
        events = boto3.client("events", region_name=REGION)
        for rule in local.rules.values():
            events.put_rule(
                Name=rule.logical_id,
                EventBusName=rule.event_bus_name,
                EventPattern=json.dumps(rule.event_pattern),
            )
            target: dict[str, Any] = {"Id": rule.target_queue, "Arn": arns[rule.target_queue]}
            if rule.dead_letter_queue:
                target["DeadLetterConfig"] = {"Arn": arns[rule.dead_letter_queue]}
            events.put_targets(Rule=rule.logical_id, EventBusName=rule.event_bus_name, Targets=[target])
        yield urls


def drain(url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    bodies = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_every_file_under_the_input_prefix_and_nothing_else_reaches_the_ingest_queue(
    moto_stack: dict[str, str],
) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    for key in (
        "inbox/x.jsonl",
        "inbox/deep/my file+ü.jsonl",
        "inbox/y.jsonl.gz",
        "inbox/readme.txt",
        "inbox/x.jsonl.bak",
        "outbox/x/report.json",
        "outbox/x/output.jsonl",
        "work/job-1/shard-00000.jsonl",
    ):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n")
    delivered = drain(moto_stack["IngestQueue"])
    assert {event["detail-type"] for event in delivered} == {"Object Created"}
    # moto, like EventBridge, carries the raw key (no URL encoding).
    assert sorted(event["detail"]["object"]["key"] for event in delivered) == [
        "inbox/deep/my file+ü.jsonl",
        "inbox/readme.txt",  # answered with a rejected report by the submit function
        "inbox/x.jsonl",
        "inbox/x.jsonl.bak",
        "inbox/y.jsonl.gz",
    ]
    assert {event["detail"]["bucket"]["name"] for event in delivered} == {BUCKET}
    assert drain(moto_stack["IngestDeadLetterQueue"]) == []


def test_submit_batch_job_events_reach_the_ingest_queue(moto_stack: dict[str, str]) -> None:
    detail = {"bucket": BUCKET, "key": "inbox/x.jsonl"}
    boto3.client("events", region_name=REGION).put_events(
        Entries=[
            {"Source": "com.example", "DetailType": "Submit Batch Job", "Detail": json.dumps(detail)},
            {"Source": "com.example", "DetailType": "Something Else", "Detail": json.dumps(detail)},
        ]
    )
    (delivered,) = drain(moto_stack["IngestQueue"])
    assert (delivered["detail-type"], delivered["detail"]) == ("Submit Batch Job", detail)


@pytest.mark.parametrize("name", ["sqs_object_created.json", "sqs_submit_batch_job.json", "sqs_collect.json"])
def test_sample_sqs_events_are_consistent(name: str) -> None:
    (record,) = json.loads((EVENTS / name).read_text(encoding="utf-8"))["Records"]
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"


def test_sample_object_created_event_matches_the_derived_rule(moto_stack: dict[str, str]) -> None:
    (record,) = json.loads((EVENTS / "sqs_object_created.json").read_text(encoding="utf-8"))["Records"]
    sample = json.loads(record["body"])
    assert sample["detail"]["object"]["key"] == "inbox/my file+ü.jsonl"
    boto3.client("events", region_name=REGION).put_events(
        Entries=[
            {
                "Source": sample["source"],
                "DetailType": sample["detail-type"],
                "Detail": json.dumps(sample["detail"]),
            }
        ]
    )
    (delivered,) = drain(moto_stack["IngestQueue"])
    assert delivered["detail"] == sample["detail"]
