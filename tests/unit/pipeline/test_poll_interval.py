"""The next poll time adapts: soon when the end is near, rarely for long batches, within bounds."""

from __future__ import annotations

from types import SimpleNamespace

from batchdrop.flow.polling import next_poll_interval
from batchdrop.models import RequestCounts, Shard, ShardState

SERVICES = SimpleNamespace(
    settings=SimpleNamespace(poll_min_interval_seconds=30, poll_max_interval_seconds=900, batch_deadline_hours=26)
)
NOW = 1_800_000_000


def shard(age: int) -> Shard:
    return Shard(
        job_id="j",
        index=0,
        state=ShardState.SUBMITTED,
        work_key="k",
        lines=100,
        bytes=1,
        first_line=1,
        next_poll_at=NOW,
        create_started_at=NOW - age,
    )


def interval(age: int, done: int, total: int = 100, status: str = "in_progress") -> int:
    counts = RequestCounts(total=total, completed=done, failed=0)
    return next_poll_interval(shard(age), counts, status, NOW, SERVICES)  # type: ignore[arg-type]


def test_a_young_batch_is_polled_at_the_minimum() -> None:
    assert interval(age=10, done=0) == 30


def test_a_long_batch_without_progress_backs_off_to_the_maximum() -> None:
    assert interval(age=6 * 3600, done=0) == 900


def test_progress_brings_the_next_poll_close_to_the_estimated_end() -> None:
    # half done in 20 minutes: about 20 minutes left, polled again after about 10
    assert interval(age=1200, done=50) == 600
    assert interval(age=1200, done=95) == 31  # about a minute left


def test_finalizing_and_cancelling_are_polled_soon() -> None:
    assert interval(age=36000, done=100, status="finalizing") == 30
    assert interval(age=36000, done=10, status="cancelling") == 30
