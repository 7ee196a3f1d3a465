"""Re-drive of failed lines: which lines go again, the rounds' budget, one set of results, crash safety."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from pipeline_harness import BUCKET, Crash, Pipeline, chat_line, fail_once, jsonl
from testsupport import assert_matches_schema

from batchdrop.flow import redrive
from batchdrop.integrations.zerogpu import LineCategory
from batchdrop.models import JobStatus, Shard
from batchdrop.models import ShardState as State


def lines_for(n: int, prefix: str = "r") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def ids(n: int, prefix: str = "r") -> set[str]:
    return {f"{prefix}-{i}" for i in range(1, n + 1)}


def outcome_files(pipeline: Pipeline, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    output = [line["custom_id"] for line in pipeline.lines(f"outbox/{name}/output.jsonl")]
    return output, pipeline.lines(f"outbox/{name}/errors.jsonl")


def batches_by_shard(pipeline: Pipeline) -> Counter[tuple[str, str, str | None]]:
    """Batches the API holds, by the job, shard and round their metadata names."""
    return Counter(
        (batch.metadata["batchdrop_job_id"], batch.metadata["batchdrop_shard"], batch.metadata.get("batchdrop_round"))
        for batch in pipeline.services.api.list_batches()
    )


def the_job(pipeline: Pipeline) -> Any:
    return next(pipeline.services.store.recent_jobs(limit=1))


def shards_of(pipeline: Pipeline) -> list[Shard]:
    return sorted(pipeline.services.store.get_shards(the_job(pipeline).job_id), key=lambda shard: shard.index)


def test_every_failure_code_has_the_category_the_api_reference_gives() -> None:
    expected = {
        "rate_limit_exceeded": LineCategory.TRANSIENT,
        "internal_error": LineCategory.TRANSIENT,
        "model_error": LineCategory.TRANSIENT,
        "http_429": LineCategory.TRANSIENT,
        "http_503": LineCategory.TRANSIENT,
        "batch_expired": LineCategory.NEVER_RAN,
        "batch_failed": LineCategory.NEVER_RAN,
        "missing_result": LineCategory.NEVER_RAN,
        "insufficient_quota": LineCategory.OPERATIONAL,
        "authentication_error": LineCategory.OPERATIONAL,
        "invalid_request_error": LineCategory.PERMANENT,
        "context_length_exceeded": LineCategory.PERMANENT,
        "http_400": LineCategory.PERMANENT,
        "results_unavailable": LineCategory.PERMANENT,  # it may have run: never billed twice
        "batch_not_found": LineCategory.PERMANENT,
        "some_code_nobody_documented": LineCategory.PERMANENT,
    }
    assert {code: redrive.category_of(code) for code in expected} == expected


def test_transient_failures_heal_in_a_second_round_with_every_line_answered_once(make_pipeline: Any) -> None:
    # Given 30% of 1,000 lines rate-limited on their first attempt only, in shards of 300 lines
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=300)
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", rate=0.3, seed=3, times_per_line=1)

    # When the file is dropped and the schedule runs
    pipeline.drop("inbox/heal.jsonl", lines_for(1000))
    pipeline.run(rounds=30)

    # Then the job succeeded, every line once in output.jsonl, after two rounds
    report = pipeline.report("heal")
    failed_first = report["rounds"][0]["failed"]
    assert 200 < failed_first < 400
    assert report["outcome"] == "succeeded"
    assert report["counts"] == {"total": 1000, "succeeded": 1000, "failed": 0}
    output, errors = outcome_files(pipeline, "heal")
    assert sorted(output) == sorted(ids(1000)) and errors == []
    assert [(r["round"], r["lines"], r["failed"], r["redriven"]) for r in report["rounds"]] == [
        (0, 1000, failed_first, failed_first),
        (1, failed_first, 0, 0),
    ]
    assert report["rounds"][0]["errors_by_code"] == {"rate_limit_exceeded": failed_first}
    assert report["attempts"] == {"1": 1000 - failed_first, "2": failed_first}
    assert (report["retried"], report["recovered"]) == (failed_first, failed_first)
    assert report["errors_by_code"] == {}
    # one batch per shard: four for the input, then the round's (at most 300 lines each)
    batches = batches_by_shard(pipeline)
    round_batches = -(-failed_first // 300)
    assert set(batches.values()) == {1}
    assert sorted((round_ or "0") for _, _, round_ in batches) == ["0"] * 4 + ["1"] * round_batches
    assert [entry.get("round") for entry in report["batches"]] == [None] * 4 + [1] * round_batches
    # announced once, at the true end, with the same figures
    assert len(pipeline.finished_events) == 1
    detail = pipeline.finished_events[0]["detail"]
    assert detail["rounds"] == report["rounds"] and detail["recovered"] == failed_first
    assert_matches_schema(report, "report.schema.json")
    assert_matches_schema(detail, "batch-job-finished.schema.json")
    # and between the rounds, once: `Batch Job Round Finished`
    (between,) = pipeline.round_events
    assert between["detail"]["round"] == 0 and between["detail"]["next_round"] == 1
    assert between["detail"]["lines_redriven"] == failed_first
    assert between["detail"]["next_round_batches"] == round_batches
    assert between["detail"]["succeeded_so_far"] == 1000 - failed_first
    assert between["detail"]["event_id"] == f"{report['job_id']}:round-0"
    assert_matches_schema(between["detail"], "batch-job-round-finished.schema.json")
    assert pipeline.idle() and pipeline.services.store.slots_in_use() == 0


def test_permanent_failures_end_the_job_partial_after_one_round(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.line_errors("invalid_request_error", rate=0.3, seed=3)
    pipeline.drop("inbox/wrong.jsonl", lines_for(100))
    pipeline.run(rounds=30)

    report = pipeline.report("wrong")
    assert report["outcome"] == "partial"
    failed = report["counts"]["failed"]
    assert failed > 0 and report["errors_by_code"] == {"invalid_request_error": failed}
    assert len(report["rounds"]) == 1 and report["retried"] == 0 and report["attempts"] == {"1": 100}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    pipeline.read_notifications()
    assert pipeline.round_events == []  # no round followed


def test_the_round_budget_ends_the_job_with_each_line_in_one_file_and_its_last_error(make_pipeline: Any) -> None:
    # Given two lines that are rate-limited however often they are sent, and one wrong line
    pipeline: Pipeline = make_pipeline(MAX_REDRIVE_ROUNDS=2)
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-2", "r-7"})
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"r-5"})
    pipeline.drop("inbox/stubborn.jsonl", lines_for(10))
    pipeline.run(rounds=40)

    # Then it ends after the first round and two re-drives: partial, three batches, the rest answered
    report = pipeline.report("stubborn")
    assert report["outcome"] == "partial"
    assert [(r["round"], r["lines"]) for r in report["rounds"]] == [(0, 10), (1, 2), (2, 2)]
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 3
    output, errors = outcome_files(pipeline, "stubborn")
    assert sorted(line["custom_id"] for line in errors) == ["r-2", "r-5", "r-7"]
    assert set(output) | {line["custom_id"] for line in errors} == ids(10) and len(output) == 7
    assert report["counts"] == {"total": 10, "succeeded": 7, "failed": 3}
    assert report["errors_by_code"] == {"invalid_request_error": 1, "rate_limit_exceeded": 2}
    assert report["attempts"] == {"1": 8, "3": 2}


def test_re_drive_can_be_switched_off(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(REDRIVE_ENABLED="false")
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"}, times_per_line=1)
    pipeline.drop("inbox/off.jsonl", lines_for(3))
    pipeline.run()

    report = pipeline.report("off")
    assert report["outcome"] == "partial" and report["errors_by_code"] == {"rate_limit_exceeded": 1}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1


def test_no_round_starts_past_the_job_deadline(make_pipeline: Any) -> None:
    # Given a backoff that would start the round after the job's deadline
    pipeline: Pipeline = make_pipeline(JOB_DEADLINE_HOURS=1, REDRIVE_BACKOFF_SECONDS=7200)
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"}, times_per_line=1)
    pipeline.drop("inbox/late.jsonl", lines_for(3))
    pipeline.run()

    assert pipeline.report("late")["errors_by_code"] == {"rate_limit_exceeded": 1}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1


def test_operational_failures_are_not_re_driven(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.line_errors("insufficient_quota", custom_ids={"r-2", "r-3"})
    pipeline.drop("inbox/quota.jsonl", lines_for(4))
    pipeline.run()

    report = pipeline.report("quota")
    assert report["errors_by_code"] == {"insufficient_quota": 2}
    assert len(report["rounds"]) == 1
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert redrive.awaiting_account_fix(report["errors_by_code"]) == 2


def test_an_expired_batch_s_unrun_lines_are_re_driven_and_succeed(make_pipeline: Any) -> None:
    # Given an API that runs one line every 3 hours: 8 of 10 lines run before the 24-hour window ends
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 1 / 10_800}, POLL_MAX_INTERVAL_SECONDS=3600
    )
    pipeline.drop("inbox/slow.jsonl", lines_for(10))
    pipeline.run(rounds=60, step=3600)

    report = pipeline.report("slow")
    assert report["rounds"][0]["errors_by_code"] == {"batch_expired": 2}
    assert report["outcome"] == "succeeded"
    assert report["counts"] == {"total": 10, "succeeded": 10, "failed": 0}
    assert report["attempts"] == {"1": 8, "2": 2}
    output, errors = outcome_files(pipeline, "slow")
    assert sorted(output) == sorted(ids(10)) and errors == []


def test_a_cancelled_job_is_never_re_driven(pipeline: Pipeline) -> None:
    # Given a job whose first round ended with a retryable failure, waiting for its re-drive
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"}, times_per_line=1)
    pipeline.drop("inbox/cancel.jsonl", lines_for(3))
    pipeline.step()
    pipeline.step()
    job = the_job(pipeline)
    assert job.redrive_due_at is not None and job.status == JobStatus.SUBMITTING

    # When it is cancelled before the round starts
    pipeline.services.store.request_cancel(job.job_id)
    pipeline.run()

    # Then it ends cancelled with its one round
    report = pipeline.report("cancel")
    assert report["outcome"] == "cancelled" and len(report["rounds"]) == 1
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert pipeline.idle()


def crash_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, when: Any = lambda *_, **__: True) -> None:
    """`target.name` raises Crash the first time `when` holds for its arguments (undone after the test)."""
    original = getattr(target, name)
    pending = [Crash()]

    def crashing(*args: Any, **kwargs: Any) -> Any:
        if pending and when(*args, **kwargs):
            raise pending.pop()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, crashing)


def committing_a_round(job_id: str, change: Any, current: Any = None) -> bool:
    return current is not None and current.round_claimed_at is not None


@pytest.mark.parametrize(
    "crash_at",
    ["choosing the lines", "storing a round shard", "recording the shards", "committing the round"],
)
def test_a_crash_while_cutting_a_round_never_makes_a_duplicate_batch(
    make_pipeline: Any, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=4)
    pipeline.emulator.faults.line_errors("internal_error", custom_ids={"r-1", "r-2", "r-6", "r-9"}, times_per_line=1)
    store = pipeline.services.store
    if crash_at == "choosing the lines":
        crash_once(monkeypatch, redrive, "_send_found_lines")
    elif crash_at == "storing a round shard":
        crash_once(monkeypatch, redrive.s3io, "upload_file", lambda *args, **_: args[3].endswith("/00003.jsonl"))
    elif crash_at == "recording the shards":
        crash_once(monkeypatch, store, "put_shards", lambda shards: any(shard.round for shard in shards))
    else:
        crash_once(monkeypatch, store, "modify_job", committing_a_round)
    pipeline.drop("inbox/crash.jsonl", lines_for(10))

    crashed = False
    for _ in range(60):
        try:
            pipeline.step()
        except Crash:
            crashed = True
        if pipeline.idle():
            break
    pipeline.read_notifications()

    assert crashed
    report = pipeline.report("crash")
    assert report["outcome"] == "succeeded" and report["counts"]["succeeded"] == 10
    assert set(batches_by_shard(pipeline).values()) == {1}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 3 + 1
    output, errors = outcome_files(pipeline, "crash")
    assert sorted(output) == sorted(ids(10)) and errors == []
    assert len(pipeline.finished_events) == 1


def test_overlapping_finalizes_start_a_round_once(pipeline: Pipeline) -> None:
    # Given a second invocation that finalizes the job while the first is cutting its round
    pipeline.emulator.faults.line_errors("model_error", custom_ids={"r-2"}, times_per_line=1)
    from batchdrop.flow.completion import finalize_job

    overlapped: list[Any] = []
    original = redrive._RoundCutter.finish

    def finish_after_another_finalize(cutter: Any) -> Any:
        if not overlapped:
            overlapped.append(finalize_job(cutter._job.job_id, pipeline.services))
        return original(cutter)

    redrive._RoundCutter.finish = finish_after_another_finalize  # type: ignore[method-assign]
    try:
        pipeline.drop("inbox/overlap.jsonl", lines_for(3))
        pipeline.run()
    finally:
        redrive._RoundCutter.finish = original  # type: ignore[method-assign]

    assert overlapped and overlapped[0].round == 0  # the overlapping one did nothing
    assert [shard.round for shard in shards_of(pipeline)] == [0, 1]
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2
    assert pipeline.report("overlap")["outcome"] == "succeeded"


def test_an_uncommitted_round_shard_is_never_submitted(pipeline: Pipeline) -> None:
    # Given a round whose cutting died after recording its shard, before the job committed it
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"}, times_per_line=1)
    store = pipeline.services.store
    fail_once(store, "modify_job", Crash(), when=committing_a_round)
    pipeline.drop("inbox/uncommitted.jsonl", lines_for(2))
    with pytest.raises(Crash):
        for _ in range(20):
            pipeline.step()
    job = the_job(pipeline)
    assert job.round == 0 and [shard.round for shard in shards_of(pipeline)] == [0, 1]

    # When the poller hands the waiting shard over before the cutting is re-run
    pipeline.step(1)

    # Then it is refused (no second batch); the re-run commits the round, which then runs once
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    pipeline.run(rounds=40)
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2
    assert pipeline.report("uncommitted")["outcome"] == "succeeded"
    assert [shard.state for shard in shards_of(pipeline)] == [State.COLLECTED, State.COLLECTED]


def test_a_round_reads_its_lines_from_the_work_copy_unchanged(pipeline: Pipeline) -> None:
    # Given lines with text that JSON could write in other ways (escapes, non-ASCII, spacing)
    raw = [
        b'{"custom_id": "a",  "method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":'
        b'[{"role":"user","content":"caf\\u00e9 \xc3\xa9t\xc3\xa9 \\"quoted\\""}]}}',
        json.dumps(chat_line("b")).encode(),
    ]
    pipeline.emulator.faults.line_errors("internal_error", custom_ids={"a"}, times_per_line=1)
    pipeline.drop("inbox/exact.jsonl", b"\n".join(raw) + b"\n")
    pipeline.run()

    round_shard = shards_of(pipeline)[1]
    assert round_shard.round == 1
    assert pipeline.read(round_shard.work_key) == raw[0] + b"\n"
    assert pipeline.report("exact")["outcome"] == "succeeded"
    assert pipeline.s3.head_object(Bucket=BUCKET, Key=round_shard.work_key)["ContentLength"] == len(raw[0]) + 1


def test_quota_failures_wait_and_a_retry_by_hand_recovers_them_once_the_account_is_fixed(pipeline: Pipeline) -> None:
    # Given a job that ended partial because the quota ran out for two lines
    pipeline.emulator.faults.line_errors("insufficient_quota", custom_ids={"r-2", "r-3"})
    pipeline.drop("inbox/topup.jsonl", lines_for(5))
    pipeline.run()
    assert pipeline.report("topup")["outcome"] == "partial"
    job = the_job(pipeline)

    # When the retry is asked without --all-failed, it is refused, saying what would help
    with pytest.raises(redrive.RetryRefused, match="--all-failed"):
        redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now())

    # When the account is topped up and the retry is asked with --all-failed
    pipeline.emulator.faults.clear()
    _, lines = redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now(), all_failed=True)
    pipeline.run()

    # Then the two lines go again, once, and the job's files and report are written again
    assert lines == 2
    report = pipeline.report("topup")
    assert report["outcome"] == "succeeded" and report["counts"] == {"total": 5, "succeeded": 5, "failed": 0}
    assert report["attempts"] == {"1": 3, "2": 2} and report["recovered"] == 2
    output, errors = outcome_files(pipeline, "topup")
    assert sorted(output) == sorted(ids(5)) and errors == []
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2
    assert [
        (e["detail"]["event_id"], e["detail"]["outcome"], e["detail"]["round"]) for e in pipeline.finished_events
    ] == [
        (f"{job.job_id}:finished", "partial", 0),
        (f"{job.job_id}:finished:retry-1", "succeeded", 1),
    ]
    assert len(pipeline.sns_messages) == 2
    # a job that has nothing left to retry says so, without pointing at --all-failed
    with pytest.raises(redrive.RetryRefused, match="no failed lines") as refused:
        redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now())
    assert "--all-failed" not in str(refused.value)


def test_a_retry_by_codes_takes_only_those_codes_from_any_round(pipeline: Pipeline) -> None:
    # Given a job with a permanent failure and a quota failure
    pipeline.emulator.faults.line_errors("insufficient_quota", custom_ids={"r-1"})
    pipeline.emulator.faults.line_errors("context_length_exceeded", custom_ids={"r-4"}, times_per_line=1)
    pipeline.drop("inbox/codes.jsonl", lines_for(4))
    pipeline.run()
    job = the_job(pipeline)

    # When only context_length_exceeded is retried (the operator shortened nothing: it now succeeds)
    redrive.request_retry(
        pipeline.services.store, job.job_id, now=pipeline.services.now(), codes=["context_length_exceeded"]
    )
    pipeline.run()

    report = pipeline.report("codes")
    assert report["errors_by_code"] == {"insufficient_quota": 1}
    assert [r["lines"] for r in report["rounds"]] == [4, 1]
    _, errors = outcome_files(pipeline, "codes")
    assert [line["custom_id"] for line in errors] == ["r-1"]


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"job_id": "job-00000000000000000000000000000000"}, "no job"),
        ({"codes": ["x"]}, "no job_id"),
        ({"job_id": "x", "codes": "rate_limit_exceeded"}, "codes must be a list"),
    ],
)
def test_a_retry_event_that_cannot_be_taken_is_answered_with_batch_job_rejected(
    pipeline: Pipeline, detail: dict[str, Any], reason: str
) -> None:
    pipeline.deliver(json.dumps({"detail-type": "Retry Batch Job", "source": "other.service", "detail": detail}))
    pipeline.read_notifications()

    (rejected,) = pipeline.rejected_requests
    assert reason in rejected["detail"]["reason"] and rejected["detail"]["request"] == detail


def test_a_retry_event_re_drives_the_failed_lines(pipeline: Pipeline) -> None:
    pipeline.emulator.faults.line_errors("insufficient_quota", custom_ids={"r-1"})
    pipeline.drop("inbox/event.jsonl", lines_for(2))
    pipeline.run()
    pipeline.emulator.faults.clear()
    job = the_job(pipeline)

    detail = {"job_id": job.job_id, "all_failed": True}
    assert_matches_schema(detail, "retry-batch-job.schema.json")
    pipeline.deliver(json.dumps({"detail-type": "Retry Batch Job", "source": "other.service", "detail": detail}))
    pipeline.run()

    assert pipeline.report("event")["outcome"] == "succeeded"
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["partial", "succeeded"]
    for event in pipeline.finished_events:
        assert_matches_schema(event["detail"], "batch-job-finished.schema.json")


def test_a_retry_after_the_work_copies_expired_takes_its_lines_from_the_input(make_pipeline: Any) -> None:
    # Given a job whose line r-1 failed in both of its rounds (one re-drive), and every work copy expired
    pipeline: Pipeline = make_pipeline(MAX_REDRIVE_ROUNDS=1)
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"}, times_per_line=2)
    pipeline.drop("inbox/aged.jsonl", lines_for(6))
    pipeline.run()
    report = pipeline.report("aged")
    assert report["outcome"] == "partial" and len(report["rounds"]) == 2
    listing = pipeline.s3.list_object_versions(Bucket=BUCKET, Prefix="work/")
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        if "/shards/" in entry["Key"]:
            pipeline.s3.delete_object(Bucket=BUCKET, Key=entry["Key"], VersionId=entry["VersionId"])

    # When the operator retries it
    job = the_job(pipeline)
    redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now())
    pipeline.run()

    # Then the line is found in the input, byte for byte, and answered on its third attempt
    report = pipeline.report("aged")
    assert report["outcome"] == "succeeded" and report["counts"] == {"total": 6, "succeeded": 6, "failed": 0}
    assert report["attempts"] == {"1": 5, "3": 1}
    output, errors = outcome_files(pipeline, "aged")
    assert sorted(output) == sorted(ids(6)) and errors == []


def expire_work_prefix(pipeline: Pipeline) -> None:
    """Everything under the work prefix gone, every version (as WorkRetentionDays does)."""
    listing = pipeline.s3.list_object_versions(Bucket=BUCKET, Prefix="work/")
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        pipeline.s3.delete_object(Bucket=BUCKET, Key=entry["Key"], VersionId=entry["VersionId"])


def retry_by_hand(pipeline: Pipeline) -> None:
    job = the_job(pipeline)
    redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now(), s3=pipeline.s3)
    pipeline.run()


def test_retries_after_every_working_file_expired_cut_them_from_the_merged_files(make_pipeline: Any) -> None:
    # Given a job of three shards whose lines r-2 and r-7 fail their first two attempts and r-5 for good,
    # with its files at the API deleted once it ends (so nothing could be exported from there again)
    pipeline: Pipeline = make_pipeline(REDRIVE_ENABLED="false", MAX_LINES_PER_BATCH=4, DELETE_PROVIDER_FILES="true")
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"r-5"})
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-2", "r-7"}, times_per_line=2)
    pipeline.drop("inbox/aged.jsonl", lines_for(10))
    pipeline.run()
    first_output = {line["custom_id"]: line for line in pipeline.lines("outbox/aged/output.jsonl")}
    assert sorted(first_output) == sorted(ids(10) - {"r-2", "r-5", "r-7"})

    # When everything under the work prefix expires, the job is retried, that expires again, and it is
    # retried once more
    expire_work_prefix(pipeline)
    retry_by_hand(pipeline)
    assert pipeline.report("aged")["counts"] == {"total": 10, "succeeded": 7, "failed": 3}
    expire_work_prefix(pipeline)
    retry_by_hand(pipeline)

    # Then the two lines are answered on their third attempt; every other line is as it was, once
    report = pipeline.report("aged")
    assert report["outcome"] == "partial" and report["counts"] == {"total": 10, "succeeded": 9, "failed": 1}
    assert report["errors_by_code"] == {"invalid_request_error": 1}
    output, errors = outcome_files(pipeline, "aged")
    assert sorted(output) == sorted(ids(10) - {"r-5"}) and len(output) == 9
    assert [line["custom_id"] for line in errors] == ["r-5"]
    final_output = {line["custom_id"]: line for line in pipeline.lines("outbox/aged/output.jsonl")}
    assert all(final_output[custom_id] == line for custom_id, line in first_output.items())
    assert len(report["rounds"]) == 3 and report["attempts"]["3"] == 2


def test_a_retry_after_the_working_files_expired_and_the_outbox_changed_is_refused_naming_why(
    make_pipeline: Any,
) -> None:
    # Given a finished job with a retryable failure, everything under the work prefix expired, and its
    # errors.jsonl edited since it ended
    pipeline: Pipeline = make_pipeline(REDRIVE_ENABLED="false")
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"r-1"})
    pipeline.drop("inbox/expired.jsonl", lines_for(3))
    pipeline.run()
    expire_work_prefix(pipeline)
    pipeline.s3.put_object(Bucket=BUCKET, Key="outbox/expired/errors.jsonl", Body=b"")
    job = the_job(pipeline)

    # Then a retry is refused with the reason and the fix, and the job stays as it ended
    with pytest.raises(redrive.RetryRefused, match="working files have expired") as refused:
        redrive.request_retry(pipeline.services.store, job.job_id, now=pipeline.services.now(), s3=pipeline.s3)
    assert "upload the input again" in str(refused.value) and "WorkRetentionDays" in str(refused.value)
    assert the_job(pipeline).status == JobStatus.FINISHED


def test_a_merged_layout_that_cannot_be_kept_never_stops_the_job_s_end(pipeline: Pipeline, monkeypatch: Any) -> None:
    # Given a store that cannot keep the merged files' layout
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ValueError("the merged layout is 400001 bytes gzipped, over 358400")

    monkeypatch.setattr(pipeline.services.store, "put_merged", refuse)

    # When a job ends
    pipeline.drop("inbox/plain.jsonl", lines_for(3))
    pipeline.run()

    # Then it ends as ever, with its files and report
    assert pipeline.report("plain")["outcome"] == "succeeded"
    assert sorted(outcome_files(pipeline, "plain")[0]) == sorted(ids(3))
    assert pipeline.services.store.get_merged(the_job(pipeline).job_id) is None
