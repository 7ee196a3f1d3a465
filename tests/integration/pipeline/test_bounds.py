"""Nothing is polled, retried or waited on forever: each state a shard can be in has a bound, after which
the shard ends with a code that says why, the job ends with a report, and nobody looks at DynamoDB.
Each test here stalled for good (or retried without end) before its bound existed."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl

from batchdrop.integrations.zerogpu import Batch
from batchdrop.models import JobStatus, ShardState
from batchdrop_tools.emulator import Fault


def lines_for(n: int, prefix: str = "b") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def only_shard(pipeline: Pipeline) -> Any:
    (job,) = list(pipeline.services.store.recent_jobs(limit=5))
    (shard,) = pipeline.services.store.get_shards(job.job_id)
    return shard


def error_codes(pipeline: Pipeline, name: str) -> set[str]:
    return {line["error"]["code"] for line in pipeline.lines(f"outbox/{name}/errors.jsonl")}


def test_a_batch_the_api_answers_404_for_ends_after_the_grace_and_the_job_finishes(pipeline: Pipeline) -> None:
    # Given a batch that the API stops knowing (lost, deleted, or the key now belongs to another project)
    pipeline.drop("inbox/lost.jsonl", lines_for(3))
    batch_id = only_shard(pipeline).batch_id
    pipeline.emulator.faults.add(Fault.http(404, method="GET", path=f"/v1/batches/{batch_id}", times=None))

    # When the schedule runs for two hours
    rounds = pipeline.run(rounds=120, step=60)

    # Then after BATCH_NOT_FOUND_GRACE_MINUTES (60) the shard ends, its lines with their own code
    assert rounds < 70
    report = pipeline.report("lost")
    assert report["outcome"] == "failed"
    assert report["errors_by_code"] == {"batch_not_found": 3}
    assert report["batches"][0]["failure"]["code"] == "batch_not_found"
    assert "404" in report["batches"][0]["failure"]["message"]
    assert error_codes(pipeline, "lost") == {"batch_not_found"}
    assert pipeline.emulator.count_calls("GET", f"/v1/batches/{batch_id}") <= 70
    assert pipeline.services.store.slots_in_use() == 0
    assert pipeline.idle()


def test_a_result_file_the_api_answers_404_for_is_collected_without_it_after_the_grace(pipeline: Pipeline) -> None:
    # Given a batch that completed, whose output file the API no longer hands over
    pipeline.drop("inbox/gone.jsonl", lines_for(4))
    pipeline.clock.advance(60)
    pipeline.emulator.process()
    batch = pipeline.services.api.retrieve_batch(only_shard(pipeline).batch_id)
    assert batch.output_file_id is not None
    pipeline.emulator.engine.delete_file(batch.output_file_id)  # deleted at the API, by someone else

    # When the schedule runs for three hours
    pipeline.run(rounds=200, step=60)

    # Then the lines it held end as results_unavailable, and the job finishes
    report = pipeline.report("gone")
    assert report["counts"] == {"total": 4, "succeeded": 0, "failed": 4}
    assert report["errors_by_code"] == {"results_unavailable": 4}
    assert error_codes(pipeline, "gone") == {"results_unavailable"}
    assert len(pipeline.finished_events) == 1
    assert pipeline.idle()


def test_a_batch_that_never_ends_is_cancelled_at_its_deadline(make_pipeline: Any) -> None:
    # Given an API that keeps a batch in_progress for good (it should expire after 24 hours)
    pipeline: Pipeline = make_pipeline(REDRIVE_ENABLED="false")  # the first round's bound, not a re-drive
    pipeline.drop("inbox/stuck.jsonl", lines_for(2))
    api = pipeline.services.api
    retrieve = api.retrieve_batch

    def stuck(batch_id: str) -> Batch:
        return retrieve(batch_id).model_copy(
            update={"status": "in_progress", "output_file_id": None, "error_file_id": None}
        )

    api.retrieve_batch = stuck  # type: ignore[method-assign]

    # When more than BATCH_DEADLINE_HOURS (26) pass
    pipeline.run(rounds=60, step=1800)

    # Then the batch is cancelled and the shard ends as batch_timed_out
    report = pipeline.report("stuck")
    assert report["errors_by_code"] == {"batch_timed_out": 2}
    assert report["batches"][0]["failure"]["code"] == "batch_timed_out"
    assert pipeline.emulator.count_calls("POST", f"/v1/batches/{report['batches'][0]['batch_id']}/cancel") == 1
    assert pipeline.idle()


def test_a_batch_the_api_cannot_be_asked_about_ends_at_its_deadline(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(REDRIVE_ENABLED="false")  # the first round's bound, not a re-drive
    pipeline.drop("inbox/dark.jsonl", lines_for(2))
    pipeline.emulator.faults.add(Fault.http(503, method="GET", path="/v1/batches/*", times=None))

    pipeline.run(rounds=60, step=1800)

    report = pipeline.report("dark")
    assert report["errors_by_code"] == {"batch_timed_out": 2}
    assert pipeline.idle()


def test_a_shard_that_waits_for_a_slot_past_its_bound_ends_as_wait_timed_out(make_pipeline: Any) -> None:
    # Given one slot, taken by a batch that runs for days, and a second job waiting behind it
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 1 / 36000},
        MAX_BATCHES_IN_FLIGHT=1,
        SHARD_WAIT_LIMIT_HOURS=2,
        REDRIVE_ENABLED="false",  # the first round's bound, not a re-drive
    )
    pipeline.drop("inbox/long.jsonl", lines_for(5, "long"))
    pipeline.drop("inbox/behind.jsonl", lines_for(3, "behind"))

    # When three hours pass
    for _ in range(7):
        pipeline.step(1800)
    pipeline.read_notifications()

    # Then the waiting job ends (no batch was made for it), and the running one is untouched
    report = pipeline.report("behind")
    assert report["errors_by_code"] == {"wait_timed_out": 3}
    assert "MaxBatchesInFlight" in report["batches"][0]["failure"]["message"]
    assert error_codes(pipeline, "behind") == {"wait_timed_out"}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert [event["detail"]["input"]["key"] for event in pipeline.finished_events] == ["inbox/behind.jsonl"]


def test_a_submission_that_keeps_failing_ends_at_its_bound_and_gives_its_slot_back(make_pipeline: Any) -> None:
    # Given an account out of quota (an operational failure: retried, not ended at once)
    pipeline: Pipeline = make_pipeline(SUBMIT_RETRY_LIMIT_HOURS=1)
    pipeline.emulator.faults.add(
        Fault.http(429, method="POST", path="/v1/files", times=None, error_type="insufficient_quota")
    )
    pipeline.drop("inbox/broke.jsonl", lines_for(2))
    assert only_shard(pipeline).failure_code == "insufficient_quota"

    # When two hours pass
    pipeline.run(rounds=40, step=300)

    # Then the shard ends as batch_create_failed, naming the last failure, and its slot is free
    report = pipeline.report("broke")
    assert report["errors_by_code"] == {"batch_create_failed": 2}
    assert "insufficient_quota" in report["batches"][0]["failure"]["message"]
    assert pipeline.services.store.slots_in_use() == 0
    assert 2 <= pipeline.emulator.count_calls("POST", "/v1/files") <= 20


def test_a_shard_collect_never_takes_is_ended_by_the_poller(make_pipeline: Any) -> None:
    # Given collect requests that are all lost (collect keeps dying: its messages end in the DLQ)
    pipeline: Pipeline = make_pipeline(COLLECT_RETRY_LIMIT_HOURS=1)
    pipeline.drop("inbox/orphan.jsonl", lines_for(2))
    for _ in range(12):
        pipeline.clock.advance(900)
        pipeline.emulator.process()
        pipeline.poll()
        while messages := pipeline.sqs.receive_message(QueueUrl=pipeline.collect_queue_url).get("Messages"):
            for message in messages:  # lost
                pipeline.sqs.delete_message(QueueUrl=pipeline.collect_queue_url, ReceiptHandle=message["ReceiptHandle"])

    # When the poller runs past COLLECT_RETRY_LIMIT_HOURS plus its slack, and collect works again
    pipeline.run(rounds=10, step=900)

    # Then the shard was ended by the poller, its lines counted as collect_failed, and the job finished
    report = pipeline.report("orphan")
    assert report["counts"] == {"total": 2, "succeeded": 0, "failed": 2}
    assert report["errors_by_code"] == {"collect_failed": 2}
    assert only_shard(pipeline).state == ShardState.COLLECTED
    assert pipeline.idle()


def test_every_bound_is_a_parameter_with_a_documented_default() -> None:
    from batchdrop.settings import Settings
    from batchdrop_tools.local.template import find_template, load_template

    template = load_template(find_template())
    readme = (find_template().parent / "README.md").read_text()
    bounds = {
        "ShardWaitLimitHours": "SHARD_WAIT_LIMIT_HOURS",
        "SubmitRetryLimitHours": "SUBMIT_RETRY_LIMIT_HOURS",
        "BatchDeadlineHours": "BATCH_DEADLINE_HOURS",
        "BatchNotFoundGraceMinutes": "BATCH_NOT_FOUND_GRACE_MINUTES",
        "CollectRetryLimitHours": "COLLECT_RETRY_LIMIT_HOURS",
        "MaxInputBytes": "MAX_INPUT_BYTES",
        "MaxInputLines": "MAX_INPUT_LINES",
        "MaxBatchesPerInput": "MAX_BATCHES_PER_INPUT",
        "MaxRedriveRounds": "MAX_REDRIVE_ROUNDS",
        "RedriveBackoffSeconds": "REDRIVE_BACKOFF_SECONDS",
        "JobDeadlineHours": "JOB_DEADLINE_HOURS",
        "StuckAfterMinutes": "STUCK_AFTER_MINUTES",
        "ExpiryWarningHours": "EXPIRY_WARNING_HOURS",
        "ExpiryWarningDoneFraction": "EXPIRY_WARNING_DONE_FRACTION",
    }
    fields = {field.alias: field for field in Settings.model_fields.values()}
    for parameter, variable in bounds.items():
        default = template["Parameters"][parameter]["Default"]
        assert float(default) == float(fields[variable].default), parameter
        assert template["Globals"]["Function"]["Environment"]["Variables"][variable] == {"Ref": parameter}
        assert f"`{parameter}`" in readme, parameter


def test_a_job_whose_announcement_claimant_died_is_finished_by_the_sweep(pipeline: Pipeline) -> None:
    # Given collect dying right after it claimed the announcement (before any result was written)
    from pipeline_harness import Crash, fail_once

    from batchdrop.flow import completion

    fail_once(completion, "_write_results", Crash())
    pipeline.drop("inbox/claimed.jsonl", lines_for(2))
    pipeline.clock.advance(60)
    pipeline.emulator.process()
    pipeline.poll()
    (message,) = pipeline.sqs.receive_message(QueueUrl=pipeline.collect_queue_url)["Messages"]
    import collect_handler

    with contextlib.suppress(Crash):
        collect_handler.handle_record(pipeline.sqs_record(message["Body"]), pipeline.services)
    # and its message redelivered within the claim's lease (the local stack retries after 5 s)
    collect_handler.handle_record(pipeline.sqs_record(message["Body"]), pipeline.services)
    written = pipeline.s3.list_objects_v2(Bucket=BUCKET, Prefix="outbox/claimed/").get("Contents", [])
    assert [item["Key"] for item in written] in ([], ["outbox/claimed/status.json"])  # only the poller's progress

    # When the schedule runs past the lease
    pipeline.run(rounds=30, step=120)

    # Then the job is finished after all: results, report, one event, one message
    report = pipeline.report("claimed")
    assert report["counts"] == {"total": 2, "succeeded": 2, "failed": 0}
    assert len(pipeline.lines("outbox/claimed/output.jsonl")) == 2
    assert len(pipeline.finished_events) == 1 and len(pipeline.sns_messages) == 1
    job = pipeline.services.store.get_job(report["job_id"])
    assert job is not None and job.status == JobStatus.FINISHED and job.notified_at is not None
    assert pipeline.idle()


def test_a_failure_after_claiming_gives_the_claim_back_so_the_retry_finishes_at_once(pipeline: Pipeline) -> None:
    from pipeline_harness import fail_once

    from batchdrop.integrations import s3io

    fail_once(s3io, "put_json", RuntimeError("S3 is slow today"), when=lambda s3, bucket, key, doc: "report" in key)
    pipeline.drop("inbox/retry.jsonl", lines_for(2))
    pipeline.clock.advance(60)
    pipeline.emulator.process()
    pipeline.poll()
    (message,) = pipeline.sqs.receive_message(QueueUrl=pipeline.collect_queue_url)["Messages"]
    import collect_handler

    record = pipeline.sqs_record(message["Body"])
    with contextlib.suppress(RuntimeError):
        collect_handler.handle_record(record, pipeline.services)
    collect_handler.handle_record(record, pipeline.services)  # the redelivery, seconds later
    pipeline.read_notifications()

    assert pipeline.report("retry")["outcome"] == "succeeded"
    assert len(pipeline.finished_events) == 1


def test_announcements_carry_a_stable_id_to_deduplicate_on(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/ids.jsonl", lines_for(2))
    pipeline.run()
    (finished,) = pipeline.finished_events
    (submitted,) = pipeline.submitted_events
    job_id = finished["detail"]["job_id"]
    assert finished["detail"]["event_id"] == f"{job_id}:finished"
    assert submitted["detail"]["event_id"] == f"{job_id}:submitted"
    (message,) = pipeline.sns_messages
    assert message["MessageAttributes"]["event_id"]["Value"] == f"{job_id}:finished"


def test_the_poller_polls_a_queue_of_jobs_it_found_whatever_came_first(pipeline: Pipeline) -> None:
    # A stale FINISHING entry of a job already notified is taken out by the sweep, not looped on
    pipeline.drop("inbox/done.jsonl", lines_for(1))
    pipeline.run()
    job = next(pipeline.services.store.recent_jobs(limit=5))
    pipeline.services.store.update_job(job, sweep_at=pipeline.clock.now())
    pipeline.run(rounds=5)
    assert pipeline.idle()
    assert len(pipeline.finished_events) == 1


def test_a_job_s_cancel_takes_its_waiting_shards_out_of_the_queue(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 1 / 600}, MAX_BATCHES_IN_FLIGHT=1, MAX_LINES_PER_BATCH=1
    )
    pipeline.drop("inbox/first.jsonl", lines_for(3, "f"))
    store = pipeline.services.store
    job = next(store.recent_jobs(limit=5))
    assert sum(1 for _ in store.waiting_shards()) == 2

    store.request_cancel(job.job_id)

    assert list(store.waiting_shards()) == []
    pipeline.run(rounds=10, step=60)
    assert pipeline.report("first")["outcome"] == "cancelled"
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    event = json.dumps(pipeline.finished_events[0]["detail"])
    assert "batch_cancelled" in event


def test_an_hour_of_5xx_then_one_404_does_not_end_a_running_batch(make_pipeline: Any) -> None:
    # Given a long batch the API answers 503 for, for more than an hour
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 1 / 36000})
    pipeline.drop("inbox/flaky.jsonl", lines_for(2))
    batch_id = only_shard(pipeline).batch_id
    pipeline.emulator.faults.add(Fault.http(503, method="GET", path=f"/v1/batches/{batch_id}", times=None))
    for _ in range(70):
        pipeline.clock.advance(60)
        pipeline.poll()

    # When it answers 404 once
    pipeline.emulator.faults.clear()
    pipeline.emulator.faults.add(Fault.http(404, method="GET", path=f"/v1/batches/{batch_id}", times=1))
    pipeline.clock.advance(60)
    pipeline.poll()

    # Then the 404 grace starts now: the batch is still followed
    shard = only_shard(pipeline)
    assert shard.state == ShardState.SUBMITTED
    assert shard.not_found_since == int(pipeline.clock.now())


def test_the_retry_bound_holds_even_when_the_secret_cannot_be_read(make_pipeline: Any) -> None:
    # Given a submission deferred (it holds a slot) and, later, a secret nobody can read
    pipeline: Pipeline = make_pipeline(SUBMIT_RETRY_LIMIT_HOURS=1)
    pipeline.emulator.faults.add(Fault.http(503, method="POST", path="/v1/files", times=None))
    pipeline.drop("inbox/nosecret.jsonl", lines_for(2))
    assert only_shard(pipeline).holds_slot

    def no_secret() -> Any:
        raise RuntimeError("secret batchdrop/zerogpu cannot be read")

    pipeline.services.api_factory = no_secret
    pipeline.services._api = None

    # When more than SUBMIT_RETRY_LIMIT_HOURS pass, the poller handing the shard over meanwhile
    for _ in range(16):
        pipeline.clock.advance(300)
        pipeline.poll()
        with contextlib.suppress(RuntimeError):
            pipeline.submit_handovers()
    pipeline.collect()
    pipeline.read_notifications()

    # Then the shard ended, its slot back, whatever the secret
    assert pipeline.report("nosecret")["errors_by_code"] == {"batch_create_failed": 2}
    assert pipeline.services.store.slots_in_use() == 0


def test_a_lost_progress_note_is_mended_by_the_sweep(make_pipeline: Any) -> None:
    # Given the poller ending a shard collect never took, and its progress note lost
    from pipeline_harness import fail_once

    pipeline: Pipeline = make_pipeline(COLLECT_RETRY_LIMIT_HOURS=1)
    pipeline.drop("inbox/mend.jsonl", lines_for(2))
    fail_once(
        pipeline.services.store,
        "note_progress",
        RuntimeError("throttled"),
        when=lambda shard: shard.state == ShardState.COLLECTED,
    )
    for _ in range(12):
        pipeline.clock.advance(900)
        pipeline.emulator.process()
        pipeline.poll()
        while messages := pipeline.sqs.receive_message(QueueUrl=pipeline.collect_queue_url).get("Messages"):
            for message in messages:  # collect keeps failing: its messages are lost
                pipeline.sqs.delete_message(QueueUrl=pipeline.collect_queue_url, ReceiptHandle=message["ReceiptHandle"])

    # When the schedule runs on, collect working again
    pipeline.run(rounds=10, step=900)

    # Then the job finished all the same
    assert pipeline.report("mend")["errors_by_code"] == {"collect_failed": 2}
    assert pipeline.idle()
