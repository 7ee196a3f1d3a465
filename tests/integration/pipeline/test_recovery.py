"""Recovery from the failures a newcomer's review found: each test failed before its fix."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pipeline_harness import BUCKET, Crash, Pipeline, chat_line, fail_once, jsonl

from batchdrop.models import JobStatus, ShardState


def lines_for(n: int, prefix: str = "r") -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def test_a_rejection_whose_announcement_failed_is_announced_on_redelivery(pipeline: Pipeline) -> None:
    # Given EventBridge refusing the first announcement
    fail_once(pipeline.services.notifier, "finished_event", RuntimeError("ThrottlingException"))
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
    fail_once(pipeline.services.notifier, "finished_message", RuntimeError("SNS is down"))
    pipeline.drop("inbox/sns.jsonl", lines_for(2))
    with pytest.raises(RuntimeError):
        pipeline.run()
    pipeline.clock.advance(6000)
    pipeline.services.sqs.send_message(
        QueueUrl=pipeline.collect_queue_url,
        MessageBody=json.dumps({"job_id": next(pipeline.services.store.recent_jobs(limit=5)).job_id, "shard": 0}),
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
    job_id = next(pipeline.services.store.recent_jobs(limit=5)).job_id
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
    jobs = {job.input.key: job for job in pipeline.services.store.recent_jobs(limit=5)}

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
    fail_once(store, "update_job", Crash(), when=lambda job, **changes: changes.get("status") == JobStatus.SUBMITTING)
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
    api = pipeline.services.api
    original_upload = api.upload_file_or_adopt

    def die_after_claim(*args: Any, **kwargs: Any) -> Any:
        raise Crash()

    api.upload_file_or_adopt = die_after_claim  # type: ignore[method-assign]
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))
    store.claim_shard, api.upload_file_or_adopt = original_claim, original_upload  # type: ignore[method-assign]

    # When the poller runs while the lease holds, and after it ends
    pipeline.clock.advance(60)
    pipeline.poll()
    assert pipeline.emulator.count_calls("POST", "/v1/files") == 0
    pipeline.run(rounds=30, step=60)

    # Then the shard is submitted once, after the lease
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert store.get_shards(pipeline.finished_events[0]["detail"]["job_id"])[0].state == ShardState.COLLECTED


# Found by the second review (of the fixes above).

REBUILD_VARIANTS = {
    "plain": lines_for(7),
    "bom-crlf": b"\xef\xbb\xbf" + b"".join(json.dumps(chat_line(f"r-{i}")).encode() + b"\r\n" for i in range(1, 8)),
    "blank-lines": b"\xef\xbb\xbf\r\n\n  \n"
    + b"".join(json.dumps(chat_line(f"r-{i}")).encode() + b"\n\n" for i in range(1, 8)),
    "no-final-newline": b"\n".join(json.dumps(chat_line(f"r-{i}")).encode() for i in range(1, 8)),
    "unicode": jsonl([chat_line(f"u-{i}", "héllo ✓ \u2028") for i in range(1, 8)]),
}


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "jsonl.gz"])
@pytest.mark.parametrize("variant", sorted(REBUILD_VARIANTS))
def test_a_rebuilt_shard_equals_its_work_copy_byte_for_byte(make_pipeline: Any, variant: str, gz: bool) -> None:
    import gzip
    import os

    from batchdrop.integrations.shard_copies import local_shard_copy

    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    body, key = REBUILD_VARIANTS[variant], "inbox/v.jsonl"
    if gz:
        body, key = gzip.compress(body), "inbox/v.jsonl.gz"
    pipeline.drop(key, body)
    job = next(pipeline.services.store.recent_jobs(limit=5))
    for shard in pipeline.services.store.get_shards(job.job_id):
        original = pipeline.read(shard.work_key)
        pipeline.s3.delete_object(Bucket=BUCKET, Key=shard.work_key)
        directory = os.path.join(pipeline.services.workdir, f"rebuild-{shard.index}")
        os.makedirs(directory)
        with open(local_shard_copy(shard, job, directory, pipeline.services.s3), "rb") as rebuilt:
            assert rebuilt.read() == original


def test_a_rebuild_never_reads_a_replaced_unversioned_input(make_pipeline: Any) -> None:
    from batchdrop.integrations.shard_copies import ShardSourceMissing, local_shard_copy

    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    pipeline.s3.create_bucket(Bucket="plain-bucket")  # no versioning
    obj = pipeline.put_input("inbox/u.jsonl", lines_for(4, "old"), bucket="plain-bucket")
    pipeline.deliver(pipeline.object_created_body(obj))
    job = next(pipeline.services.store.recent_jobs(limit=5))
    held = pipeline.services.store.get_shards(job.job_id)[1]
    pipeline.s3.put_object(Bucket="plain-bucket", Key="inbox/u.jsonl", Body=lines_for(4, "new"))
    pipeline.s3.delete_object(Bucket="plain-bucket", Key=held.work_key)

    with pytest.raises(ShardSourceMissing):
        local_shard_copy(held, job, pipeline.services.workdir, pipeline.services.s3)


def test_shards_of_a_job_whose_split_is_not_committed_wait_for_the_redelivery(pipeline: Pipeline) -> None:
    # Given a submit that died after recording the shards but before the job moved on (SUBMITTING)
    store = pipeline.services.store
    fail_once(store, "update_job", Crash(), when=lambda job, **changes: changes.get("status") == JobStatus.SUBMITTING)
    obj = pipeline.put_input("inbox/j.jsonl", lines_for(2))
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))

    # When the poller runs meanwhile, it bills nothing: the job may yet be rejected by the retry
    pipeline.run(rounds=5)
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 0

    # Then the redelivery takes over the recorded split (no second validation) and the job runs once
    from batchdrop.flow import split

    original = split.validate_and_split
    split.validate_and_split = None  # type: ignore[assignment]  # must not be called
    try:
        pipeline.clock.advance(6000)
        pipeline.deliver(pipeline.object_created_body(obj))
    finally:
        split.validate_and_split = original  # type: ignore[assignment]
    pipeline.run()
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 1
    assert pipeline.report("j")["input"]["lines"] == 2


def test_cancelling_after_an_ambiguous_create_cancels_that_batch(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 1 / 600})
    store = pipeline.services.store
    fail_once(
        store, "update_shard", Crash(), when=lambda shard, **changes: changes.get("state") == ShardState.SUBMITTED
    )
    obj = pipeline.put_input("inbox/c.jsonl", lines_for(2))
    with pytest.raises(Crash):
        pipeline.deliver(pipeline.object_created_body(obj))
    store.request_cancel(next(store.recent_jobs(limit=5)).job_id)

    pipeline.run(rounds=30, step=60)

    (batch_id,) = pipeline.emulator.batch_ids()
    assert pipeline.emulator.count_calls("POST", f"/v1/batches/{batch_id}/cancel") >= 1
    finished = pipeline.finished_events[0]["detail"]
    assert finished["outcome"] == "cancelled"
    assert finished["counts"]["total"] == 2
    assert finished["errors_by_code"] == {"batch_cancelled": finished["counts"]["failed"]}


def test_result_files_that_expired_before_the_job_ended_are_exported_again(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    pipeline.drop("inbox/r.jsonl", lines_for(4))
    job = next(pipeline.services.store.recent_jobs(limit=5))
    for _ in range(10):
        pipeline.step(60)
        first = pipeline.services.store.get_shard(job.job_id, 0)
        if first is not None and first.state == ShardState.COLLECTED:
            break
    assert first is not None and first.result is not None
    pipeline.s3.delete_object(Bucket=BUCKET, Key=first.result.output_key)  # the work prefix's expiry

    pipeline.run()

    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert len(pipeline.lines("outbox/r/output.jsonl")) == 4


def test_a_crash_before_the_shards_expiry_is_mended_by_the_next_pass(pipeline: Pipeline) -> None:
    store = pipeline.services.store
    fail_once(store, "update_shard", Crash(), when=lambda shard, **changes: "expires_at" in changes)
    obj = pipeline.put_input("inbox/old.jsonl", lines_for(2))
    pipeline.deliver(pipeline.object_created_body(obj))
    with pytest.raises(Crash):
        pipeline.run()
    pipeline.clock.advance(6000)
    job_id = next(store.recent_jobs(limit=5)).job_id
    pipeline.services.sqs.send_message(
        QueueUrl=pipeline.collect_queue_url, MessageBody=json.dumps({"job_id": job_id, "shard": 0})
    )
    pipeline.run()
    pipeline.clock.advance(31 * 86400)
    event = {
        "detail-type": "Submit Batch Job",
        "detail": {"bucket": BUCKET, "key": obj["key"], "version_id": obj["version_id"]},
    }
    pipeline.deliver(json.dumps(event))
    pipeline.run()

    assert pipeline.emulator.count_calls("POST", "/v1/batches") == 2
    assert len(pipeline.finished_events) == 2


def test_the_other_reading_of_a_key_does_not_shadow_the_event(pipeline: Pipeline) -> None:
    pipeline.put_input("inbox/a b.jsonl", lines_for(1, "other"))
    obj = pipeline.put_input("inbox/a+b.jsonl", lines_for(2))
    pipeline.deliver(pipeline.object_created_body(obj, key_in_event="inbox/a+b.jsonl"))
    pipeline.run()
    assert [event["detail"]["input"]["key"] for event in pipeline.finished_events] == ["inbox/a+b.jsonl"]


def test_a_submit_event_naming_a_version_runs_it_even_after_the_key_was_deleted(pipeline: Pipeline) -> None:
    obj = pipeline.put_input("inbox/d.jsonl", lines_for(2))
    pipeline.s3.delete_object(Bucket=BUCKET, Key="inbox/d.jsonl")  # a delete marker; the version remains
    event = {
        "detail-type": "Submit Batch Job",
        "detail": {"bucket": BUCKET, "key": obj["key"], "version_id": obj["version_id"]},
    }
    pipeline.deliver(json.dumps(event))
    pipeline.run()
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]


def test_a_held_shard_whose_sources_are_both_gone_ends_and_frees_its_slot(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    obj = pipeline.drop("inbox/g.jsonl", lines_for(4))
    held = pipeline.services.store.get_shards(next(pipeline.services.store.recent_jobs(limit=5)).job_id)[1]
    pipeline.s3.delete_object(Bucket=BUCKET, Key=held.work_key)
    pipeline.s3.delete_object(Bucket=BUCKET, Key=obj["key"], VersionId=obj["version_id"])

    pipeline.run(rounds=20)
    pipeline.drop("inbox/third.jsonl", lines_for(2, "t"))
    pipeline.run(rounds=20)

    finished = {event["detail"]["input"]["key"]: event["detail"] for event in pipeline.finished_events}
    assert finished["inbox/g.jsonl"]["counts"] == {"total": 4, "succeeded": 2, "failed": 2}
    assert finished["inbox/g.jsonl"]["errors_by_code"] == {"input_missing": 2}
    assert finished["inbox/third.jsonl"]["outcome"] == "succeeded"
    assert pipeline.services.store.slots_in_use() == 0


def test_an_event_with_a_null_version_id_is_processed(pipeline: Pipeline) -> None:
    pipeline.s3.create_bucket(Bucket="suspended-bucket")
    pipeline.s3.put_bucket_versioning(Bucket="suspended-bucket", VersioningConfiguration={"Status": "Suspended"})
    obj = pipeline.put_input("inbox/n.jsonl", lines_for(2), bucket="suspended-bucket") | {"version_id": "null"}
    pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.run()
    assert len(pipeline.finished_events) == 1
