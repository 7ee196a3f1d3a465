"""End to end over real sockets: the AWS CLI against `batchdrop local` (moto server + emulator + handlers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from stack_harness import BUCKET, RunningStack, request

from batchdrop_tools.local.template import derive_local_resources, find_template, load_template

pytestmark = pytest.mark.e2e
REPO = Path(__file__).parents[3]


def test_the_banner_names_the_endpoint_the_bucket_and_an_example(stack: RunningStack) -> None:
    banner = "".join(stack.output)
    assert stack.endpoint in banner
    assert f"s3://{BUCKET}" in banner
    assert "aws --endpoint-url" in banner and "s3 cp" in banner
    assert f"export AWS_ENDPOINT_URL={stack.endpoint}" in banner
    assert "Jobs table:            batchdrop-local-jobs" in banner
    assert "Queue IngestQueue:" in banner and "Queue CollectDeadLetterQueue:" in banner
    assert "Topic NotificationTopic:" in banner and "key zgpu-local-emulator-key" in banner
    assert "batchdrop submit x.jsonl --wait" in banner and "/_emulator/health" in banner
    # and an idle stack logs nothing of its poll runs at INFO (each would be a long line a second)
    stack.wait_until(lambda: len(stack.output) > 0, "output")
    time.sleep(2)
    assert not [line for line in stack.output if '"message":"poll run"' in line and '"due":0,' in line]


def test_a_file_dropped_with_the_aws_cli_comes_back_with_answers_and_one_notification(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Given observers of the topic and of the bus, set up with the AWS CLI itself
    topic_arn = next(
        t["TopicArn"] for t in stack.aws_json("sns", "list-topics")["Topics"] if "Notification" in t["TopicArn"]
    )
    sns_queue = stack.aws_json("sqs", "create-queue", "--queue-name", "observer-sns")["QueueUrl"]
    sns_queue_arn = stack.aws_json(
        "sqs", "get-queue-attributes", "--queue-url", sns_queue, "--attribute-names", "QueueArn"
    )["Attributes"]["QueueArn"]
    stack.aws(
        "sns",
        "subscribe",
        "--topic-arn",
        topic_arn,
        "--protocol",
        "sqs",
        "--notification-endpoint",
        sns_queue_arn,
    )
    events_queue = stack.aws_json("sqs", "create-queue", "--queue-name", "observer-events")["QueueUrl"]
    events_queue_arn = stack.aws_json(
        "sqs", "get-queue-attributes", "--queue-url", events_queue, "--attribute-names", "QueueArn"
    )["Attributes"]["QueueArn"]
    stack.aws(
        "events",
        "put-rule",
        "--name",
        "observer",
        "--event-pattern",
        json.dumps({"source": ["batchdrop"], "detail-type": ["Batch Job Finished"]}),
    )
    stack.aws(
        "events",
        "put-targets",
        "--rule",
        "observer",
        "--targets",
        json.dumps([{"Id": "q", "Arn": events_queue_arn}]),
    )

    # When a file with an awkward key is copied into the inbox
    source = tmp_path / "input.jsonl"
    source.write_text("\n".join(request(f"q-{n}", f"question {n}") for n in range(1, 6)) + "\n")
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/team a/q+1 ü.jsonl")

    # Then the results appear next to it
    report = stack.wait_for_report("team a/q+1 ü")
    assert report["outcome"] == "succeeded"
    assert report["counts"] == {"total": 5, "succeeded": 5, "failed": 0}
    output = stack.read_object("outbox/team a/q+1 ü/output.jsonl") or b""
    answers = {json.loads(line)["custom_id"]: json.loads(line) for line in output.splitlines()}
    assert sorted(answers) == [f"q-{n}" for n in range(1, 6)]
    assert answers["q-3"]["response"]["body"]["choices"][0]["message"]["content"].endswith("question 3")

    # And exactly one SNS message and one Finished event went out, once nothing is left to happen
    stack.wait_until(stack.pipeline_idle, "the stack's queues drained")

    def received(queue: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = stack.aws_json(
            "sqs", "receive-message", "--queue-url", queue, "--max-number-of-messages", "10", "--wait-time-seconds", "1"
        ).get("Messages", [])
        return messages

    sns = received(sns_queue)
    finished = received(events_queue)
    assert len(sns) == 1
    notification = json.loads(sns[0]["Body"])
    assert notification["MessageAttributes"]["outcome"]["Value"] == "succeeded"
    assert notification["Subject"] == "batchdrop: q+1 ?.jsonl succeeded (5 of 5 lines)"  # SNS subjects: ASCII

    # And the message's links open the results (pre-signed against the stack's S3)
    import httpx

    text = notification["Message"]
    links = dict(line.strip().split(": ", 1) for line in text.splitlines() if line.startswith("  "))
    fetched = httpx.get(links["results.csv (a row per line)"], timeout=10)
    assert fetched.status_code == 200 and fetched.content.startswith(b"custom_id,status,answer,")
    assert fetched.content == stack.read_object("outbox/team a/q+1 ü/results.csv")
    assert len(finished) == 1
    assert json.loads(finished[0]["Body"])["detail"]["job_id"] == report["job_id"]


def test_a_bad_file_is_rejected_with_line_numbers_and_no_batch(stack: RunningStack, tmp_path: Path) -> None:
    before = stack.api_calls("POST", "/v1/batches")
    source = tmp_path / "bad.jsonl"
    source.write_text(request("a", "fine") + "\n{not json\n" + request("a", "again") + "\n")
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/bad.jsonl")

    report = stack.wait_for_report("bad")
    assert report["outcome"] == "rejected"
    assert [(e["line"], e["code"]) for e in report["validation_errors"]] == [
        (2, "invalid_json"),
        (3, "duplicate_custom_id"),
    ]
    assert stack.api_calls("POST", "/v1/batches") == before


def test_other_services_submit_by_event_and_a_repeat_makes_no_second_batch(stack: RunningStack, tmp_path: Path) -> None:
    # Given an object written outside the inbox (no pipeline event)
    source = tmp_path / "export.jsonl"
    source.write_text(request("e-1", "exported") + "\n")
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/exports/nightly.jsonl")
    entry = {
        "Source": "my.service",
        "DetailType": "Submit Batch Job",
        "Detail": json.dumps({"bucket": BUCKET, "key": "exports/nightly.jsonl"}),
        "EventBusName": "default",
    }

    # When a service submits it by event, twice
    stack.aws("events", "put-events", "--entries", json.dumps([entry]))
    report = stack.wait_for_report("exports/nightly")
    batches = stack.api_calls("POST", "/v1/batches")
    stack.aws("events", "put-events", "--entries", json.dumps([entry]))
    # moto delivers to the rule's queue within put-events: once the queues are empty, it has been handled
    stack.wait_until(stack.pipeline_idle, "the repeated event handled")

    # Then it ran once
    assert report["outcome"] == "succeeded"
    assert stack.api_calls("POST", "/v1/batches") == batches


def test_a_file_that_is_not_jsonl_is_answered_with_a_rejected_report(stack: RunningStack, tmp_path: Path) -> None:
    # Given a text file and a JSON Lines file in capitals, dropped with the AWS CLI
    notes = tmp_path / "notes.txt"
    notes.write_text("not an input\n")
    stack.aws("s3", "cp", str(notes), f"s3://{BUCKET}/inbox/notes.txt")
    shouted = tmp_path / "SHOUT.JSONL"
    shouted.write_text(request("s-1", "in capitals") + "\n")
    stack.aws("s3", "cp", str(shouted), f"s3://{BUCKET}/inbox/SHOUT.JSONL")

    # Then the text file gets a report saying which names are processed, and the .JSONL one runs
    rejected = stack.wait_for_report("notes.txt")
    assert rejected["outcome"] == "rejected"
    assert rejected["validation_errors"][0]["code"] == "not_jsonl"
    assert "only .jsonl and .jsonl.gz files are" in rejected["validation_errors"][0]["message"]
    assert stack.wait_for_report("SHOUT")["outcome"] == "succeeded"
    # and `batchdrop status` finds it by its bare name, as the pipeline takes the suffix in any case
    found = stack.command("status", "SHOUT")
    assert found.returncode == 0 and "s3://batchdrop-local/inbox/SHOUT.JSONL" in found.stdout, found.stderr


def test_the_local_resources_are_the_ones_template_yaml_declares(stack: RunningStack) -> None:
    expected = derive_local_resources(load_template(find_template()), bucket_name=BUCKET)
    table = stack.aws_json("dynamodb", "describe-table", "--table-name", "batchdrop-local-jobs")["Table"]
    assert table["KeySchema"] == expected.table.create_table_kwargs["KeySchema"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == [
        index["IndexName"] for index in expected.table.create_table_kwargs["GlobalSecondaryIndexes"]
    ]
    ttl = stack.aws_json("dynamodb", "describe-time-to-live", "--table-name", "batchdrop-local-jobs")
    assert ttl["TimeToLiveDescription"]["AttributeName"] == expected.table.ttl_attribute
    assert stack.aws_json("s3api", "get-bucket-versioning", "--bucket", BUCKET)["Status"] == "Enabled"
    rules = {rule["Name"]: rule for rule in stack.aws_json("events", "list-rules")["Rules"]}
    for logical_id, spec in expected.rules.items():
        assert json.loads(rules[f"batchdrop-local-{logical_id}"]["EventPattern"]) == spec.event_pattern
    queues = stack.aws_json("sqs", "list-queues")["QueueUrls"]
    for logical_id, spec in expected.queues.items():
        url = next(url for url in queues if url.endswith(f"batchdrop-local-{logical_id}"))
        attributes = stack.aws_json("sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "All")[
            "Attributes"
        ]
        if spec.dead_letter_queue:
            assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == spec.max_receive_count
        # as the template declares it, or SQS's default of 30 s where it declares none
        assert attributes["VisibilityTimeout"] == spec.attributes.get("VisibilityTimeout", "30"), logical_id


def test_env_json_names_resources_the_running_local_stack_has(stack: RunningStack) -> None:
    # what `sam local invoke --env-vars env.json` gives a handler: each name resolves on batchdrop local
    env = json.loads((Path(__file__).parents[3] / "env.json").read_text())
    parameters = env["Parameters"]
    stack.aws_json("dynamodb", "describe-table", "--table-name", parameters["TABLE_NAME"])
    stack.aws_json("secretsmanager", "describe-secret", "--secret-id", parameters["SECRET_ID"])
    stack.aws_json("sns", "get-topic-attributes", "--topic-arn", parameters["TOPIC_ARN"])
    stack.aws("s3api", "head-bucket", "--bucket", parameters["BUCKET_NAME"])
    for url in env["PollFunction"].values():
        stack.aws_json("sqs", "get-queue-url", "--queue-name", url.rsplit("/", 1)[1])


def invoke_as_sam_would(stack: RunningStack, function: str, event: str) -> subprocess.CompletedProcess[str]:
    """`sam local invoke FUNCTION -e events/EVENT --env-vars env.json` without its container (the tests
    have no Docker): a fresh Python given only env.json's variables and what SAM adds (region, credentials,
    the function's name), with the layer and the function's code on its path, calls the template's handler
    with the event. Only env.json's host.docker.internal becomes this stack's address."""
    template = load_template(find_template())
    resource = template["Resources"][function]["Properties"]
    module, handler = resource["Handler"].rsplit(".", 1)
    # SAM sets only the variables the template declares for the function: env.json's others are dropped
    declared = set(template["Globals"]["Function"]["Environment"]["Variables"])
    declared |= set(resource.get("Environment", {}).get("Variables", {}))
    env_json = json.loads((REPO / "env.json").read_text())
    aws_host, emulator_host = urlsplit(stack.endpoint).netloc, urlsplit(stack.emulator_url).netloc
    variables = {
        name: value.replace("host.docker.internal:4566", aws_host).replace("host.docker.internal:8400", emulator_host)
        for name, value in (env_json["Parameters"] | env_json.get(function, {})).items()
        if name in declared
    }
    code = f"""
import json, sys
from types import SimpleNamespace
from {module} import {handler} as handler
context = SimpleNamespace(function_name="{function}", memory_limit_in_mb=512, aws_request_id="sam-local",
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:{function}",
    get_remaining_time_in_millis=lambda: 300_000)
print("RESULT " + json.dumps(handler(json.loads(sys.stdin.read()), context)))
"""
    sam_adds = {
        "PATH": os.environ["PATH"],
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "anything",
        "AWS_SECRET_ACCESS_KEY": "anything",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "PYTHONPATH": f"{REPO / 'layers' / 'common'}:{REPO / resource['CodeUri']}",
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        input=(REPO / "events" / event).read_text(encoding="utf-8"),
        capture_output=True,
        text=True,
        env=sam_adds | variables,
        timeout=60,
    )


def _result_of(invoked: subprocess.CompletedProcess[str]) -> Any:
    assert invoked.returncode == 0, invoked.stderr[-2000:]
    (line,) = [line for line in invoked.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_the_sam_local_invoke_recipe_runs_each_handler_against_the_local_stack(stack: RunningStack) -> None:
    # Given the README's recipe: the sample file uploaded where the `Submit Batch Job` sample names it
    # (outside inbox/, so the stack leaves it to the handler invoked by hand)
    detail = json.loads(json.loads((REPO / "events" / "sqs_submit_batch_job.json").read_text())["Records"][0]["body"])[
        "detail"
    ]
    uri = f"s3://{detail['bucket']}/{detail['key']}"
    stack.aws("s3", "cp", str(REPO / "events" / "samples" / "demo.jsonl"), uri)

    # When SubmitFunction is invoked with that event and env.json, Then it makes the job, which ends
    assert _result_of(invoke_as_sam_would(stack, "SubmitFunction", "sqs_submit_batch_job.json")) == {
        "batchItemFailures": []
    }
    stack.wait_until(lambda: "\n  status     succeeded · " in stack.command("status", uri).stdout, f"{uri} succeeded")

    def job_ids() -> set[str]:
        return {job["job_id"] for job in json.loads(stack.command("jobs", "list", "--output", "json").stdout)}

    jobs_before = job_ids()

    # And the other samples run too: the poller's tick, a collect request for a job that is not there
    # (dropped with a warning), and an S3 event for an object this bucket does not have (ignored)
    assert set(_result_of(invoke_as_sam_would(stack, "PollFunction", "scheduled_poll.json"))) >= {"due", "polled"}
    collected = invoke_as_sam_would(stack, "CollectFunction", "sqs_collect.json")
    assert (
        _result_of(collected) == {"batchItemFailures": []} and "collect request for an unknown job" in collected.stdout
    )
    ignored = invoke_as_sam_would(stack, "SubmitFunction", "sqs_object_created.json")
    assert _result_of(ignored) == {"batchItemFailures": []} and '"result":"ignored"' in ignored.stdout
    assert job_ids() == jobs_before  # no job made by either


def test_the_operator_lists_shows_and_cannot_cancel_an_ended_job(stack: RunningStack, tmp_path: Path) -> None:
    source = tmp_path / "ops.jsonl"
    source.write_text(request("o-1", "for the operator") + "\n")
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/ops.jsonl")
    job_id = stack.wait_for_report("ops")["job_id"]

    jobs = stack.jobs
    listing = jobs("list")
    assert listing.returncode == 0 and job_id in listing.stdout and "inbox/ops.jsonl" in listing.stdout
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["JOB", "ID", "STATUS", "LINES", "BATCHES", "DONE", "AGE", "INPUT"]
    (row,) = [row for row in rows if job_id in row]
    assert " succeeded " in row and " 1/1 ok " in row
    as_json = jobs("list", "--output", "json")
    (listed,) = [job for job in json.loads(as_json.stdout) if job["job_id"] == job_id]
    assert (listed["status"], listed["outcome"], listed["progress"]["status"]) == ("finished", "succeeded", "succeeded")
    shown = jobs("show", job_id, "--output", "json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["shards"][0]["state"] == "collected"
    readable = stack.command("jobs", "show", "ops")  # by name; the stack found on its own
    assert readable.returncode == 0 and readable.stdout.startswith(job_id)
    assert "succeeded · 1 succeeded, 0 failed of 1 lines · 1 of 1 batches ended" in readable.stdout
    refused = jobs("cancel", job_id)
    assert refused.returncode == 1 and "has ended" in refused.stderr


def test_a_50001_line_file_is_answered_in_well_under_a_minute(stack: RunningStack, tmp_path: Path) -> None:
    # Given a file of two batches' worth of lines, dropped with the AWS CLI
    path = tmp_path / "big.jsonl"
    path.write_text("".join(request(f"big-{n}", f"question {n}") + "\n" for n in range(50_001)))
    started = time.monotonic()
    stack.aws("s3", "cp", str(path), f"s3://{BUCKET}/inbox/big.jsonl")

    # Then the emulator answers at once by default: the report comes well within a minute
    report = stack.wait_for_report("big", timeout=60)
    elapsed = time.monotonic() - started
    assert report["counts"] == {"total": 50_001, "succeeded": 50_001, "failed": 0}
    assert len(report["batches"]) == 2
    print(f"50,001 lines answered in {elapsed:.1f} s on the local stack")


def test_the_local_stack_says_so_when_a_port_is_taken(tmp_path: Path) -> None:
    import socket
    import subprocess

    from stack_harness import BIN, clean_env

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [str(BIN / "batchdrop"), "local", "--aws-port", str(port), "--emulator-port", "0"],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "--aws-port" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("code", "outcome", "rounds"),
    [("rate_limit_exceeded", "succeeded", 2), ("invalid_request_error", "partial", 1)],
)
def test_failed_lines_are_re_driven_when_another_try_can_help(
    stack: RunningStack, tmp_path: Path, code: str, outcome: str, rounds: int
) -> None:
    import httpx

    # Given an API that fails 30% of the lines on their first attempt (over its admin surface)
    prefix = f"heal-{code}"
    rule = {"kind": "line_errors", "code": code, "rate": 0.3, "seed": 11}
    if code == "rate_limit_exceeded":
        rule["times_per_line"] = 1  # transient: the second attempt succeeds
    assert httpx.post(f"{stack.emulator_url}/_emulator/faults", json=rule, timeout=10).is_success
    batches_before = stack.api_calls("POST", "/v1/batches")
    try:
        # When a 1,000-line file is dropped with the AWS CLI
        path = tmp_path / "redrive.jsonl"
        path.write_text("".join(request(f"{prefix}-{n}", f"question {n}") + "\n" for n in range(1000)))
        stack.aws("s3", "cp", str(path), f"s3://{BUCKET}/inbox/{prefix}.jsonl")
        report = stack.wait_for_report(prefix, timeout=120)
    finally:
        httpx.delete(f"{stack.emulator_url}/_emulator/faults", timeout=10)

    # Then a transient failure is sent again and answered; a permanent one is final after one round
    assert report["outcome"] == outcome
    assert len(report["rounds"]) == rounds
    failed_first = report["rounds"][0]["failed"]
    assert 200 < failed_first < 400
    output = (stack.read_object(f"outbox/{prefix}/output.jsonl") or b"").splitlines()
    errors = (stack.read_object(f"outbox/{prefix}/errors.jsonl") or b"").splitlines()
    answered = {json.loads(line)["custom_id"] for line in output}
    failed = {json.loads(line)["custom_id"] for line in errors}
    assert answered | failed == {f"{prefix}-{n}" for n in range(1000)} and not answered & failed
    # results.csv has a row per input line, in input order, as csv and pandas read it
    import io

    import pandas

    table = stack.read_object(f"outbox/{prefix}/results.csv") or b""
    frame = pandas.read_csv(io.BytesIO(table), dtype=str, keep_default_na=False)
    assert frame["custom_id"].tolist() == [f"{prefix}-{n}" for n in range(1000)]
    assert sorted(frame.loc[frame["status"] == "failed", "custom_id"]) == sorted(failed)
    # report.json's usage is the sum over output.jsonl's own lines (each answered line once, any round)
    replies = [json.loads(line)["response"]["body"] for line in output]
    assert {key: report["usage"]["total"][key] for key in ("lines", "prompt_tokens", "completion_tokens")} == {
        "lines": len(answered),
        "prompt_tokens": sum(reply["usage"]["prompt_tokens"] for reply in replies),
        "completion_tokens": sum(reply["usage"]["completion_tokens"] for reply in replies),
    }
    if outcome == "succeeded":
        assert len(answered) == 1000 and report["recovered"] == failed_first
        assert report["attempts"] == {"1": 1000 - failed_first, "2": failed_first}
    else:
        assert len(failed) == failed_first and report["retried"] == 0
    assert stack.api_calls("POST", "/v1/batches") - batches_before == rounds


def test_quota_failures_wait_and_jobs_retry_all_failed_recovers_them(stack: RunningStack, tmp_path: Path) -> None:
    import httpx

    jobs = stack.jobs

    # Given an account whose quota runs out for 3 of 20 lines
    rule = {"kind": "line_errors", "code": "insufficient_quota", "custom_ids": ["quota-3", "quota-7", "quota-11"]}
    assert httpx.post(f"{stack.emulator_url}/_emulator/faults", json=rule, timeout=10).is_success
    try:
        source = tmp_path / "quota.jsonl"
        source.write_text("".join(request(f"quota-{n}", f"question {n}") + "\n" for n in range(20)))
        stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/quota.jsonl")
        report = stack.wait_for_report("quota", timeout=60)
    finally:
        httpx.delete(f"{stack.emulator_url}/_emulator/faults", timeout=10)

    # Then the lines wait (not re-driven); a plain retry says what would help
    assert report["outcome"] == "partial" and report["errors_by_code"] == {"insufficient_quota": 3}
    assert len(report["rounds"]) == 1
    plain = jobs("retry", report["job_id"])
    assert plain.returncode == 1 and "--all-failed" in plain.stderr

    # When the account is fixed and the operator retries with --all-failed
    retried = jobs("retry", report["job_id"], "--all-failed")
    assert retried.returncode == 0, retried.stderr
    assert "3 failed lines" in retried.stdout

    # Then the job's report is written again: every line answered, in two rounds
    def recovered() -> bool:
        body = stack.read_object("outbox/quota/report.json")
        return body is not None and json.loads(body)["outcome"] == "succeeded"

    stack.wait_until(recovered, "the retried job's report", timeout=60)
    report = json.loads(stack.read_object("outbox/quota/report.json") or b"{}")
    assert report["counts"] == {"total": 20, "succeeded": 20, "failed": 0}
    assert [r["lines"] for r in report["rounds"]] == [20, 3] and report["recovered"] == 3
    assert (stack.read_object("outbox/quota/errors.jsonl") or b"") == b""


def test_an_expired_batch_s_unrun_lines_are_re_driven_and_answered(stack: RunningStack, tmp_path: Path) -> None:
    import httpx

    # Given an API whose next batch stalls after 3 of its 10 lines
    stall = {"kind": "stall_batches", "after_lines": 3, "times": 1}
    assert httpx.post(f"{stack.emulator_url}/_emulator/faults", json=stall, timeout=10).is_success
    try:
        source = tmp_path / "expiry.jsonl"
        source.write_text("".join(request(f"expiry-{n}", f"question {n}") + "\n" for n in range(10)))
        stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/expiry.jsonl")
        deadline = time.monotonic() + 60
        while httpx.get(f"{stack.emulator_url}/_emulator/faults", timeout=10).json()["stalls"]:
            assert time.monotonic() < deadline, "the batch was never created"
            time.sleep(0.2)

        # When its 24-hour window passes at the API (the emulator's clock moves a day ahead)
        moved = httpx.post(f"{stack.emulator_url}/_emulator/advance", json={"seconds": 86_401}, timeout=10)
        assert moved.is_success, moved.text
        report = stack.wait_for_report("expiry", timeout=90)
    finally:
        httpx.delete(f"{stack.emulator_url}/_emulator/faults", timeout=10)

    # Then the 7 lines that never ran went again in a second round and were answered
    assert report["outcome"] == "succeeded", report
    assert report["rounds"][0]["errors_by_code"] == {"batch_expired": 7}
    assert report["attempts"] == {"1": 3, "2": 7} and report["recovered"] == 7
    output = (stack.read_object("outbox/expiry/output.jsonl") or b"").splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == sorted(f"expiry-{n}" for n in range(10))


def test_the_webhook_would_receive_batch_job_finished_and_the_stack_prints_it(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Given the stack started with --webhook-url (moto delivers no API destinations)
    source = tmp_path / "hook.jsonl"
    source.write_text(request("hook-1", "question") + "\n")

    # When a job finishes
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/inbox/hook.jsonl")
    report = stack.wait_for_report("hook", timeout=60)

    # Then the stack prints the event the webhook would be sent
    deadline = time.monotonic() + 30
    printed: list[str] = []
    while not printed and time.monotonic() < deadline:
        printed = [
            line
            for line in list(stack.output)
            if "would POST https://hooks.example/batchdrop" in line and report["job_id"] in line
        ]
        time.sleep(0.2)
    assert printed, "".join(stack.output[-20:])
    event = json.loads(printed[0].split("https://hooks.example/batchdrop ", 1)[1])
    assert event["detail-type"] == "Batch Job Finished" and event["detail"]["job_id"] == report["job_id"]


def test_the_bundled_sample_s_usage_is_the_sum_over_its_output(stack: RunningStack) -> None:
    # Given the sample the demo drops, dropped with the AWS CLI
    sample = Path(__file__).parents[3] / "tools" / "batchdrop_tools" / "samples" / "demo.jsonl"
    stack.aws("s3", "cp", str(sample), f"s3://{BUCKET}/inbox/sample.jsonl")
    report = stack.wait_for_report("sample", timeout=60)

    # Then report.json's usage is what output.jsonl's lines say, and its model is priced
    replies = [
        json.loads(line)["response"]["body"]
        for line in (stack.read_object("outbox/sample/output.jsonl") or b"").splitlines()
    ]
    assert len(replies) == 5
    total = report["usage"]["total"]
    assert total["prompt_tokens"] == sum(reply["usage"]["prompt_tokens"] for reply in replies)
    assert total["completion_tokens"] == sum(reply["usage"]["completion_tokens"] for reply in replies)
    assert report["cost"]["by_model"]["llama-3.1-8b-instruct-fast"] > 0


def test_a_dead_lettered_request_is_listed_and_sent_back_with_batchdrop_dlq(
    stack: RunningStack, tmp_path: Path
) -> None:
    def dlq(*args: str) -> Any:
        return stack.batchdrop("dlq", *args)

    # Given a Submit Batch Job request that ended in the ingest dead-letter queue
    source = tmp_path / "late.jsonl"
    source.write_text(request("late-1", "from the dead letters") + "\n")
    stack.aws("s3", "cp", str(source), f"s3://{BUCKET}/exports/late.jsonl")
    event = {
        "version": "0",
        "id": "dead-1",
        "detail-type": "Submit Batch Job",
        "source": "my.service",
        "account": "123456789012",
        "time": "2026-12-02T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {"bucket": BUCKET, "key": "exports/late.jsonl"},
    }
    url = stack.aws_json("sqs", "get-queue-url", "--queue-name", "batchdrop-local-IngestDeadLetterQueue")["QueueUrl"]
    stack.aws("sqs", "send-message", "--queue-url", url, "--message-body", json.dumps(event))

    # When the operator lists the queue, then sends it back
    listed = dlq("list", "--queue", "ingest")
    assert listed.returncode == 0, listed.stderr
    assert "Submit Batch Job" in listed.stdout and "exports/late.jsonl" in listed.stdout
    assert "1 message(s) in batchdrop-local-IngestDeadLetterQueue (hidden for 5 s by this listing)" in listed.stdout
    time.sleep(6)  # the listing hid it for 5 s (SQS has no peek)
    moved = dlq("redrive", "--queue", "ingest")
    assert moved.returncode == 0, moved.stderr
    assert (
        "moved 1 message(s) from batchdrop-local-IngestDeadLetterQueue back to batchdrop-local-IngestQueue"
        in moved.stdout
    )

    # Then the request runs as if it had never failed
    assert stack.wait_for_report("exports/late", timeout=60)["outcome"] == "succeeded"
    schedule = dlq("redrive", "--queue", "schedule")
    assert schedule.returncode == 1 and "nothing replays them" in schedule.stderr
    # and a listing that names no queue shows each of the three, now empty; a redrive must name one
    everything = dlq("list")
    assert everything.returncode == 0, everything.stderr
    for name in ("IngestDeadLetterQueue", "CollectDeadLetterQueue", "PollScheduleDeadLetterQueue"):
        assert f"0 message(s) in batchdrop-local-{name}" in everything.stdout
    unnamed = dlq("redrive")
    assert unnamed.returncode == 2 and "--queue ingest or --queue collect" in unnamed.stderr
