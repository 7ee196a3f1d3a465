"""Bursts at the sizes users reach: nothing stalls, running batches are polled whatever waits behind them,
and the backlog drains in turn. Before the index kept its kinds of work apart, each run read the 1,000
oldest due shards, all of them held back, and skipped them: past 1,000 held shards nothing moved again.

The suite runs the bursts at full size up to the point where the old code stalled, and a few rounds on;
draining them completely takes moto several minutes (`make scale` runs the `scale` tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from pipeline_harness import Pipeline, chat_line, jsonl

from batchdrop.flow.polling import poll_once
from batchdrop.integrations.store import _shard_item
from batchdrop.integrations.zerogpu import Batch
from batchdrop.models import RequestCounts, Shard, ShardState

FILES = 1030
HELD = 2000

# A minute each on this project's 2-core machines; the suite's 300 s per test is for hangs, not for these.
pytestmark = pytest.mark.timeout(1800)  # (and `make scale` drains them fully: 12 minutes)


def drop_burst(pipeline: Pipeline) -> None:
    for n in range(FILES):
        pipeline.drop(f"inbox/burst/{n:04d}.jsonl", jsonl([chat_line(f"burst-{n}")]))


def finished_keys(pipeline: Pipeline) -> list[str]:
    pipeline.read_notifications()
    return [event["detail"]["input"]["key"] for event in pipeline.finished_events]


def test_a_burst_of_1030_files_keeps_moving_past_the_point_where_it_stalled(make_pipeline: Any) -> None:
    # Given 1,030 one-line files dropped at once, with the default 20 batches in flight
    pipeline: Pipeline = make_pipeline()
    assert pipeline.services.settings.max_batches_in_flight == 20
    drop_burst(pipeline)
    store = pipeline.services.store
    assert store.slots_in_use() == 20
    assert sum(1 for _ in store.waiting_shards()) == FILES - 20

    # When the schedule runs: the first run polls the 20 running batches whatever waits behind them
    first = pipeline.step(60)
    assert (first.ended, first.handed_over) == (20, 20)

    # Then every run ends 20 jobs and starts 20 more, until the limit is the only brake
    for _ in range(3):
        pipeline.step(60)
    done = finished_keys(pipeline)
    assert len(done) == len(set(done)) == 80
    assert store.slots_in_use() == 20
    assert sum(1 for _ in store.waiting_shards()) == FILES - 100


def test_2000_held_shards_take_their_turn_while_running_batches_are_polled(make_pipeline: Any) -> None:
    # Given one file split into 2,020 one-line shards: 20 get a slot, 2,000 are held back
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=1, MAX_BATCHES_PER_INPUT=4999)
    pipeline.drop("inbox/held.jsonl", jsonl([chat_line(f"held-{n}") for n in range(HELD + 20)]))
    store = pipeline.services.store
    waiting = list(store.waiting_shards())
    assert len(waiting) == HELD
    assert [shard.index for shard in waiting[:3]] == [20, 21, 22]  # a queue, oldest first

    # When the schedule runs
    first = pipeline.step(60)

    # Then the running batches are polled at once, and the next 20 in the queue take their slots
    assert (first.ended, first.handed_over) == (20, 20)
    started = {shard.index for shard in store.get_shards(waiting[0].job_id) if shard.state != ShardState.PENDING}
    assert started == set(range(40))
    second = pipeline.step(60)
    assert (second.ended, second.handed_over) == (20, 20)
    assert sum(1 for _ in store.waiting_shards()) == HELD - 40


@pytest.mark.scale
def test_a_burst_of_1030_files_drains_completely(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline()
    drop_burst(pipeline)
    rounds = pipeline.run(rounds=200, step=60)
    outcomes = [event["detail"]["outcome"] for event in pipeline.finished_events]
    assert len(outcomes) == FILES and set(outcomes) == {"succeeded"}
    assert pipeline.emulator.count_calls("POST", "/v1/batches") == FILES
    assert pipeline.services.store.slots_in_use() == 0
    assert pipeline.idle()
    assert rounds <= FILES // 20 + 3, rounds


@pytest.mark.scale
def test_2000_held_shards_drain_completely(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=1, MAX_BATCHES_PER_INPUT=4999)
    pipeline.drop("inbox/held.jsonl", jsonl([chat_line(f"held-{n}") for n in range(HELD + 20)]))
    pipeline.run(rounds=200, step=60)
    (event,) = pipeline.finished_events
    assert event["detail"]["counts"] == {"total": HELD + 20, "succeeded": HELD + 20, "failed": 0}
    assert len(pipeline.lines("outbox/held/output.jsonl")) == HELD + 20
    assert pipeline.services.store.slots_in_use() == 0
    assert pipeline.idle()


# -- 10,000 running batches, against a stubbed API ----------------------------------------------------


class StubbedApi:
    """Answers retrieve for any batch at once: in_progress, a tenth of the lines done."""

    def __init__(self) -> None:
        self.retrieved: list[str] = []

    def retrieve_batch(self, batch_id: str) -> Batch:
        self.retrieved.append(batch_id)
        return Batch.model_validate(
            {
                "id": batch_id,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-x",
                "completion_window": "24h",
                "status": "in_progress",
                "created_at": 0,
                "request_counts": {"total": 10, "completed": 1, "failed": 0},
            }
        )


def running_shards(pipeline: Pipeline, count: int) -> None:
    """`count` shards with a running batch each, due now, written straight into the table."""
    now = pipeline.clock.now()
    store = pipeline.services.store
    shards = [
        Shard(
            job_id=f"job-{n // 100:05d}",
            index=n % 100,
            state=ShardState.SUBMITTED,
            work_key=f"work/job-{n // 100:05d}/shards/{n % 100:05d}.jsonl",
            lines=10,
            bytes=1000,
            first_line=1,
            batch_id=f"batch_{n:06d}",
            batch_status="in_progress",
            create_started_at=int(now) - 600,
            request_counts=RequestCounts(total=10),
            next_poll_at=int(now) - n % 50,
            holds_slot=True,
        )
        for n in range(count)
    ]
    items = [{"PutRequest": {"Item": _shard_item(shard)}} for shard in shards]
    for start in range(0, len(items), 25):  # test setup: straight into the table, 25 at a time
        store._db.batch_write_item(RequestItems={store._table: items[start : start + 25]})


def with_api(pipeline: Pipeline, api: StubbedApi) -> None:
    pipeline.services._api = api  # type: ignore[assignment]


def test_10000_running_batches_are_all_polled_when_due(make_pipeline: Any) -> None:
    # Given 10,000 running batches, all due
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=10_000)
    running_shards(pipeline, 10_000)
    api = StubbedApi()
    with_api(pipeline, api)

    # When one poll run has the time it needs
    started = time.monotonic()
    summary = poll_once(pipeline.services)
    elapsed = time.monotonic() - started

    # Then every batch was looked at once, and each is due again later, not now
    assert summary.due == summary.polled == 10_000, summary
    assert len(set(api.retrieved)) == len(api.retrieved) == 10_000
    assert next(pipeline.services.store.due_shards(int(pipeline.clock.now()), limit=1), None) is None
    print(f"10,000 batches polled in {elapsed:.1f} s (moto in-process)")


def test_a_run_out_of_time_leaves_the_rest_to_the_next_run_oldest_first(make_pipeline: Any) -> None:
    # Given 1,500 running batches and runs that have time for about 500 retrieves each
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=10_000, POLL_CONCURRENCY=1)
    running_shards(pipeline, 1500)
    api = StubbedApi()
    with_api(pipeline, api)

    def budget(calls: int) -> Callable[[], float]:
        start = len(api.retrieved)
        return lambda: 900.0 if len(api.retrieved) - start < calls else 0.0

    # When three runs go by
    seen: list[set[str]] = []
    for _ in range(3):
        before = len(api.retrieved)
        pipeline.services.remaining_time = budget(500)
        summary = poll_once(pipeline.services)
        assert summary.out_of_time or summary.polled
        seen.append(set(api.retrieved[before:]))
    pipeline.services.remaining_time = lambda: 900.0
    last = poll_once(pipeline.services)

    # Then no batch was polled twice before every batch was polled once
    assert sum(len(batch) for batch in seen) + last.polled == 1500
    assert len(set().union(*seen)) == sum(len(batch) for batch in seen)


def test_the_queue_moves_however_many_running_batches_are_due(make_pipeline: Any) -> None:
    # Given 600 running batches due (no slot counted for them) and a dropped file waiting for a slot
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=1)
    api = StubbedApi()
    pipeline.services.store.claim_shard  # noqa: B018 - the real store, used below
    pipeline.drop("inbox/first.jsonl", jsonl([chat_line("first")]))  # takes the only slot
    pipeline.drop("inbox/waiting.jsonl", jsonl([chat_line("waiting")]))  # waits
    running_shards(pipeline, 600)
    real_api = pipeline.services.api
    with_api(pipeline, api)
    pipeline.services.store._db.update_item(  # the first job's batch ends: its slot is free again
        TableName=pipeline.services.store._table,
        Key={"pk": {"S": "SLOTS"}, "sk": {"S": "IN_FLIGHT"}},
        UpdateExpression="SET in_use = :zero",
        ExpressionAttributeValues={":zero": {"N": "0"}},
    )
    del real_api

    # When a run has time for only 50 retrieves
    start = len(api.retrieved)
    pipeline.services.remaining_time = lambda: 900.0 if len(api.retrieved) - start < 50 else 0.0
    summary = poll_once(pipeline.services)

    # Then the waiting shard was handed over all the same (the queue goes first), and the run stopped in time
    assert summary.handed_over == 1
    assert summary.out_of_time and summary.polled < 600


def test_a_shard_that_fails_in_an_unforeseen_way_does_not_stop_the_run(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(MAX_BATCHES_IN_FLIGHT=10_000)
    running_shards(pipeline, 50)

    class Broken(StubbedApi):
        def retrieve_batch(self, batch_id: str) -> Batch:
            if batch_id == "batch_000049":  # the oldest due
                raise ValueError("something nobody foresaw")
            return super().retrieve_batch(batch_id)

    with_api(pipeline, Broken())
    summary = poll_once(pipeline.services)
    assert summary.polled == 49
    assert len(summary.errors) == 1
    broken = pipeline.services.store.get_shard("job-00000", 49)
    assert broken is not None and broken.next_poll_at > pipeline.clock.now()  # not first in line again
