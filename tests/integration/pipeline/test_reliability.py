"""Duplicates, crashes, overlaps, expiry, limits: nothing lost, no second batch, one notification."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from pipeline_harness import BUCKET, Crash, Pipeline, api_calls, chat_line, fail_once, jsonl

from batchdrop.models import ShardState
from batchdrop_tools.emulator import Fault


def lines_for(n: int, prefix: str = "r") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def test_fifty_thousand_and_one_lines_make_two_batches_merged_into_one_output(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline()
    pipeline.drop("inbox/big.jsonl", lines_for(50_001))
    pipeline.run()

    report = pipeline.report("big")
    assert report["outcome"] == "succeeded"
    assert report["counts"] == {"total": 50_001, "succeeded": 50_001, "failed": 0}
    assert [batch["request_counts"]["total"] for batch in report["batches"]] == [50_000, 1]
    assert len(set(pipeline.emulator.batch_ids())) == 2
    output = pipeline.read("outbox/big/output.jsonl").splitlines()
    assert len(output) == 50_001
    assert len({json.loads(line)["custom_id"] for line in output}) == 50_001


def test_duplicate_and_late_events_for_one_object_make_one_job_and_one_batch(pipeline: Pipeline) -> None:
    # Given one object and its event, delivered again with new envelopes, and a Submit Batch Job for it
    obj = pipeline.put_input("inbox/dup.jsonl", lines_for(5))
    for event_id in ("a", "a", "b"):
        pipeline.deliver(pipeline.object_created_body(obj, event_id=event_id))
    submit_event = {
        "detail-type": "Submit Batch Job",
        "source": "my.service",
        "detail": {"bucket": BUCKET, "key": "inbox/dup.jsonl", "version_id": obj["version_id"]},
    }
    pipeline.deliver(json.dumps(submit_event))
    pipeline.run()
    pipeline.deliver(pipeline.object_created_body(obj, event_id="late"))  # after the end
    pipeline.run()

    # Then one upload and one batch at the API, one job, one notification
    calls = api_calls(pipeline.emulator)
    assert calls.count(("POST", "/v1/files")) == 1
    assert calls.count(("POST", "/v1/batches")) == 1
    assert len(pipeline.finished_events) == 1
    assert len(pipeline.sns_messages) == 1


def test_a_reupload_of_the_same_key_is_a_new_job(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/again.jsonl", lines_for(2))
    pipeline.run()
    pipeline.drop("inbox/again.jsonl", lines_for(3, prefix="v2"))
    pipeline.run()

    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2
    assert pipeline.report("again")["counts"]["total"] == 3
    assert len(pipeline.finished_events) == 2


@pytest.mark.parametrize(
    ("step", "predicate"),
    [
        ("after the upload, before its id was recorded", lambda changes: "input_file_id" in changes),
        ("after the create, before the batch id was recorded", lambda changes: "batch_id" in changes),
    ],
)
def test_a_crash_in_submit_resumes_without_a_duplicate(pipeline: Pipeline, step: str, predicate: Any) -> None:
    # Given a submit invocation that dies at one step
    fail_once(pipeline.services.store, "update_shard", Crash(), when=lambda shard, **changes: predicate(changes))
    obj = pipeline.put_input("inbox/crash.jsonl", lines_for(4))
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))

    # When the message comes back after the lease expired, and the schedule runs
    pipeline.clock.advance(2000)
    pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.run()

    # Then the file uploaded or batch created before the crash was adopted, not made again
    calls = api_calls(pipeline.emulator)
    assert calls.count(("POST", "/v1/files")) == 1, step
    assert calls.count(("POST", "/v1/batches")) == 1, step
    assert pipeline.report("crash")["outcome"] == "succeeded"
    assert len(pipeline.finished_events) == 1


def test_a_lost_create_reply_is_adopted_not_repeated(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.add(Fault.reply_lost(method="POST", path="/v1/batches", times=1))
    pipeline.drop("inbox/lost.jsonl", lines_for(3))
    pipeline.run()

    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert len(pipeline.emulator.batch_ids()) == 1
    assert pipeline.report("lost")["outcome"] == "succeeded"


def test_an_expired_batch_keeps_its_partial_results(make_pipeline: Any) -> None:
    # Given a batch so slow that only 4 of 10 lines run within the 24 h window
    # (re-drive off: test_redrive.py shows the six sent again)
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 4.5 / 86_400}, REDRIVE_ENABLED="false")
    pipeline.drop("inbox/slow.jsonl", lines_for(10))

    # When a day and more passes
    pipeline.run(rounds=40, step=3600)

    # Then the four answers are kept and the six that never ran are errors
    report = pipeline.report("slow")
    assert report["outcome"] == "partial"
    assert report["counts"] == {"total": 10, "succeeded": 4, "failed": 6}
    assert report["errors_by_code"] == {"batch_expired": 6}
    assert report["batches"][0]["status"] == "expired"
    assert len(pipeline.lines("outbox/slow/output.jsonl")) == 4
    assert {line["error"]["code"] for line in pipeline.lines("outbox/slow/errors.jsonl")} == {"batch_expired"}


def test_two_overlapping_polls_and_duplicate_collects_announce_once(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/overlap.jsonl", lines_for(6))
    pipeline.clock.advance(60)
    pipeline.emulator.process()
    pipeline.emulator.process()

    # When two poll runs overlap, both seeing the batch end
    barrier = threading.Barrier(2)

    def poll() -> None:
        barrier.wait()
        pipeline.poll()

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # and the collect message is delivered twice, concurrently
    messages = pipeline.sqs.receive_message(QueueUrl=pipeline.collect_queue_url, MaxNumberOfMessages=10)["Messages"]
    bodies = [message["Body"] for message in messages] * (2 if len(messages) == 1 else 1)
    import collect_handler

    collect_threads = [
        threading.Thread(target=collect_handler.handle_record, args=(pipeline.sqs_record(body), pipeline.services))
        for body in bodies
    ]
    for thread in collect_threads:
        thread.start()
    for thread in collect_threads:
        thread.join()
    pipeline.run()

    # Then exactly one Finished event and one SNS message
    assert len(pipeline.finished_events) == 1
    assert len(pipeline.sns_messages) == 1
    assert pipeline.report("overlap")["counts"]["succeeded"] == 6


@pytest.mark.parametrize(
    "key_in_event",
    ["inbox/my file+ü.jsonl", "inbox/my+file%2B%C3%BC.jsonl"],
    ids=["raw-key", "form-encoded-key"],
)
def test_keys_with_spaces_plus_and_unicode(pipeline: Pipeline, key_in_event: str) -> None:
    obj = pipeline.put_input("inbox/my file+ü.jsonl", lines_for(2))
    pipeline.deliver(pipeline.object_created_body(obj, key_in_event=key_in_event))
    pipeline.run()

    report = pipeline.report("my file+ü")
    assert report["outcome"] == "succeeded"
    assert report["input"]["key"] == "inbox/my file+ü.jsonl"
    assert len(pipeline.lines("outbox/my file+ü/output.jsonl")) == 2


@pytest.mark.parametrize(
    "key", ["outbox/x/output.jsonl", "work/job-x/shards/00000.jsonl", "elsewhere/x.jsonl", "inbox/dir/"]
)
def test_keys_that_are_not_inputs_are_ignored(pipeline: Pipeline, key: str) -> None:
    pipeline.drop(key, lines_for(1))
    pipeline.run()

    assert pipeline.emulator.calls == []
    assert pipeline.finished_events == []
    listing = pipeline.s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert [item["Key"] for item in listing] == [key]


def test_failed_lines_make_a_partial_outcome_with_every_line_accounted_for(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-2"})
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"r-5", "r-6"})
    pipeline.drop("inbox/mixed.jsonl", lines_for(8))
    pipeline.run()

    report = pipeline.report("mixed")
    assert report["outcome"] == "partial"
    assert report["counts"] == {"total": 8, "succeeded": 5, "failed": 3}
    assert report["errors_by_code"] == {"invalid_request_error": 2, "rate_limit_exceeded": 1}
    outputs = {line["custom_id"] for line in pipeline.lines("outbox/mixed/output.jsonl")}
    errors = {line["custom_id"] for line in pipeline.lines("outbox/mixed/errors.jsonl")}
    assert outputs.isdisjoint(errors)
    assert outputs | errors == {f"r-{n}" for n in range(1, 9)}


def test_a_create_the_api_refuses_ends_every_line_of_the_shard_as_an_error(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.add(Fault.http(400, method="POST", path="/v1/batches", times=None))
    pipeline.drop("inbox/refused.jsonl", lines_for(3))
    pipeline.run()

    report = pipeline.report("refused")
    assert report["outcome"] == "failed"
    assert report["errors_by_code"] == {"batch_create_failed": 3}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert len(pipeline.lines("outbox/refused/errors.jsonl")) == 3


def test_the_in_flight_limit_holds_shards_back_until_slots_free(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 1 / 60}, MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1
    )
    pipeline.drop("inbox/limited.jsonl", lines_for(6))
    assert len(pipeline.emulator.batch_ids()) == 1  # one slot: the other two shards wait

    most_in_flight = 0
    for _ in range(40):
        pipeline.step(60)
        open_batches = [batch for batch in pipeline.services.api.list_batches() if not batch.is_terminal]
        most_in_flight = max(most_in_flight, len(open_batches))
    pipeline.read_notifications()

    assert most_in_flight == 1
    assert pipeline.services.store.slots_in_use() == 0
    assert len(pipeline.emulator.batch_ids()) == 3
    assert pipeline.report("limited")["counts"] == {"total": 6, "succeeded": 6, "failed": 0}
    assert len(pipeline.submitted_events) == 1
    assert pipeline.submitted_events[0]["detail"]["batch_count"] == 3


def test_an_unset_secret_fails_naming_it_and_the_input_can_be_redriven(pipeline: Pipeline) -> None:
    import boto3

    secrets = boto3.client("secretsmanager", region_name="us-east-1")
    real = secrets.get_secret_value(SecretId=pipeline.services.settings.secret_id)["SecretString"]
    secrets.put_secret_value(
        SecretId=pipeline.services.settings.secret_id, SecretString='{"api_key": "", "project_id": ""}'
    )
    obj = pipeline.put_input("inbox/nokey.jsonl", lines_for(2))

    with pytest.raises(Exception, match="batchdrop/zerogpu"):
        pipeline.deliver(pipeline.object_created_body(obj))
    assert pipeline.emulator.calls == []

    secrets.put_secret_value(SecretId=pipeline.services.settings.secret_id, SecretString=real)
    pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.run()
    assert pipeline.report("nokey")["outcome"] == "succeeded"


def test_the_poller_reads_only_the_sparse_index_and_collected_shards_leave_it(pipeline: Pipeline) -> None:
    calls: list[str] = []
    client = pipeline.services.store._db
    client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    pipeline.drop("inbox/sparse.jsonl", lines_for(2))
    calls.clear()
    pipeline.run()

    assert "Scan" not in calls
    assert list(pipeline.services.store.due_shards(10**12, limit=10)) == []
    shards = pipeline.services.store.get_shards(pipeline.finished_events[0]["detail"]["job_id"])
    assert [shard.state for shard in shards] == [ShardState.COLLECTED]


def submit_event(key: str, version_id: str | None = None) -> str:
    detail = {"bucket": BUCKET, "key": key} | ({"version_id": version_id} if version_id else {})
    return json.dumps({"detail-type": "Submit Batch Job", "source": "my.service", "detail": detail})


def test_a_submit_batch_job_event_submits_an_object_outside_the_inbox(pipeline: Pipeline) -> None:
    # Given an object another service wrote elsewhere in the bucket (no S3 event reaches the pipeline)
    obj = pipeline.put_input("exports/2026/run 1.jsonl", lines_for(3))

    # When that service asks for it by event
    pipeline.deliver(submit_event(obj["key"], obj["version_id"]))
    pipeline.run()

    # Then it runs like a dropped file, its results filed under its own path
    report = pipeline.report("exports/2026/run 1")
    assert report["outcome"] == "succeeded"
    assert report["input"]["key"] == "exports/2026/run 1.jsonl"


@pytest.mark.parametrize("key", ["outbox/a/output.jsonl", "work/job-1/shards/00000.jsonl", "exports/x.csv"])
def test_a_submit_batch_job_event_never_feeds_the_pipeline_its_own_files(pipeline: Pipeline, key: str) -> None:
    pipeline.put_input(key, lines_for(1))
    pipeline.deliver(submit_event(key))
    pipeline.run()

    assert pipeline.emulator.calls == []
    assert pipeline.finished_events == []


def test_an_operator_cancels_a_job_and_keeps_what_already_ran(make_pipeline: Any) -> None:
    # Given a job of two shards, one running slowly and one held back by the in-flight limit
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 1 / 60}, MAX_LINES_PER_BATCH=5, MAX_BATCHES_IN_FLIGHT=1
    )
    pipeline.drop("inbox/cancel me.jsonl", lines_for(10))
    pipeline.clock.advance(150)  # two lines of the first batch have run
    pipeline.emulator.process()
    job_id = next(pipeline.services.store.recent_jobs(limit=5)).job_id

    # When the operator cancels it
    assert pipeline.services.store.request_cancel(job_id) is not None
    pipeline.run(rounds=10, step=30)

    # Then the held shard is never submitted, the running batch is cancelled, and what ran is kept
    report = pipeline.report("cancel me")
    assert report["outcome"] == "cancelled"
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert report["counts"]["total"] == 10
    assert 2 <= report["counts"]["succeeded"] < 5
    assert report["errors_by_code"]["batch_cancelled"] == 10 - report["counts"]["succeeded"]
    assert pipeline.services.store.slots_in_use() == 0
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["cancelled"]


def test_the_api_key_never_reaches_logs_errors_or_reports(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a run that meets API failures on the way (a refused create, then a success)
    from pipeline_harness import API_KEY, PROJECT_ID

    caplog.set_level("DEBUG")
    pipeline.emulator.faults.add(Fault.http(503, method="POST", path="/v1/batches", times=3))
    pipeline.emulator.faults.add(Fault.http(500, method="GET", path="/v1/batches/*", times=1))
    pipeline.drop("inbox/secret.jsonl", lines_for(3))
    pipeline.run()

    # Then neither the key nor the project id appears anywhere it could leak
    captured = capsys.readouterr()
    written = b"".join(
        pipeline.read(item["Key"]) for item in pipeline.s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    ).decode()
    for leak in (captured.out, captured.err, caplog.text, written, json.dumps(pipeline.finished_events)):
        assert API_KEY not in leak
        assert PROJECT_ID not in leak
    assert pipeline.report("secret")["outcome"] == "succeeded"


@pytest.mark.parametrize(
    ("key", "folder", "example"),
    [
        ("inbox/readme.txt", "readme.txt", "inbox/readme.jsonl"),
        ("inbox/team/data.json", "team/data.json", "inbox/team/data.jsonl"),
        ("inbox/export.csv", "export.csv", "inbox/export.jsonl"),
    ],
)
def test_a_file_that_is_not_json_lines_gets_a_rejected_report_naming_the_fix(
    pipeline: Pipeline, key: str, folder: str, example: str
) -> None:
    # Given a file dropped under the input prefix that will never run
    pipeline.drop(key, lines_for(1))

    # Then it is answered at once: a rejected report beside where its results would be, and the notification
    report = pipeline.report(folder)
    assert report["outcome"] == "rejected" and report["input"]["key"] == key
    (problem,) = report["validation_errors"]
    assert problem["code"] == "not_jsonl" and problem["line"] is None
    assert "only .jsonl and .jsonl.gz files are" in problem["message"] and example in problem["message"]
    assert pipeline.emulator.calls == []
    pipeline.read_notifications()
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["rejected"]


def test_the_extension_is_read_in_any_case(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/Shout.JSONL", lines_for(2))
    pipeline.run()
    assert pipeline.report("Shout")["outcome"] == "succeeded"
