"""What a poll run reads from DynamoDB (moto): its running batches' jobs a hundred to a call, never one by
one, and every due shard whatever the page it is on."""

from __future__ import annotations

import collections
from typing import Any

from pipeline_harness import Pipeline, chat_line, jsonl

from batchdrop.models import InputInfo, Job, JobStatus, ShardState


def lines_for(n: int, prefix: str) -> bytes:
    return jsonl([chat_line(f"{prefix}-{i}") for i in range(1, n + 1)])


def counted(client: Any) -> collections.Counter[str]:
    """The client's calls from now on, by operation; a read of a job item counts as `GetItem JOB`."""
    calls: collections.Counter[str] = collections.Counter()
    call = client._make_api_call

    def counting(operation: str, params: Any) -> Any:
        is_job = operation == "GetItem" and params["Key"]["sk"]["S"] == "JOB"
        calls[f"{operation} JOB" if is_job else operation] += 1
        return call(operation, params)

    client._make_api_call = counting
    return calls


def job(job_id: str, **fields: Any) -> Job:
    return Job(
        job_id=job_id,
        status=JobStatus.SUBMITTING,
        input=InputInfo(bucket="b", key=f"inbox/{job_id}.jsonl"),
        output_prefix=f"outbox/{job_id}/",
        received_at=1_767_225_600,
        **fields,
    )


def test_a_poll_run_reads_its_running_batches_jobs_in_one_call_and_still_cancels(make_pipeline: Any) -> None:
    # Given three jobs of two running batches each, one of them cancelled by the operator
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 1 / 3600}, MAX_LINES_PER_BATCH=1)
    for name in ("one", "two", "three"):
        pipeline.drop(f"inbox/{name}.jsonl", lines_for(2, name))
    store = pipeline.services.store
    jobs = {item.input.key: item for item in store.recent_jobs(limit=5)}
    store.request_cancel(jobs["inbox/two.jsonl"].job_id)
    calls = counted(store._db)

    # When the schedule runs once
    pipeline.clock.advance(60)
    summary = pipeline.poll()

    # Then every batch was looked at, the jobs were read together, and only the cancelled job's batches
    # were cancelled
    assert summary.due == 6 and summary.polled == 6
    assert calls["BatchGetItem"] == 1 + 1  # the jobs; their last looks at their batches (flow/progress.py)
    assert calls["GetItem JOB"] == 0
    assert calls["UpdateItem"] == 6 + 3 + 3  # each batch's look; each job's progress, and its batches' looks
    cancels = [call.path for call in pipeline.emulator.calls if call.method == "POST" and call.path.endswith("/cancel")]
    cancelled_batches = {shard.batch_id for shard in store.get_shards(jobs["inbox/two.jsonl"].job_id)}
    assert {path.split("/")[3] for path in cancels} == cancelled_batches


def test_every_due_shard_is_visited_across_pages(make_pipeline: Any, monkeypatch: Any) -> None:
    # Given five running batches and an index read two shards to a page
    from batchdrop.integrations import store as store_module

    monkeypatch.setattr(store_module, "_PAGE_SIZE", 2)
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 1 / 3600}, MAX_LINES_PER_BATCH=1)
    pipeline.drop("inbox/paged.jsonl", lines_for(5, "p"))

    # When the schedule runs once
    pipeline.clock.advance(60)
    summary = pipeline.poll()

    # Then each was polled once, and each is due again later
    assert summary.due == 5 and summary.polled == 5
    assert sum(1 for call in pipeline.emulator.calls if call.method == "GET") == 5
    (item,) = pipeline.services.store.recent_jobs(limit=5)
    shards = pipeline.services.store.get_shards(item.job_id)
    assert all(shard.state == ShardState.SUBMITTED for shard in shards)
    assert all((shard.next_poll_at or 0) > pipeline.clock.now() for shard in shards)


def test_get_jobs_reads_a_hundred_to_a_call_and_leaves_out_missing_and_expired_jobs(pipeline: Pipeline) -> None:
    # Given 150 jobs, one of them past its expiry (DynamoDB has not deleted it yet)
    store = pipeline.services.store
    now = int(pipeline.clock.now())
    for n in range(150):
        store.create_job(job(f"job-{n:03d}", expires_at=now - 1 if n == 7 else now + 3600))
    calls = counted(store._db)

    # When they are read together with a job that does not exist
    found = store.get_jobs([f"job-{n:03d}" for n in range(150)] + ["job-missing"])

    # Then two calls read them all, without the expired and the missing one
    assert calls["BatchGetItem"] == 2
    assert sorted(found) == [f"job-{n:03d}" for n in range(150) if n != 7]
    assert found["job-042"] == store.get_job("job-042")


def test_the_waiting_count_reads_a_bounded_number_of_pages_and_says_when_it_stopped(make_pipeline: Any) -> None:
    # Given seven shards waiting behind one batch in flight
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=1, MAX_BATCHES_IN_FLIGHT=1)
    pipeline.drop("inbox/queued.jsonl", lines_for(8, "q"))
    store = pipeline.services.store

    # When they are counted three to a page
    # Then two pages count six and say there were more; three pages count them all
    assert store.count_waiting(max_pages=2, page_limit=3) == (6, False)
    assert store.count_waiting(max_pages=3, page_limit=3) == (7, True)
    assert store.count_waiting() == (7, True)
