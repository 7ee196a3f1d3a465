"""Read template.yaml and describe what the local stack must create, so the two cannot drift apart.

Only the intrinsics this template uses are resolved: Ref, Fn::Sub, Fn::If (with Fn::Equals, Fn::Not,
Fn::And, Fn::Or and Condition), Fn::GetAtt, Fn::Join, Fn::Select and Fn::Split. Resource references
resolve through `names` (logical id -> what Ref returns, "Logical.Attr" -> what GetAtt returns), which
the local stack fills with the physical names, ARNs and URLs it chose.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PSEUDO_PARAMETERS: Mapping[str, str] = {
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackName": "batchdrop-local",
    "AWS::URLSuffix": "amazonaws.com",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class TemplateError(Exception):
    """The template is missing, malformed, or uses something this resolver does not cover."""


class UnresolvedReference(TemplateError):
    """A value names a resource that `names` does not map (yet)."""


class _CloudFormationLoader(yaml.SafeLoader):
    """SafeLoader that reads `!Ref x` as {"Ref": "x"} and `!Sub s` as {"Fn::Sub": "s"}."""


def _construct_intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    key = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {key: value}


_CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    """The template as plain dicts, short-form tags in their long form."""
    with path.open(encoding="utf-8") as stream:
        document = yaml.load(stream, Loader=_CloudFormationLoader)
    if not isinstance(document, dict) or "Resources" not in document:
        raise TemplateError(f"{path} is not a CloudFormation template")
    return document


def find_template() -> Path:
    """The repository's template.yaml (this package is installed editable from the repository)."""
    path = Path(__file__).resolve().parents[3] / "template.yaml"
    if not path.is_file():
        raise TemplateError(
            f"template.yaml not found at {path}; the local stack needs a checkout of the batchdrop "
            "repository (pip install -e .)"
        )
    return path


class IntrinsicResolver:
    """Evaluates intrinsic functions against parameter values, conditions and known resource names."""

    def __init__(
        self,
        template: Mapping[str, Any],
        *,
        parameter_overrides: Mapping[str, str] = {},
        names: Mapping[str, str] = {},
    ) -> None:
        declared = template.get("Parameters", {})
        unknown = set(parameter_overrides) - set(declared)
        if unknown:
            raise TemplateError(f"unknown template parameters: {', '.join(sorted(unknown))}")
        self.parameters: dict[str, str] = {
            name: str(parameter_overrides.get(name, spec.get("Default", ""))) for name, spec in declared.items()
        }
        self._conditions: Mapping[str, Any] = template.get("Conditions", {})
        self._names: dict[str, str] = {**PSEUDO_PARAMETERS, **names}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Fn::Sub":
                return self._sub(argument)
            if key == "Fn::If":
                condition, if_true, if_false = argument
                return self.resolve(if_true if self.condition(condition) else if_false)
            if key == "Fn::GetAtt":
                return self._lookup(".".join(argument))
            if key == "Fn::Join":
                separator, items = argument
                return separator.join(str(item) for item in self.resolve(items))
            if key == "Fn::Select":
                index, items = argument
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                separator, text = argument
                return str(self.resolve(text)).split(separator)
            if key.startswith("Fn::"):
                raise TemplateError(f"unsupported intrinsic function {key}")
        return {key: self.resolve(item) for key, item in value.items()}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            raise TemplateError(f"unknown condition {name}")
        return self._evaluate(self._conditions[name])

    def _evaluate(self, expression: Any) -> bool:
        ((key, argument),) = expression.items()
        if key == "Condition":
            return self.condition(argument)
        if key == "Fn::Equals":
            left, right = (str(self.resolve(item)) for item in argument)
            return left == right
        if key == "Fn::Not":
            return not self._evaluate(argument[0])
        if key == "Fn::And":
            return all(self._evaluate(item) for item in argument)
        if key == "Fn::Or":
            return any(self._evaluate(item) for item in argument)
        raise TemplateError(f"unsupported condition function {key}")

    def _ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        return self._lookup(name)

    def _lookup(self, name: str) -> str:
        if name not in self._names:
            raise UnresolvedReference(f"no local name for {name}")
        return self._names[name]

    def _sub(self, argument: str | list[Any]) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        resolved = {name: str(self.resolve(item)) for name, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in resolved:
                return resolved[name]
            return self._lookup(name) if "." in name else self._ref(name)

        return _SUB_VARIABLE.sub(replace, text)


@dataclass(frozen=True)
class TableSpec:
    create_table_kwargs: dict[str, Any]
    ttl_attribute: str | None


@dataclass(frozen=True)
class BucketSpec:
    name: str
    versioning: bool
    eventbridge: bool


@dataclass(frozen=True)
class QueueSpec:
    logical_id: str
    attributes: dict[str, str]
    """SQS attributes as create_queue takes them (the redrive policy apart: it needs the DLQ's ARN)."""
    dead_letter_queue: str | None
    max_receive_count: int | None


@dataclass(frozen=True)
class RuleSpec:
    logical_id: str
    event_bus_name: str
    event_pattern: dict[str, Any]
    target_queue: str
    dead_letter_queue: str | None


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_uri: str
    handler: str
    """module.function inside code_uri, as Lambda reads it."""
    timeout: int
    environment: dict[str, str | None]
    """Every variable the function gets; None where the value names a resource `names` does not map."""
    sqs_queue: str | None
    batch_size: int | None
    schedule_expression: str | None
    schedule_input: str | None = None
    """The schedule's `Input` template, with EventBridge Scheduler's `<aws.scheduler.*>` placeholders."""


@dataclass(frozen=True)
class LocalResources:
    table: TableSpec
    bucket: BucketSpec
    queues: dict[str, QueueSpec]
    rules: dict[str, RuleSpec]
    topics: tuple[str, ...]
    secrets: dict[str, str]
    """Logical id -> initial SecretString of each secret the stack creates."""
    functions: dict[str, FunctionSpec]


_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
)


def derive_local_resources(
    template: Mapping[str, Any],
    *,
    bucket_name: str,
    parameter_overrides: Mapping[str, str] = {},
    names: Mapping[str, str] = {},
) -> LocalResources:
    """What template.yaml creates, with parameters and the local stack's names filled in."""
    resolver = IntrinsicResolver(
        template,
        parameter_overrides=parameter_overrides,
        names={"DataBucket": bucket_name, **names},
    )
    resources = {
        logical_id: resource
        for logical_id, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }

    def of_type(resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource.get("Properties", {})
            for logical_id, resource in resources.items()
            if resource["Type"] == resource_type
        }

    return LocalResources(
        table=_table(resolver, of_type("AWS::DynamoDB::Table"), names),
        bucket=_bucket(resolver, of_type("AWS::S3::Bucket"), bucket_name),
        queues={
            logical_id: _queue(resolver, logical_id, properties)
            for logical_id, properties in of_type("AWS::SQS::Queue").items()
        },
        rules={
            logical_id: _rule(resolver, logical_id, properties)
            for logical_id, properties in of_type("AWS::Events::Rule").items()
        },
        topics=tuple(of_type("AWS::SNS::Topic")),
        secrets={
            logical_id: str(resolver.resolve(properties.get("SecretString", "")))
            for logical_id, properties in of_type("AWS::SecretsManager::Secret").items()
        },
        functions={
            logical_id: _function(resolver, template.get("Globals", {}).get("Function", {}), logical_id, props)
            for logical_id, props in of_type("AWS::Serverless::Function").items()
        },
    )


def _single(found: dict[str, dict[str, Any]], what: str) -> tuple[str, dict[str, Any]]:
    if len(found) != 1:
        raise TemplateError(f"expected one {what}, found {len(found)}")
    return next(iter(found.items()))


def _table(resolver: IntrinsicResolver, tables: dict[str, dict[str, Any]], names: Mapping[str, str]) -> TableSpec:
    logical_id, properties = _single(tables, "DynamoDB table")
    resolved = resolver.resolve(properties)
    kwargs = {
        "TableName": names.get(logical_id, logical_id),
        **{
            key: resolved[key]
            for key in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")
            if key in resolved
        },
    }
    ttl = resolved.get("TimeToLiveSpecification", {})
    return TableSpec(create_table_kwargs=kwargs, ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None)


def _bucket(resolver: IntrinsicResolver, buckets: dict[str, dict[str, Any]], bucket_name: str) -> BucketSpec:
    _, properties = _single(buckets, "S3 bucket")
    resolved = resolver.resolve(properties)
    eventbridge = resolved.get("NotificationConfiguration", {}).get("EventBridgeConfiguration", {})
    return BucketSpec(
        name=bucket_name,
        versioning=resolved.get("VersioningConfiguration", {}).get("Status") == "Enabled",
        eventbridge=eventbridge.get("EventBridgeEnabled") is True,
    )


def _queue(resolver: IntrinsicResolver, logical_id: str, properties: dict[str, Any]) -> QueueSpec:
    redrive = properties.get("RedrivePolicy")
    return QueueSpec(
        logical_id=logical_id,
        attributes={key: str(resolver.resolve(properties[key])) for key in _QUEUE_ATTRIBUTES if key in properties},
        dead_letter_queue=_arn_logical_id(redrive["deadLetterTargetArn"]) if redrive else None,
        max_receive_count=int(resolver.resolve(redrive["maxReceiveCount"])) if redrive else None,
    )


def _rule(resolver: IntrinsicResolver, logical_id: str, properties: dict[str, Any]) -> RuleSpec:
    (target,) = properties["Targets"]
    dead_letter = target.get("DeadLetterConfig")
    return RuleSpec(
        logical_id=logical_id,
        event_bus_name=str(resolver.resolve(properties.get("EventBusName", "default"))),
        event_pattern=resolver.resolve(properties["EventPattern"]),
        target_queue=_arn_logical_id(target["Arn"]),
        dead_letter_queue=_arn_logical_id(dead_letter["Arn"]) if dead_letter else None,
    )


def _function(
    resolver: IntrinsicResolver, globals_: dict[str, Any], logical_id: str, properties: dict[str, Any]
) -> FunctionSpec:
    variables = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **properties.get("Environment", {}).get("Variables", {}),
    }
    sqs = [event["Properties"] for event in properties.get("Events", {}).values() if event["Type"] == "SQS"]
    schedules = [
        event["Properties"] for event in properties.get("Events", {}).values() if event["Type"] == "ScheduleV2"
    ]
    return FunctionSpec(
        logical_id=logical_id,
        code_uri=properties["CodeUri"],
        handler=properties["Handler"],
        timeout=int(resolver.resolve(properties.get("Timeout", globals_.get("Timeout", 3)))),
        environment={name: _resolve_or_none(resolver, value) for name, value in variables.items()},
        sqs_queue=_arn_logical_id(sqs[0]["Queue"]) if sqs else None,
        batch_size=int(resolver.resolve(sqs[0].get("BatchSize", 10))) if sqs else None,
        schedule_expression=str(resolver.resolve(schedules[0]["ScheduleExpression"])) if schedules else None,
        schedule_input=str(resolver.resolve(schedules[0]["Input"])) if schedules and "Input" in schedules[0] else None,
    )


def _resolve_or_none(resolver: IntrinsicResolver, value: Any) -> str | None:
    try:
        return str(resolver.resolve(value))
    except UnresolvedReference:
        return None


def _arn_logical_id(value: Any) -> str:
    """The logical id in `!GetAtt Logical.Arn`, the only way this template points at its queues."""
    if isinstance(value, dict) and isinstance(value.get("Fn::GetAtt"), list) and value["Fn::GetAtt"][1] == "Arn":
        return str(value["Fn::GetAtt"][0])
    raise TemplateError(f"expected !GetAtt <queue>.Arn, found {value!r}")
