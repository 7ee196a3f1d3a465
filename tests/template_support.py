"""template.yaml as CloudFormation receives it, and what its roles allow: for the template's own tests
and for those that check each function's calls against its role."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

from batchdrop_tools.local.template import IntrinsicResolver, find_template, load_template

TEMPLATE_PATH = find_template()
BUCKET = "batchdrop-test"
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
FUNCTIONS = ("SubmitFunction", "PollFunction", "CollectFunction")


class _NoManagedPolicies:
    """The template attaches no managed policies by name, so the transform needs no IAM lookup."""

    def load(self) -> dict[str, str]:
        return {}


def sam_template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@cache
def _transformed() -> dict[str, Any]:
    import os

    from samtranslator.translator.transform import transform

    fragment = sam_template()
    for logical_id, resource in fragment["Resources"].items():
        for key in ("CodeUri", "ContentUri"):
            if key in resource.get("Properties", {}):
                resource["Properties"][key] = f"s3://placeholder/{logical_id}.zip"
    region = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        return transform(fragment, {}, _NoManagedPolicies())  # type: ignore[no-any-return]
    finally:
        if region is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = region


def cloudformation() -> dict[str, Any]:
    """The template as CloudFormation receives it (code locations replaced: the transform wants s3://)."""
    return copy.deepcopy(_transformed())


def resources_of(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def resolver_for(template: dict[str, Any], **parameter_overrides: str) -> IntrinsicResolver:
    """Resolves resource references to recognisable placeholders, the data bucket to BUCKET."""
    names = {}
    for logical_id in template["Resources"]:
        names[logical_id] = f"ref:{logical_id}"
        for attribute in ("Arn", "QueueName", "QueueUrl"):
            names[f"{logical_id}.{attribute}"] = f"arn:test:{logical_id}"
    names |= {"DataBucket": BUCKET, "DataBucket.Arn": BUCKET_ARN}
    return IntrinsicResolver(template, parameter_overrides=parameter_overrides, names=names)


def allow_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role logical id, Allow statement with Action and Resource as resolved lists) for every role."""
    resolver = resolver_for(template)
    for role_id, role in resources_of(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement:  # a statement that only some parameters grant
                    condition, granted, otherwise = statement["Fn::If"]
                    statement = granted if resolver.condition(condition) else otherwise
                    if statement == {"Ref": "AWS::NoValue"}:
                        continue
                if statement["Effect"] != "Allow":
                    continue
                resolved = resolver.resolve(statement)
                yield (
                    role_id,
                    {
                        "Action": _as_list(resolved["Action"]),
                        "Resource": _as_list(resolved["Resource"]),
                    },
                )


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def function_role(template: dict[str, Any], function_id: str) -> str:
    return template["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]


def grants(statement: dict[str, Any], action: str, resource: str) -> bool:
    return any(fnmatchcase(action, pattern) for pattern in statement["Action"]) and any(
        fnmatchcase(resource, pattern) for pattern in statement["Resource"]
    )
