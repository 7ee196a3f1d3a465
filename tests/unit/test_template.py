"""template.yaml lints clean, and what CloudFormation receives (after the SAM transform) keeps the
reliability and least-privilege properties: failure sinks everywhere, scoped IAM, a hardened bucket."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

import pytest
import template_support
from cfnlint.api import lint_file
from template_support import (
    BUCKET,
    BUCKET_ARN,
    FUNCTIONS,
    TEMPLATE_PATH,
    allow_statements,
    function_role,
    grants,
    resolver_for,
    resources_of,
)

from batchdrop.observability import Metric
from batchdrop.settings import SETTINGS_OF, Settings

S3_WRITE_ACTIONS = (
    "s3:PutObject",
    "s3:PutObjectAcl",
    "s3:PutObjectTagging",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:AbortMultipartUpload",
    "s3:RestoreObject",
)
# Services whose actions take no resource-level permissions, so "*" is the only possible resource.
WILDCARD_RESOURCE_ACTIONS = ("xray:*", "cloudwatch:PutMetricData", "logs:*")


@pytest.fixture(scope="module")
def sam_template() -> dict[str, Any]:
    return template_support.sam_template()


@pytest.fixture(scope="module")
def cfn() -> dict[str, Any]:
    pytest.importorskip("samtranslator", reason="aws-sam-translator (a dev dependency) is not installed")
    return template_support.cloudformation()


def test_cfn_lint_is_clean() -> None:
    assert [str(match) for match in lint_file(TEMPLATE_PATH)] == []


def test_each_function_has_its_own_role_without_managed_policies(cfn: dict[str, Any]) -> None:
    assert set(resources_of(cfn, "AWS::Lambda::Function")) == set(FUNCTIONS)
    roles = {function_role(cfn, function_id) for function_id in FUNCTIONS}
    assert len(roles) == len(FUNCTIONS)
    for role_id in roles:
        assert not cfn["Resources"][role_id]["Properties"].get("ManagedPolicyArns")


def test_wildcard_resources_only_where_the_service_has_no_resource_level_permissions(
    cfn: dict[str, Any],
) -> None:
    for role_id, statement in allow_statements(cfn):
        if "*" in statement["Resource"]:
            assert all(
                any(fnmatchcase(action, allowed) for allowed in WILDCARD_RESOURCE_ACTIONS)
                for action in statement["Action"]
            ), (role_id, statement)


def test_nothing_can_write_under_the_input_prefix(cfn: dict[str, Any]) -> None:
    input_object = f"{BUCKET_ARN}/inbox/any/file.jsonl"
    statements = list(allow_statements(cfn))
    # The check below is only meaningful if prefixes resolve: submit must be able to read the input.
    submit_role = function_role(cfn, "SubmitFunction")
    assert any(role == submit_role and grants(s, "s3:GetObject", input_object) for role, s in statements)
    for role_id, statement in statements:
        for action in S3_WRITE_ACTIONS:
            assert not grants(statement, action, input_object), (role_id, action, statement)


@pytest.mark.parametrize(
    ("function_id", "action", "key", "allowed"),
    [
        ("SubmitFunction", "s3:PutObject", "work/j/0.jsonl", True),
        ("SubmitFunction", "s3:PutObject", "outbox/x/report.json", True),
        # a rejected re-upload removes the previous version's results
        ("SubmitFunction", "s3:DeleteObject", "outbox/x/output.jsonl", True),
        ("SubmitFunction", "s3:DeleteObject", "work/j/0.jsonl", False),
        # A Submit Batch Job event may name any key of the bucket; the code refuses output and work keys.
        ("SubmitFunction", "s3:GetObject", "exports/2026/x.jsonl", True),
        ("SubmitFunction", "s3:PutObject", "exports/2026/x.jsonl", False),
        ("SubmitFunction", "s3:PutObject", "inbox/x.jsonl", False),
        ("PollFunction", "s3:GetObject", "work/j/0.jsonl", False),  # it hands held shards to submit
        ("PollFunction", "s3:GetObject", "inbox/x.jsonl", False),
        ("PollFunction", "s3:PutObject", "outbox/x/output.jsonl", False),
        ("CollectFunction", "s3:PutObject", "outbox/x/output.jsonl", True),
        ("CollectFunction", "s3:GetObject", "inbox/x.jsonl", True),  # rebuilds an expired work copy
        ("CollectFunction", "s3:PutObject", "inbox/x.jsonl", False),
        ("CollectFunction", "s3:DeleteObject", "outbox/x/results.csv", True),  # a stale one, only
        ("CollectFunction", "s3:DeleteObject", "outbox/x/output.jsonl", False),
    ],
)
def test_s3_access_is_scoped_by_prefix(
    cfn: dict[str, Any], function_id: str, action: str, key: str, allowed: bool
) -> None:
    role = function_role(cfn, function_id)
    granted = any(r == role and grants(s, action, f"{BUCKET_ARN}/{key}") for r, s in allow_statements(cfn))
    assert granted is allowed


def test_queues_redrive_to_dead_letter_queues_that_keep_messages_14_days(cfn: dict[str, Any]) -> None:
    queues = resources_of(cfn, "AWS::SQS::Queue")
    redriven = {q: r for q, r in queues.items() if "RedrivePolicy" in r["Properties"]}
    assert set(redriven) == {"IngestQueue", "CollectQueue"}
    dead_letter_queues = {
        r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] for r in redriven.values()
    }
    assert dead_letter_queues == {"IngestDeadLetterQueue", "CollectDeadLetterQueue"}
    for logical_id, queue in queues.items():
        properties = queue["Properties"]
        assert properties["SqsManagedSseEnabled"] is True
        if logical_id not in redriven:
            assert properties["MessageRetentionPeriod"] == 1209600, logical_id
        else:
            assert properties["RedrivePolicy"]["maxReceiveCount"] >= 1


def test_every_rule_target_has_a_dead_letter_queue_and_retry_policy(cfn: dict[str, Any]) -> None:
    rules = resources_of(cfn, "AWS::Events::Rule")
    assert set(rules) == {"ObjectCreatedRule", "SubmitJobRule", "WebhookRule"}
    dead_letters = {"ObjectCreatedRule": "IngestDeadLetterQueue", "SubmitJobRule": "IngestDeadLetterQueue"}
    for logical_id, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            queue = dead_letters.get(logical_id, "WebhookDeadLetterQueue")
            assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [queue, "Arn"]}
            assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0


def test_the_webhook_is_an_api_destination_of_batch_job_finished_only_when_asked_for(cfn: dict[str, Any]) -> None:
    webhook = {logical_id for logical_id, resource in cfn["Resources"].items() if logical_id.startswith("Webhook")}
    assert webhook == {
        "WebhookConnection",
        "WebhookDestination",
        "WebhookDeadLetterQueue",
        "WebhookDeadLetterQueuePolicy",
        "WebhookRole",
        "WebhookRule",
        "WebhookDeadLetterAlarm",
    }
    assert all(cfn["Resources"][logical_id].get("Condition") == "HasWebhook" for logical_id in webhook)
    rule = cfn["Resources"]["WebhookRule"]["Properties"]
    assert rule["EventPattern"] == {"source": ["batchdrop"], "detail-type": ["Batch Job Finished"]}
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["WebhookDestination", "Arn"]}
    (statement,) = cfn["Resources"]["WebhookRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "events:InvokeApiDestination"
    assert statement["Resource"] == {"Fn::GetAtt": ["WebhookDestination", "Arn"]}
    connection = cfn["Resources"]["WebhookConnection"]["Properties"]["AuthParameters"]["ApiKeyAuthParameters"]
    assert "resolve:secretsmanager" in connection["ApiKeyValue"]["Fn::Sub"]  # never the secret itself


def test_the_ingest_queue_policy_admits_only_the_two_rules(cfn: dict[str, Any]) -> None:
    policy = resources_of(cfn, "AWS::SQS::QueuePolicy")["IngestQueuePolicy"]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Fn::GetAtt": ["ObjectCreatedRule", "Arn"]},
        {"Fn::GetAtt": ["SubmitJobRule", "Arn"]},
    ]


def test_object_created_rule_matches_every_key_under_the_input_prefix_of_the_bucket(cfn: dict[str, Any]) -> None:
    rule = cfn["Resources"]["ObjectCreatedRule"]["Properties"]
    assert "EventBusName" not in rule  # S3 publishes to the default bus only
    pattern = resolver_for(cfn, InputPrefix="drop/").resolve(rule["EventPattern"])
    assert pattern == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [BUCKET]},
            "object": {"key": [{"wildcard": "drop/*"}]},
        },
    }


def test_schedule_has_retries_a_dead_letter_queue_and_no_flexible_window(cfn: dict[str, Any]) -> None:
    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    properties = schedule["Properties"]
    assert properties["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert "Name" not in properties  # a fixed name would clash between two stacks in one account
    target = properties["Target"]
    assert target["Arn"] == {"Fn::GetAtt": ["PollFunction", "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["PollScheduleDeadLetterQueue", "Arn"]}


def test_poll_async_failures_go_to_the_dead_letter_queue(cfn: dict[str, Any]) -> None:
    (config,) = resources_of(cfn, "AWS::Lambda::EventInvokeConfig").values()
    properties = config["Properties"]
    assert properties["FunctionName"] == {"Ref": "PollFunction"}
    assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["PollScheduleDeadLetterQueue", "Arn"]
    }


@pytest.mark.parametrize(("minutes", "expression"), [("1", "rate(1 minute)"), ("5", "rate(5 minutes)")])
def test_poll_rate_renders_a_valid_expression_longer_than_the_poll_timeout(
    cfn: dict[str, Any], minutes: str, expression: str
) -> None:
    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    rendered = resolver_for(cfn, PollRateMinutes=minutes).resolve(schedule["Properties"]["ScheduleExpression"])
    assert rendered == expression
    match = re.fullmatch(r"rate\((?:(1) minute|([1-9]\d*) minutes)\)", rendered)
    assert match is not None and match.group(2) != "1"
    interval_seconds = 60 * int(match.group(1) or match.group(2))
    assert cfn["Resources"]["PollFunction"]["Properties"]["Timeout"] < interval_seconds


def test_poll_reserved_concurrency_is_omitted_unless_set(cfn: dict[str, Any]) -> None:
    value = cfn["Resources"]["PollFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert value == {
        "Fn::If": ["HasPollReservedConcurrency", {"Ref": "PollReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert resolver_for(cfn).condition("HasPollReservedConcurrency") is False
    assert resolver_for(cfn, PollReservedConcurrency="3").condition("HasPollReservedConcurrency") is True


def test_sqs_consumers_report_partial_failures_and_fit_the_visibility_timeout(cfn: dict[str, Any]) -> None:
    mappings = resources_of(cfn, "AWS::Lambda::EventSourceMapping")
    consumers = {}
    for mapping in mappings.values():
        properties = mapping["Properties"]
        queue_id = properties["EventSourceArn"]["Fn::GetAtt"][0]
        function_id = properties["FunctionName"]["Ref"]
        consumers[queue_id] = function_id
        assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        timeout = cfn["Resources"][function_id]["Properties"]["Timeout"]
        assert cfn["Resources"][queue_id]["Properties"]["VisibilityTimeout"] >= 6 * timeout
    assert consumers == {"IngestQueue": "SubmitFunction", "CollectQueue": "CollectFunction"}


def test_bucket_is_private_encrypted_versioned_and_retained(cfn: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["DataBucket"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (encryption,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert properties["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    rules = properties["LifecycleConfiguration"]["Rules"]
    assert any("AbortIncompleteMultipartUpload" in rule for rule in rules)
    assert any("NoncurrentVersionExpiration" in rule for rule in rules)
    (work,) = [rule for rule in rules if rule.get("Prefix") == {"Ref": "WorkPrefix"}]
    assert work["ExpirationInDays"] == {"Ref": "WorkRetentionDays"}


def test_bucket_policy_denies_plain_http_on_the_bucket_and_its_objects(cfn: dict[str, Any]) -> None:
    (policy,) = resources_of(cfn, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "DataBucket"}
    resolved = resolver_for(cfn).resolve(policy["Properties"]["PolicyDocument"])
    (statement,) = resolved["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert sorted(statement["Resource"]) == [BUCKET_ARN, f"{BUCKET_ARN}/*"]
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_jobs_table_keys_sparse_index_ttl_and_recovery(cfn: dict[str, Any]) -> None:
    table = cfn["Resources"]["JobsTable"]
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    active, by_day = properties["GlobalSecondaryIndexes"]
    assert active["IndexName"] == "ActiveShards"
    assert active["KeySchema"] == [
        {"AttributeName": "active_pk", "KeyType": "HASH"},
        {"AttributeName": "next_poll_at", "KeyType": "RANGE"},
    ]
    assert active["Projection"] == {"ProjectionType": "ALL"}
    # the operator's listing: keys only, so that a job's later writes never touch it
    assert by_day["IndexName"] == "JobsByDay"
    assert by_day["KeySchema"] == [
        {"AttributeName": "listed_day", "KeyType": "HASH"},
        {"AttributeName": "received_at", "KeyType": "RANGE"},
    ]
    assert by_day["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    types = {d["AttributeName"]: d["AttributeType"] for d in properties["AttributeDefinitions"]}
    assert types == {"pk": "S", "sk": "S", "active_pk": "S", "next_poll_at": "N", "listed_day": "S", "received_at": "N"}
    assert properties["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}


def test_functions_get_every_setting_and_no_secret(cfn: dict[str, Any]) -> None:
    settings = {field.alias for field in Settings.model_fields.values() if field.alias}
    per_function_only = {"COLLECT_QUEUE_URL", "INGEST_QUEUE_URL"}
    for function_id in FUNCTIONS:
        variables = cfn["Resources"][function_id]["Properties"]["Environment"]["Variables"]
        names = set(variables)
        assert settings - per_function_only <= names, function_id
        assert {name for name in names if not name.startswith("POWERTOOLS_")} - {"AWS_ENDPOINT_URL"} <= settings
        assert variables["AWS_ENDPOINT_URL"] == {"Ref": "AWS::NoValue"}  # for sam local invoke only, never on AWS
        assert not [name for name in names if re.search(r"API_KEY|PROJECT_ID|TOKEN|PASSWORD", name)]
        assert variables["SECRET_ID"] == {
            "Fn::If": ["CreateApiSecret", {"Ref": "ApiSecret"}, {"Ref": "ExistingApiSecretArn"}]
        }
    poll_variables = cfn["Resources"]["PollFunction"]["Properties"]["Environment"]["Variables"]
    assert poll_variables["COLLECT_QUEUE_URL"] == {"Ref": "CollectQueue"}
    assert poll_variables["INGEST_QUEUE_URL"] == {"Ref": "IngestQueue"}


def test_every_failure_sink_and_function_raises_an_alarm(cfn: dict[str, Any]) -> None:
    watched = set()
    for alarm in resources_of(cfn, "AWS::CloudWatch::Alarm").values():
        properties = alarm["Properties"]
        assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        (dimension,) = properties["Dimensions"]
        watched.add((properties["MetricName"], _referenced(dimension["Value"])))
    for queue in ("IngestDeadLetterQueue", "CollectDeadLetterQueue", "PollScheduleDeadLetterQueue"):
        assert ("ApproximateNumberOfMessagesVisible", queue) in watched
    for function_id in FUNCTIONS:
        assert ("Errors", function_id) in watched
    assert ("Throttles", "PollFunction") in watched


def _referenced(value: str | dict[str, Any]) -> str:
    if isinstance(value, str):
        return value
    return value["Fn::GetAtt"][0] if "Fn::GetAtt" in value else value["Ref"]


def test_outputs_name_everything_an_operator_needs(cfn: dict[str, Any]) -> None:
    assert set(cfn["Outputs"]) >= {
        "BucketName",
        "InputPrefix",
        "OutputPrefix",
        "TableName",
        "NotificationTopicArn",
        "AlarmTopicArn",
        "ApiSecretArn",
        "IngestQueueUrl",
        "IngestDeadLetterQueueUrl",
        "CollectQueueUrl",
        "CollectDeadLetterQueueUrl",
        "EventBusName",
    }


@pytest.mark.parametrize(
    ("function_id", "action", "resource", "allowed"),
    [
        ("SubmitFunction", "dynamodb:PutItem", "arn:test:JobsTable", True),
        ("SubmitFunction", "dynamodb:DeleteItem", "arn:test:JobsTable", True),  # Powertools idempotency
        # a new job looks whether shards of earlier jobs wait for a slot (it then waits its turn)
        ("SubmitFunction", "dynamodb:Query", "arn:test:JobsTable/index/ActiveShards", True),
        ("PollFunction", "dynamodb:Query", "arn:test:JobsTable/index/ActiveShards", True),
        ("PollFunction", "dynamodb:Query", "arn:test:JobsTable", False),  # due work comes from the index only
        ("PollFunction", "dynamodb:PutItem", "arn:test:JobsTable", False),
        ("PollFunction", "dynamodb:BatchGetItem", "arn:test:JobsTable", True),  # a page's jobs; a job's looks
        ("PollFunction", "dynamodb:DeleteItem", "arn:test:JobsTable", False),
        ("CollectFunction", "dynamodb:UpdateItem", "arn:test:JobsTable", True),
        ("CollectFunction", "dynamodb:PutItem", "arn:test:JobsTable", True),  # a re-drive round's shards
        ("CollectFunction", "dynamodb:DeleteItem", "arn:test:JobsTable", False),
        ("CollectFunction", "dynamodb:Query", "arn:test:JobsTable/index/ActiveShards", False),
    ],
)
def test_table_access_is_what_each_function_uses(
    cfn: dict[str, Any], function_id: str, action: str, resource: str, allowed: bool
) -> None:
    role = function_role(cfn, function_id)
    granted = any(r == role and grants(s, action, resource) for r, s in allow_statements(cfn))
    assert granted is allowed


def test_no_function_may_scan_the_table(cfn: dict[str, Any]) -> None:
    for role_id, statement in allow_statements(cfn):
        assert not any(fnmatchcase("dynamodb:Scan", action) for action in statement["Action"]), role_id


def test_stateful_resources_survive_a_stack_delete(cfn: dict[str, Any]) -> None:
    # Queues hold inputs waiting to run and failed events to redrive; the secret holds the key.
    for logical_id in ("IngestQueue", "IngestDeadLetterQueue", "CollectQueue", "CollectDeadLetterQueue", "ApiSecret"):
        resource = cfn["Resources"][logical_id]
        assert (resource["DeletionPolicy"], resource["UpdateReplacePolicy"]) == ("Retain", "Retain"), logical_id


def test_collect_concurrency_is_bounded_by_a_parameter(cfn: dict[str, Any]) -> None:
    for mapping in resources_of(cfn, "AWS::Lambda::EventSourceMapping").values():
        properties = mapping["Properties"]
        expected = {"SubmitFunction": "SubmitMaxConcurrency", "CollectFunction": "CollectMaxConcurrency"}
        parameter = expected[properties["FunctionName"]["Ref"]]
        assert properties["ScalingConfig"]["MaximumConcurrency"] == {"Ref": parameter}
        assert int(cfn["Parameters"][parameter]["MinValue"]) >= 2  # the mapping's own minimum


def test_the_schedulers_role_is_for_this_accounts_schedules_only(cfn: dict[str, Any]) -> None:
    (schedule,) = resources_of(cfn, "AWS::Scheduler::Schedule").values()
    role_id = schedule["Properties"]["Target"]["RoleArn"]["Fn::GetAtt"][0]
    (statement,) = cfn["Resources"][role_id]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    granted = [
        (action, resource)
        for role, st in allow_statements(cfn)
        if role == role_id
        for action in st["Action"]
        for resource in st["Resource"]
    ]
    assert sorted(granted) == [
        ("lambda:InvokeFunction", "arn:test:PollFunction"),
        ("sqs:SendMessage", "arn:test:PollScheduleDeadLetterQueue"),
    ]


@pytest.mark.parametrize("prefix", ["inbox/work/", "a/b/", "inbox", "/inbox/", "in*/", ""])
def test_a_prefix_is_one_top_level_folder_so_none_can_lie_under_another(cfn: dict[str, Any], prefix: str) -> None:
    for name in ("InputPrefix", "OutputPrefix", "WorkPrefix"):
        assert not re.fullmatch(cfn["Parameters"][name]["AllowedPattern"], prefix), (name, prefix)
    assert re.fullmatch(cfn["Parameters"]["WorkPrefix"]["AllowedPattern"], "my work/")


def test_equal_prefixes_are_refused_by_the_rules(sam_template: dict[str, Any]) -> None:
    assertions = sam_template["Rules"]["DistinctPrefixes"]["Assertions"]
    compared = {
        tuple(sorted(ref["Ref"] for ref in assertion["Assert"]["Fn::Not"][0]["Fn::Equals"])) for assertion in assertions
    }
    assert compared == {("InputPrefix", "OutputPrefix"), ("InputPrefix", "WorkPrefix"), ("OutputPrefix", "WorkPrefix")}


def test_every_checkov_skip_says_why(sam_template: dict[str, Any]) -> None:
    skipped = 0
    for logical_id, resource in sam_template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), logical_id
            assert len(skip.get("comment", "")) > 40, (logical_id, skip)
            skipped += 1
    assert skipped >= 20  # `make scan` runs checkov itself; this keeps every reason written down


@pytest.mark.parametrize(
    ("metric", "alarm"),
    [
        ("JobsFailed", "JobsFailedAlarm"),
        ("BatchesNotFound", "BatchesNotFoundAlarm"),
        ("BatchesTimedOut", "BatchesTimedOutAlarm"),
        ("ShardsTimedOut", "ShardsTimedOutAlarm"),
        ("ResultsUnavailable", "ResultsUnavailableAlarm"),
        ("ShardsAbandoned", "ShardsAbandonedAlarm"),
        ("AnnouncementsAbandoned", "AnnouncementsAbandonedAlarm"),
    ],
)
def test_work_ended_by_a_bound_raises_an_alarm(cfn: dict[str, Any], metric: str, alarm: str) -> None:
    properties = cfn["Resources"][alarm]["Properties"]
    assert (properties["Namespace"], properties["MetricName"]) == ("batchdrop", metric)
    assert properties["Dimensions"] == [{"Name": "service", "Value": "batchdrop"}]
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    # the metric is emitted by its literal name somewhere in the layer
    layer = TEMPLATE_PATH.parent / "layers" / "common" / "batchdrop"
    assert any(f'"{metric}"' in path.read_text() for path in layer.rglob("*.py")), metric


def test_every_alarm_on_a_batchdrop_metric_names_one_the_functions_emit(cfn: dict[str, Any]) -> None:
    watched = {
        resource["Properties"]["MetricName"]
        for resource in cfn["Resources"].values()
        if resource["Type"] == "AWS::CloudWatch::Alarm" and resource["Properties"].get("Namespace") == "batchdrop"
    }
    assert watched, "no alarm on the pipeline's own metrics?"
    assert watched <= {metric.value for metric in Metric}, watched - {metric.value for metric in Metric}


def test_env_json_gives_each_function_exactly_the_variables_the_template_does(cfn: dict[str, Any]) -> None:
    # env.json feeds `sam local invoke --env-vars`: "Parameters" goes to every function, a function's own
    # section on top. A variable the template adds or drops must be added or dropped there too.
    env = json.loads((TEMPLATE_PATH.parent / "env.json").read_text())
    functions = {
        logical_id: resource
        for logical_id, resource in cfn["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    assert set(env) - {"Parameters"} <= set(functions), set(env) - {"Parameters"} - set(functions)
    for logical_id, resource in functions.items():
        declared = set(resource["Properties"]["Environment"]["Variables"])
        given = set(env["Parameters"]) | set(env.get(logical_id, {}))
        # sam local invoke sets only what the template declares: env.json's AWS_ENDPOINT_URL (what points
        # the handler at batchdrop local) must be declared too, though it is never set on AWS
        assert "AWS_ENDPOINT_URL" in declared, logical_id
        assert given == declared, (
            logical_id,
            "missing from env.json:",
            sorted(declared - given),
            "not in the template:",
            sorted(given - declared),
        )


def test_env_json_names_what_batchdrop_local_creates() -> None:
    # `sam local invoke -e events/<file> --env-vars env.json` runs a handler in a container against
    # `batchdrop local --host 0.0.0.0` on this machine: every name must be one the local stack creates.
    from batchdrop_tools.local.stack import LocalStackConfig
    from batchdrop_tools.target import LOCAL_BUCKET, LOCAL_TABLE

    env = json.loads((TEMPLATE_PATH.parent / "env.json").read_text())
    parameters, poll = env["Parameters"], env["PollFunction"]
    host = "http://host.docker.internal"
    assert parameters["AWS_ENDPOINT_URL"] == f"{host}:4566" and parameters["API_BASE_URL"] == f"{host}:8400"
    assert parameters["TABLE_NAME"] == LOCAL_TABLE and parameters["BUCKET_NAME"] == LOCAL_BUCKET
    assert LocalStackConfig().bucket == LOCAL_BUCKET
    assert parameters["SECRET_ID"] == "batchdrop-local/ApiSecret"
    assert parameters["TOPIC_ARN"] == "arn:aws:sns:us-east-1:123456789012:batchdrop-local-NotificationTopic"
    assert poll == {
        "COLLECT_QUEUE_URL": f"{host}:4566/123456789012/batchdrop-local-CollectQueue",
        "INGEST_QUEUE_URL": f"{host}:4566/123456789012/batchdrop-local-IngestQueue",
    }


@pytest.mark.parametrize(
    ("logical_id", "function"), [("SubmitFunction", "submit"), ("PollFunction", "poll"), ("CollectFunction", "collect")]
)
def test_env_json_is_a_valid_configuration_of_each_function(logical_id: str, function: str) -> None:
    env = json.loads((TEMPLATE_PATH.parent / "env.json").read_text())
    variables = env["Parameters"] | env.get(logical_id, {})
    SETTINGS_OF[function].from_environ(variables, function=function)  # type: ignore[index]


def test_the_timing_policy_fits_the_functions_timeouts(cfn: dict[str, Any]) -> None:
    # The leases must outlast the function that holds them: a lease that ends while its holder still
    # runs lets a second worker in (two announcements, two uploads of one shard).
    from batchdrop import timing

    timeouts = {
        logical_id: cfn["Resources"][logical_id]["Properties"]["Timeout"]
        for logical_id in ("SubmitFunction", "PollFunction", "CollectFunction")
    }
    assert timeouts == {
        "SubmitFunction": timing.SUBMIT_TIMEOUT_SECONDS,
        "PollFunction": timing.POLL_TIMEOUT_SECONDS,
        "CollectFunction": timing.COLLECT_TIMEOUT_SECONDS,
    }
    # the end's announcement is claimed by collect or by submit (a rejection), and runs within one invocation
    assert max(timing.COLLECT_TIMEOUT_SECONDS, timing.SUBMIT_TIMEOUT_SECONDS) < timing.NOTIFY_LEASE_SECONDS
    # `Batch Job Submitted` is one EventBridge call under its claim: the lease outlasts that call's worst
    # case with the functions' botocore settings (every attempt connecting and reading to its timeout)
    from batchdrop.runtime import _BOTO_CONFIG as boto

    # botocore rewrites `max_attempts` (retries) as `total_max_attempts` (the first try too) once a client uses it
    attempts = boto.retries.get("total_max_attempts") or boto.retries["max_attempts"] + 1
    worst_call = (boto.connect_timeout + boto.read_timeout) * attempts
    assert worst_call < timing.SUBMIT_ANNOUNCE_LEASE_SECONDS
    # a submission's lease is its invocation's remaining time plus a margin: never shorter than the call
    assert timing.SUBMIT_LEASE_MARGIN_SECONDS > 0
    # a handed-over shard is not handed again while its message may still be waiting for the submit function
    assert timing.HANDOVER_RETRY_SECONDS > timing.POLL_TIMEOUT_SECONDS
    # collect is asked again only after an invocation that took the message could have finished
    assert timing.COLLECT_RETRY_SECONDS >= timing.COLLECT_TIMEOUT_SECONDS


def test_the_price_table_parameter_is_readable_by_submit_and_collect_only_when_named(cfn: dict[str, Any]) -> None:
    readers = set()
    for logical_id, resource in cfn["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement and statement["Fn::If"][0] == "HasPriceTableParameter":
                    granted = statement["Fn::If"][1]
                    assert granted["Action"] == "ssm:GetParameter"
                    assert "parameter${PriceTableParameterName}" in granted["Resource"]["Fn::Sub"]
                    assert statement["Fn::If"][2] == {"Ref": "AWS::NoValue"}
                    readers.add(logical_id)
    assert readers == {"SubmitFunctionRole", "CollectFunctionRole"}


def _dashboard(sam_template: dict[str, Any]) -> dict[str, Any]:
    body = sam_template["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"]
    text = body["Fn::Sub"] if isinstance(body, dict) else body
    return json.loads(re.sub(r"\$\{[^}]+\}", "X", text))  # ${...} are substituted by CloudFormation


def test_the_dashboard_shows_metrics_the_functions_emit_and_every_alarm(sam_template: dict[str, Any]) -> None:
    dashboard = _dashboard(sam_template)
    shown = {
        row[1]
        for widget in dashboard["widgets"]
        if widget["type"] == "metric"
        for row in widget["properties"]["metrics"]
        if row[0] == "batchdrop"
    }
    assert shown <= {metric.value for metric in Metric}, shown - {metric.value for metric in Metric}
    # what the issue asks of it: outcomes, lines, tokens and cost, in flight and held, API errors, stuck
    for wanted in ("JobsFailed", "LinesFailed", "PromptTokens", "Cost", "BatchesInFlight", "ShardsWaiting"):
        assert wanted in shown, wanted
    assert {"ApiErrorsRetryable", "ApiErrorsPermanent", "ApiErrorsOperational", "BatchesStuck"} <= shown
    body = sam_template["Resources"]["OperatorDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    alarms = {
        logical_id
        for logical_id, resource in sam_template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm" and "Condition" not in resource
    }
    (alarm_widget,) = [widget for widget in dashboard["widgets"] if widget["type"] == "alarm"]
    assert len(alarm_widget["properties"]["alarms"]) == len(alarms)
    assert {name for name in alarms if f"${{{name}.Arn}}" in body} == alarms


def test_the_readme_lists_every_metric_the_functions_emit() -> None:
    readme = (TEMPLATE_PATH.parent / "README.md").read_text()
    listed = readme.split("Metrics (namespace `batchdrop`", 1)[1].split("\n\n|", 1)[1].split("\n\n", 1)[0]
    assert [metric.value for metric in Metric if f"`{metric.value}`" not in listed] == []


def test_the_readme_runbook_has_an_entry_for_every_alarm_and_no_other(sam_template: dict[str, Any]) -> None:
    readme = (TEMPLATE_PATH.parent / "README.md").read_text()
    runbook = readme.split("## Runbook", 1)[1].split("\n## ", 1)[0]
    entries = set(re.findall(r"^#### `(\w+)`", runbook, flags=re.MULTILINE))
    alarms = {
        logical_id
        for logical_id, resource in sam_template["Resources"].items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert entries == alarms, {"no entry in the runbook": alarms - entries, "not an alarm": entries - alarms}
    for entry in entries:  # each says what it means, how to confirm it, and what to do
        text = runbook.split(f"#### `{entry}`", 1)[1].split("\n#### ", 1)[0]
        for part in ("**Means**", "**Confirm**", "**Do**"):
            assert part in text, (entry, part)
