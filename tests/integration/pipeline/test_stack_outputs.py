"""`--stack-name`: the commands read the stack's resources from its outputs, through CloudFormation."""

from __future__ import annotations

import argparse
import json

import boto3
import pytest
from moto import mock_aws

from batchdrop_tools import dlq, jobs
from batchdrop_tools.stack_outputs import StackNotFound, output, stack_outputs

TEMPLATE = {
    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
    "Outputs": {"TableName": {"Value": "acme-jobs"}, "IngestQueueUrl": {"Value": "https://sqs.example/ingest"}},
}


def parsed(add_arguments: object, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)  # type: ignore[operator]
    return parser.parse_args(argv)


def test_outputs_are_read_and_a_missing_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("cloudformation").create_stack(StackName="batchdrop-prod", TemplateBody=json.dumps(TEMPLATE))
        outputs = stack_outputs("batchdrop-prod")
        assert output(outputs, "TableName", "batchdrop-prod") == "acme-jobs"
        with pytest.raises(StackNotFound, match="has no output IngestDeadLetterQueueUrl"):
            output(outputs, "IngestDeadLetterQueueUrl", "batchdrop-prod")
        with pytest.raises(StackNotFound, match="no stack nope here"):
            stack_outputs("nope")


def test_jobs_and_dlq_take_a_stack_name_and_say_when_it_is_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("cloudformation").create_stack(StackName="batchdrop-prod", TemplateBody=json.dumps(TEMPLATE))
        boto3.client("dynamodb").create_table(
            TableName="acme-jobs",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        args = parsed(jobs.add_arguments, ["show", "job-x", "--stack-name", "batchdrop-prod"])
        assert jobs.run(args) == 1  # the table was found: the job is not in it
        assert capsys.readouterr().err.strip() == (
            "batchdrop jobs: no job job-x in acme-jobs: check the id (`batchdrop jobs list` shows them)"
        )
        assert jobs.run(parsed(jobs.add_arguments, ["list", "--stack-name", "nope"])) == 2
        assert "no stack nope here" in capsys.readouterr().err
        assert dlq.run(parsed(dlq.add_arguments, ["list", "--stack-name", "batchdrop-prod"])) == 2
        assert "has no output IngestDeadLetterQueueUrl" in capsys.readouterr().err
