"""Early warning before a batch's 24-hour window ends: a batch that stalls is counted as stuck (and marked
for `batchdrop jobs show`), a batch near its expiry with work left raises its alarm's metric once, and, if
the operator wants it, is cancelled then, so that its unrun lines go into the next round at once."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from pipeline_harness import TABLE, Pipeline, chat_line, jsonl

from batchdrop.flow import polling, watch
from batchdrop.integrations.zerogpu import Batch
from batchdrop.models import RequestCounts, Shard, ShardState
from batchdrop.observability import Metric

HOUR = 3600


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The poller's metrics, by name."""
    seen: Counter[str] = Counter()
    original = polling.count

    def count(metric: Metric, value: int = 1) -> None:
        seen[metric.value] += value
        original(metric, value)

    monkeypatch.setattr(polling, "count", count)
    return seen


def lines_for(n: int) -> bytes:
    return jsonl([chat_line(f"w-{i}") for i in range(n)])


def the_shard(pipeline: Pipeline, index: int = 0) -> Shard:
    (job,) = pipeline.services.store.recent_jobs(limit=1, days=2)
    return next(shard for shard in pipeline.services.store.get_shards(job.job_id) if shard.index == index)


def operator_sees(
    pipeline: Pipeline, job_id: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    """What `batchdrop jobs show JOB_ID` prints, at the pipeline's time."""
    from batchdrop_tools import jobs

    parser = argparse.ArgumentParser()
    jobs.add_arguments(parser)
    monkeypatch.setattr(jobs.time, "time", pipeline.clock.now)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    capsys.readouterr()
    assert jobs.run(parser.parse_args(["show", job_id, "--table", TABLE, "--output", "json"])) == 0
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    return shown


def test_a_stalled_batch_counts_as_stuck_until_it_ends_and_its_unrun_lines_are_re_driven(
    make_pipeline: Any, counted: Counter[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a batch that runs 3 of its 10 lines, then stalls at the API
    pipeline: Pipeline = make_pipeline(POLL_MAX_INTERVAL_SECONDS=900)
    pipeline.emulator.faults.stall_batches(after_lines=3)
    pipeline.drop("inbox/stall.jsonl", lines_for(10))

    # When the schedule runs for 50 minutes: no progress yet for the stuck bound (60 minutes)
    for _ in range(5):
        pipeline.step(600)
    assert the_shard(pipeline).stuck_since is None
    assert counted["BatchesStuck"] == 0

    # Then past an hour without a line more done, each look counts it as stuck, and the shard is marked
    for _ in range(4):
        pipeline.step(600)
    shard = the_shard(pipeline)
    assert shard.stuck_since is not None and shard.request_counts == RequestCounts(total=10, completed=3)
    assert counted["BatchesStuck"] >= 2
    (warning,) = watch.warnings_of(shard, int(pipeline.clock.now()))
    assert warning.startswith(f"stuck: batch {shard.batch_id} has done no line for ")
    assert operator_sees(pipeline, shard.job_id, monkeypatch, capsys)["warnings"] == [f"shard 0: {warning}"]

    # And when its window ends, its 7 unrun lines go again and are answered (the stall was for one batch)
    pipeline.run(rounds=40, step=HOUR)
    report = pipeline.report("stall")
    assert report["outcome"] == "succeeded"
    assert report["rounds"][0]["errors_by_code"] == {"batch_expired": 7}
    assert report["attempts"] == {"1": 3, "2": 7}


def test_a_batch_near_its_expiry_with_work_left_raises_its_alarm_once(
    make_pipeline: Any, counted: Counter[str]
) -> None:
    # Given a batch that stalls after 2 of its 10 lines
    pipeline: Pipeline = make_pipeline(POLL_MAX_INTERVAL_SECONDS=3600)
    pipeline.emulator.faults.stall_batches(after_lines=2)
    pipeline.drop("inbox/late.jsonl", lines_for(10))

    # When the schedule runs to 19 hours into the window: no warning yet
    for _ in range(19):
        pipeline.step(HOUR)
    assert counted["BatchesNearExpiry"] == 0 and the_shard(pipeline).near_expiry_at is None

    # Then at 20 hours, with a fifth done, it is near its expiry: counted once, marked, not cancelled
    for _ in range(3):
        pipeline.step(HOUR)
    shard = the_shard(pipeline)
    assert counted["BatchesNearExpiry"] == 1
    assert shard.near_expiry_at is not None and shard.cancelled_early_at is None
    assert shard.state == ShardState.SUBMITTED and shard.batch_status == "in_progress"
    assert any(w.startswith("near its expiry") for w in watch.warnings_of(shard, int(pipeline.clock.now())))
    assert pipeline.emulator.count_calls("POST", f"/v1/batches/{shard.batch_id}/cancel") == 0


def test_with_cancel_near_expiry_the_unrun_lines_go_into_the_next_round_at_once(
    make_pipeline: Any, counted: Counter[str]
) -> None:
    # Given an operator who wants batches near their expiry cancelled, and a batch that stalls at 2 of 10
    pipeline: Pipeline = make_pipeline(POLL_MAX_INTERVAL_SECONDS=3600, CANCEL_NEAR_EXPIRY="true")
    pipeline.emulator.faults.stall_batches(after_lines=2)
    pipeline.drop("inbox/early.jsonl", lines_for(10))
    started = pipeline.clock.now()

    # When the schedule runs until the job ends
    for _ in range(19):
        pipeline.step(HOUR)
    pipeline.run(rounds=100, step=300)

    # Then the batch was cancelled once, at 20 hours, and its 8 unrun lines answered in a second round,
    # the job ending before the first batch's window would have
    report = pipeline.report("early")
    first = report["batches"][0]["batch_id"]
    assert pipeline.emulator.count_calls("POST", f"/v1/batches/{first}/cancel") == 1
    assert counted["BatchesCancelledEarly"] == 1 and counted["BatchesNearExpiry"] == 1
    assert report["outcome"] == "succeeded"
    assert report["rounds"][0]["errors_by_code"] == {"batch_cancelled": 8}
    assert report["attempts"] == {"1": 2, "2": 8}
    (finished,) = pipeline.finished_events
    finished_at = datetime.fromisoformat(finished["detail"]["finished_at"].replace("Z", "+00:00")).timestamp()
    assert finished_at - started < 24 * HOUR


# -- the look itself ----------------------------------------------------------------------------


def running(**changes: Any) -> Shard:
    shard = Shard(
        job_id="job-1",
        index=0,
        state=ShardState.SUBMITTED,
        work_key="work/job-1/shards/00000.jsonl",
        lines=10,
        bytes=1000,
        first_line=1,
        batch_id="batch_1",
        batch_status="in_progress",
        create_started_at=0,
        request_counts=RequestCounts(total=10, completed=2),
        progress_at=0,
    )
    return shard.model_copy(update=changes)


def batch(status: str = "in_progress", done: int = 2, total: int = 10) -> Batch:
    return Batch.model_validate(
        {
            "id": "batch_1",
            "status": status,
            "created_at": 0,
            "expires_at": 24 * HOUR,
            "request_counts": {"total": total, "completed": done, "failed": 0},
        }
    )


def look(shard: Shard, at: int, seen: Batch, **settings: Any) -> watch.Look:
    from pipeline_harness import settings_for

    counts = seen.request_counts
    assert counts is not None
    return watch.look_at(
        shard,
        seen,
        RequestCounts(total=counts.total, completed=counts.completed, failed=counts.failed),
        at,
        settings_for("q", "q", "t", "s", **settings),
    )


def test_progress_clears_the_stuck_mark_and_validating_never_counts_as_stuck() -> None:
    stuck = running(stuck_since=HOUR, progress_at=0)
    moved = look(stuck, 2 * HOUR, batch(done=3))
    assert moved.changes == {"progress_at": 2 * HOUR, "stuck_since": None} and not moved.stuck
    still = look(stuck, 2 * HOUR, batch(done=2))
    assert still.stuck and not still.newly_stuck and still.changes == {}
    validating = look(running(batch_status="validating"), 2 * HOUR, batch("validating", done=0))
    assert not validating.stuck


def test_near_expiry_needs_work_left_and_a_batch_that_can_still_be_cancelled() -> None:
    at = 20 * HOUR
    assert look(running(), at, batch(done=4)).newly_near_expiry
    assert not look(running(), at, batch(done=5)).newly_near_expiry  # half done: on its way
    assert not look(running(), at, batch("finalizing", done=10)).newly_near_expiry
    assert not look(running(), at - 60, batch(done=0)).newly_near_expiry
    assert not look(running(near_expiry_at=at), at + 60, batch(done=4)).newly_near_expiry  # once
    early = look(running(), at, batch(done=4), CANCEL_NEAR_EXPIRY="true")
    assert early.cancel_early and early.changes["cancelled_early_at"] == at
    assert not look(running(cancelled_early_at=at), at + 60, batch(done=4), CANCEL_NEAR_EXPIRY="true").cancel_early
    # no round can follow: with re-drive off, or on the lines' last allowed attempt, the batch runs on
    assert not look(running(), at, batch(done=4), CANCEL_NEAR_EXPIRY="true", REDRIVE_ENABLED="false").cancel_early
    last = look(running(attempt=3), at, batch(done=4), CANCEL_NEAR_EXPIRY="true", MAX_REDRIVE_ROUNDS=2)
    assert last.newly_near_expiry and not last.cancel_early
