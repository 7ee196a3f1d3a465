"""A deployed stack's outputs (TableName, the queue URLs, …), read through CloudFormation: the commands'
`--stack-name`, so an operator names the stack instead of copying its resources' names."""

from __future__ import annotations

from typing import Any

import boto3


class StackNotFound(Exception):
    """The stack does not exist (in this account and region), or has no such output."""


def stack_outputs(stack_name: str, *, endpoint_url: str | None = None, client: Any = None) -> dict[str, str]:
    cloudformation = client or boto3.client("cloudformation", endpoint_url=endpoint_url)
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        raise StackNotFound(
            f"no stack {stack_name} here: check --stack-name, and the region (AWS_REGION) it was deployed to"
        ) from error
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


def output(outputs: dict[str, str], key: str, stack_name: str) -> str:
    if key not in outputs:
        raise StackNotFound(f"stack {stack_name} has no output {key}: is it a batchdrop stack (template.yaml)?")
    return outputs[key]
