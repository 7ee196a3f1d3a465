"""Hostile input and lost races end in a report or a quiet count: never a crash, a retry into the DLQ, a
billed batch of text the API cannot take, or a job that stays open. Each failed before its fix."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

import pytest
from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl
from testsupport import assert_matches_schema

from batchdrop.models import JobStatus
from batchdrop_tools.emulator import Fault


def lines_for(n: int, prefix: str = "h") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def job_of(pipeline: Pipeline, key: str) -> Any:
    return next(job for job in pipeline.services.store.recent_jobs(limit=50) if job.input.key == key)


# -- bad input ends in a report ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (gzip.compress(lines_for(50))[:-30], "invalid_gzip"),
        (b"this was never gzip", "invalid_gzip"),
        (gzip.compress(b"\n" * (64 * 1024 * 1024)), "too_many_lines"),
    ],
    ids=["truncated", "not-gzip", "bomb"],
)
def test_a_bad_gzip_input_is_rejected_with_a_report_and_no_api_call(make_pipeline: Any, body: bytes, code: str) -> None:
    pipeline: Pipeline = make_pipeline(MAX_INPUT_LINES=1_000_000)
    pipeline.drop("inbox/packed.jsonl.gz", body)
    pipeline.read_notifications()

    report = pipeline.report("packed")
    assert report["outcome"] == "rejected"
    assert [error["code"] for error in report["validation_errors"]] == [code]
    assert pipeline.emulator.calls == []
    assert job_of(pipeline, "inbox/packed.jsonl.gz").status == JobStatus.REJECTED
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["rejected"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ((lines_for(2)).decode().encode("utf-16"), "wrong_encoding"),
        (lines_for(1) + b'{"custom_id": "\\ud800", "method": "POST", "url": "/v1/chat/completions", '
         b'"body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}\n', "invalid_unicode"),
        (b"[" + b",".join(json.dumps(chat_line(f"a-{n}")).encode() for n in range(3)) + b"]\n", "json_array"),
        (lines_for(1) + json.dumps(chat_line("s") | {"body": {"model": "m", "messages": [{"role": "user"}],
         "stream": "true"}}).encode() + b"\n", "invalid_stream"),
    ],
    ids=["utf16", "lone-surrogate", "json-array", "stream-string"],
)  # fmt: skip
def test_text_the_api_cannot_take_is_never_billed(pipeline: Pipeline, body: bytes, code: str) -> None:
    pipeline.drop("inbox/text.jsonl", body)
    report = pipeline.report("text")
    assert report["outcome"] == "rejected"
    assert {error["code"] for error in report["validation_errors"]} == {code}
    assert len(report["validation_errors"]) == 1
    assert pipeline.emulator.calls == []


@pytest.mark.parametrize(
    "key", ["inbox//x.jsonl", "inbox/a/./x.jsonl", "inbox/a/../x.jsonl", "inbox/new\nline.jsonl", "inbox/a\tb.jsonl"]
)
def test_every_jsonl_key_under_the_input_prefix_runs_or_gets_a_report(pipeline: Pipeline, key: str) -> None:
    # Given a key that cannot name a results folder safely
    pipeline.drop(key, lines_for(1))
    pipeline.read_notifications()

    # Then it is rejected with a report of its own (under the job id), announced, and nothing is billed
    (event,) = pipeline.finished_events
    detail = event["detail"]
    assert detail["outcome"] == "rejected"
    report_key = detail["outputs"]["report"].removeprefix(f"s3://{BUCKET}/")
    assert report_key == f"outbox/_rejected-keys/{detail['job_id']}/report.json"
    report = json.loads(pipeline.read(report_key))
    assert_matches_schema(report, "report.schema.json")
    assert_matches_schema(detail, "batch-job-finished.schema.json")
    assert report["input"]["key"] == key
    assert [error["code"] for error in report["validation_errors"]] == ["invalid_key"]
    assert "rename it" in report["validation_errors"][0]["message"]
    assert pipeline.emulator.calls == []


def test_a_key_whose_results_would_pass_s3s_key_limit_is_rejected_before_any_api_call(pipeline: Pipeline) -> None:
    key = "inbox/" + "n" * 1010 + ".jsonl"  # 1,022 bytes; its results would need 1,030
    assert len(key.encode()) <= 1024
    pipeline.drop(key, lines_for(1))
    pipeline.read_notifications()
    (event,) = pipeline.finished_events
    report = json.loads(pipeline.read(event["detail"]["outputs"]["report"].removeprefix(f"s3://{BUCKET}/")))
    assert [error["code"] for error in report["validation_errors"]] == ["key_too_long"]
    assert pipeline.emulator.calls == []


@pytest.mark.parametrize("key", ["work/job-1/shards/00000.jsonl", "outbox/x/output.jsonl", "outbox/x.jsonl"])
def test_the_pipeline_never_treats_its_own_writes_as_inputs(pipeline: Pipeline, key: str) -> None:
    # An S3 event for a key the pipeline writes (as if a misconfigured rule let it through)
    pipeline.drop(key, lines_for(1))
    pipeline.run()
    assert pipeline.emulator.calls == []
    assert pipeline.finished_events == []
    assert list(pipeline.services.store.recent_jobs(limit=5)) == []


def test_a_rejected_reupload_leaves_only_its_own_report_in_the_outbox(pipeline: Pipeline) -> None:
    # Given a run of inbox/x.jsonl that wrote its results
    pipeline.drop("inbox/x.jsonl", lines_for(2))
    pipeline.run()
    assert len(pipeline.lines("outbox/x/output.jsonl")) == 2

    # When a bad new version is uploaded
    pipeline.drop("inbox/x.jsonl", b"not json\n")

    # Then outbox/x/ holds that version's files only
    listing = pipeline.s3.list_objects_v2(Bucket=BUCKET, Prefix="outbox/x/").get("Contents", [])
    assert [item["Key"] for item in listing] == ["outbox/x/report.json"]
    assert pipeline.report("x")["outcome"] == "rejected"


def test_twenty_thousand_distinct_api_error_codes_keep_the_job_records_bounded(make_pipeline: Any) -> None:
    # Given an API that fails each of 20,000 lines with a code of its own
    pipeline: Pipeline = make_pipeline()
    pipeline.emulator.faults.line_error_for = lambda custom_id: f"strange_code_{custom_id}"  # type: ignore[method-assign]
    pipeline.drop("inbox/codes.jsonl", lines_for(20_000, "c"))

    pipeline.run(rounds=10)

    # Then the job finishes; its counts by code are bounded, the lines keep their own codes
    report = pipeline.report("codes")
    assert report["counts"] == {"total": 20_000, "succeeded": 0, "failed": 20_000}
    assert len(report["errors_by_code"]) <= 100
    assert sum(report["errors_by_code"].values()) == 20_000
    assert report["errors_by_code"]["other"] > 19_000
    errors = pipeline.lines("outbox/codes/errors.jsonl")
    assert len({line["error"]["code"] for line in errors}) == 20_000


# -- requests that cannot be taken are answered --------------------------------------------------------


def submit_event(detail: Any) -> str:
    return json.dumps({"detail-type": "Submit Batch Job", "source": "my.service", "detail": detail})


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"key": "inbox/x.jsonl"}, "no bucket"),
        ({"bucket": BUCKET}, "no key"),
        ({"bucket": BUCKET, "key": "inbox/missing.jsonl"}, "does not exist"),
        ({"bucket": BUCKET, "key": "inbox/here.jsonl", "version_id": "not-a-version"}, "does not exist"),
        ({"bucket": "someone-elses-bucket", "key": "inbox/here.jsonl"}, "only objects of the stack's bucket"),
        ({"bucket": BUCKET, "key": "outbox/here/output.jsonl"}, "where the pipeline writes"),
        ({"bucket": BUCKET, "key": "exports/data.csv"}, "not a .jsonl"),
    ],
    ids=["no-bucket", "no-key", "missing", "deleted-version", "other-bucket", "own-writes", "not-jsonl"],
)
def test_a_submit_request_that_cannot_be_taken_is_answered_at_once(
    pipeline: Pipeline, detail: dict[str, Any], reason: str
) -> None:
    pipeline.put_input("inbox/here.jsonl", lines_for(1))
    pipeline.put_input("outbox/here/output.jsonl", lines_for(1))
    pipeline.put_input("exports/data.csv", b"a,b\n")

    # When the request arrives: no exception (no retry, nothing dead-lettered)
    pipeline.deliver(submit_event(detail))
    pipeline.read_notifications()

    # Then the sender hears why, by event, and nothing is billed
    (rejected,) = pipeline.rejected_requests
    assert rejected["source"] == "batchdrop"
    assert rejected["detail"]["request"] == detail
    assert reason in rejected["detail"]["reason"]
    assert rejected["detail"]["event_id"]
    assert_matches_schema(rejected["detail"], "batch-job-rejected.schema.json")
    assert pipeline.emulator.calls == []
    assert list(pipeline.services.store.recent_jobs(limit=5)) == []


def test_a_huge_rejected_request_is_echoed_in_part(pipeline: Pipeline) -> None:
    pipeline.deliver(submit_event({"key": "x" * 100_000}))
    pipeline.read_notifications()
    (rejected,) = pipeline.rejected_requests
    assert rejected["detail"]["request"]["truncated"] is True
    assert len(json.dumps(rejected["detail"])) < 4000


# -- races and lost writes -----------------------------------------------------------------------------


def test_a_permanent_upload_failure_is_recorded_at_once_and_frees_its_slot(make_pipeline: Any) -> None:
    # Given an API that refuses the upload for good (413) on the first try
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=1)
    pipeline.emulator.faults.add(Fault.http(413, method="POST", path="/v1/files", times=1))

    pipeline.drop("inbox/big.jsonl", lines_for(2))

    # Then the shard ended at once (no lease left behind, no second upload), its slot back
    (job,) = list(pipeline.services.store.recent_jobs(limit=5))
    (shard,) = pipeline.services.store.get_shards(job.job_id)
    assert shard.failure_code == "batch_create_failed" and "413" in (shard.failure_message or "")
    assert shard.lease_until is None and not shard.holds_slot
    assert pipeline.services.store.slots_in_use() == 0
    pipeline.run()
    assert pipeline.emulator.count_calls("POST", "/v1/files") == 1
    assert pipeline.report("big")["errors_by_code"] == {"batch_create_failed": 2}


def test_a_cancel_during_validation_never_crashes_submit(pipeline: Pipeline) -> None:
    # Given a cancel request that arrives while the file is being validated
    from batchdrop.flow import split

    original = split.validate_and_split

    def validate_then_cancel(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        job = next(pipeline.services.store.recent_jobs(limit=5))
        pipeline.services.store.request_cancel(job.job_id)
        return result

    split.validate_and_split = validate_then_cancel  # type: ignore[assignment]
    try:
        pipeline.drop("inbox/cancelled.jsonl", lines_for(3))  # no StaleRecord raised
    finally:
        split.validate_and_split = original  # type: ignore[assignment]
    pipeline.run()

    # Then the job ends cancelled, without a batch
    assert pipeline.report("cancelled")["outcome"] == "cancelled"
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 0


def test_ten_concurrent_deliveries_of_one_object_make_one_batch_and_no_failure(pipeline: Pipeline) -> None:
    import submit_handler

    from batchdrop.runtime import once_per_object

    obj = pipeline.put_input("inbox/tenfold.jsonl", lines_for(2))
    body = pipeline.object_created_body(obj)
    once = once_per_object(
        lambda job: submit_handler.submit_job(job, pipeline.services), pipeline.services.settings, None
    )
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def deliver() -> None:
        barrier.wait()
        try:
            submit_handler.handle_record(pipeline.sqs_record(body), pipeline.services, once)
        except BaseException as error:  # any failure at all is what this test looks for
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    pipeline.run()
    assert pipeline.report("tenfold")["outcome"] == "succeeded"
