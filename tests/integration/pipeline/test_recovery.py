"""Recovery from the failures a newcomer's review found: each test failed before its fix."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl

from batchdrop.pipeline.models import JobStatus, ShardState


def lines_for(n: int, prefix: str = "r") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


class Crash(BaseException):
    """Stands for the Lambda runtime killing the invocation."""


def test_a_rejection_whose_announcement_failed_is_announced_on_redelivery(pipeline: Pipeline) -> None:
    # Given EventBridge refusing the first announcement
    notifier = pipeline.services.notifier
    original = notifier.finished_event
    failures = iter([RuntimeError("ThrottlingException")])

    def flaky(detail: dict[str, Any]) -> None:
        if (failure := next(failures, None)) is not None:
            raise failure
        original(detail)

    notifier.finished_event = flaky  # type: ignore[method-assign]
    obj = pipeline.put_input("inbox/bad.jsonl", b'{"not": "valid"}\n')
    with pytest.raises(RuntimeError):
        pipeline.deliver(pipeline.object_created_body(obj))

    # When SQS delivers the record again, after the notification lease
    pipeline.clock.advance(6000)
    pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.read_notifications()

    # Then it is announced, once
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["rejected"]
    assert pipeline.finished_events[0]["detail"]["validation_error_count"] == 1
    assert len(pipeline.sns_messages) == 1


def test_an_sns_failure_after_the_event_went_out_resends_only_the_sns_message(pipeline: Pipeline) -> None:
    notifier = pipeline.services.notifier
    original = notifier.finished_message
    failures = iter([RuntimeError("SNS is down")])

    def flaky(detail: dict[str, Any]) -> None:
        if (failure := next(failures, None)) is not None:
            raise failure
        original(detail)

    notifier.finished_message = flaky  # type: ignore[method-assign]
    pipeline.drop("inbox/sns.jsonl", lines_for(2))
    with pytest.raises(RuntimeError):
        pipeline.run()
    pipeline.clock.advance(6000)
    pipeline.services.sqs.send_message(
        QueueUrl=pipeline.collect_queue_url,
        MessageBody=json.dumps({"job_id": next(pipeline.services.store.iter_jobs(limit=5)).job_id, "shard": 0}),
    )
    pipeline.run()

    assert len(pipeline.finished_events) == 1
    assert len(pipeline.sns_messages) == 1


def test_a_transaction_conflict_on_the_slot_counter_never_leaks_a_slot(make_pipeline: Any) -> None:
    # Given one slot, and a conflict the first time a slot is given back
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=1)
    db = pipeline.services.store._db
    original = db.transact_write_items
    conflicts = iter([True])

    def conflicting(**kwargs: Any) -> Any:
        giving_back = "in_use - :one" in kwargs["TransactItems"][1]["Update"]["UpdateExpression"]
        if giving_back and next(conflicts, False):
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}]
            error = {"Code": "TransactionCanceledException", "Message": "conflict"}
            raise ClientError({"Error": error, "CancellationReasons": reasons}, "TransactWriteItems")
        return original(**kwargs)

    db.transact_write_items = conflicting

    # When two jobs run one after the other
    pipeline.drop("inbox/a.jsonl", lines_for(2))
    pipeline.run()
    pipeline.drop("inbox/b.jsonl", lines_for(2, "b"))
    pipeline.run()

    # Then both finish and the counter is back to zero
    assert sorted(event["detail"]["input"]["key"] for event in pipeline.finished_events) == [
        "inbox/a.jsonl",
        "inbox/b.jsonl",
    ]
    assert pipeline.services.store.slots_in_use() == 0


def test_a_held_shard_whose_work_copy_expired_is_rebuilt_from_the_input(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    pipeline.drop("inbox/w.jsonl", b"\xef\xbb\xbf" + lines_for(2) + b"\r\n\n" + lines_for(3, "late"))
    job_id = next(pipeline.services.store.iter_jobs(limit=5)).job_id
    held = pipeline.services.store.get_shards(job_id)[1]
    original = pipeline.read(held.work_key)
    pipeline.s3.delete_object(Bucket=BUCKET, Key=held.work_key)  # the work prefix's lifecycle expiry

    pipeline.run()

    report = pipeline.report("w")
    assert report["counts"] == {"total": 5, "succeeded": 5, "failed": 0}
    assert pipeline.read(held.work_key) == original


def test_a_resubmission_after_the_job_records_expired_runs_again(pipeline: Pipeline) -> None:
    obj = pipeline.put_input("inbox/old.jsonl", lines_for(2))
    pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.run()
    pipeline.clock.advance(31 * 86400)  # past JobRetentionDays; DynamoDB has not deleted the items yet

    event = {
        "detail-type": "Submit Batch Job",
        "detail": {"bucket": BUCKET, "key": obj["key"], "version_id": obj["version_id"]},
    }
    pipeline.deliver(json.dumps(event))
    pipeline.run()

    job = pipeline.services.store.get_job(pipeline.finished_events[0]["detail"]["job_id"])
    assert job is not None and job.status == JobStatus.FINISHED
    assert len(pipeline.finished_events) == 2
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2


def test_errors_by_code_counts_every_problem_not_only_the_listed_ones(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/many.jsonl", b"not json\n" * 1500)
    report = pipeline.report("many")
    assert report["errors_by_code"] == {"invalid_json": 1500}
    assert report["validation_error_count"] == 1500


def test_a_cancelled_job_does_not_wait_for_a_slot(make_pipeline: Any) -> None:
    # Given a long batch holding the only slot, and a second job held back behind it
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 1 / 600}, MAX_BATCHES_IN_FLIGHT=1)
    pipeline.drop("inbox/long.jsonl", lines_for(20))
    pipeline.drop("inbox/held.jsonl", lines_for(2, "h"))
    jobs = {job.input.key: job for job in pipeline.services.store.iter_jobs(limit=5)}

    # When the held job is cancelled
    pipeline.services.store.request_cancel(jobs["inbox/held.jsonl"].job_id)
    pipeline.run(rounds=5, step=60)

    # Then it ends at once, cancelled, without a batch
    finished = {event["detail"]["input"]["key"]: event["detail"] for event in pipeline.finished_events}
    assert finished["inbox/held.jsonl"]["outcome"] == "cancelled"
    assert finished["inbox/held.jsonl"]["errors_by_code"] == {"batch_cancelled": 2}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1


def test_a_late_event_for_a_replaced_version_is_ignored(pipeline: Pipeline) -> None:
    v1 = pipeline.put_input("inbox/x.jsonl", lines_for(2, "v1"))
    v2 = pipeline.put_input("inbox/x.jsonl", lines_for(3, "v2"))
    pipeline.deliver(pipeline.object_created_body(v2))
    pipeline.run()

    pipeline.deliver(pipeline.object_created_body(v1))  # late, out of order
    pipeline.run()

    assert pipeline.report("x")["input"]["version_id"] == v2["version_id"]
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1


def test_a_crash_between_storing_shards_and_marking_the_job_recovers(pipeline: Pipeline) -> None:
    store = pipeline.services.store
    original = store.update_job
    crashes = iter([True])

    def update_job(job: Any, **changes: Any) -> Any:
        if changes.get("status") == JobStatus.SUBMITTING and next(crashes, False):
            raise Crash()
        return original(job, **changes)

    store.update_job = update_job  # type: ignore[method-assign]
    obj = pipeline.put_input("inbox/j.jsonl", lines_for(2))
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.run()  # the schedule runs the stored shards meanwhile
    pipeline.deliver(pipeline.object_created_body(obj))  # SQS delivers the record again
    pipeline.run()

    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1


def test_a_shard_leased_by_another_invocation_is_left_alone_until_the_lease_ends(pipeline: Pipeline) -> None:
    # Given a shard another invocation has claimed (and is still working on)
    obj = pipeline.put_input("inbox/leased.jsonl", lines_for(2))
    store = pipeline.services.store
    original_claim = store.claim_shard
    store.claim_shard = lambda shard, **kwargs: original_claim(shard, **(kwargs | {"owner": "someone-else"}))  # type: ignore[method-assign]
    original_update = store.update_shard

    def die_after_claim(shard: Any, **changes: Any) -> Any:
        raise Crash()

    store.update_shard = die_after_claim  # type: ignore[method-assign]
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))
    store.claim_shard, store.update_shard = original_claim, original_update  # type: ignore[method-assign]

    # When the poller runs while the lease holds, and after it ends
    pipeline.clock.advance(60)
    pipeline.poll()
    assert pipeline.emulator.count_calls("POST", "/v1/files") == 0
    pipeline.run(rounds=30, step=60)

    # Then the shard is submitted once, after the lease
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert store.get_shards(pipeline.finished_events[0]["detail"]["job_id"])[0].state == ShardState.COLLECTED
