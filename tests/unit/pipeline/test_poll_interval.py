"""The next poll time adapts: soon when the end is near, rarely for long batches, within bounds."""

from __future__ import annotations

from types import SimpleNamespace

from batchdrop.flow.polling import next_poll_interval
from batchdrop.models import RequestCounts, Shard, ShardState

SERVICES = SimpleNamespace(
    settings=SimpleNamespace(
        poll_min_interval_seconds=30,
        poll_max_interval_seconds=900,
        batch_deadline_hours=26,
        expiry_warning_hours=20,
        stuck_after_minutes=60,
    )
)
NOW = 1_800_000_000


def shard(age: int, **changes: object) -> Shard:
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
    ).model_copy(update=changes)


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


def test_a_look_comes_due_when_a_warning_would() -> None:
    # a batch without progress for 50 minutes: looked at again when it would count as stuck (in 10)
    assert next_poll_interval(shard(7200, progress_at=NOW - 3000), None, "in_progress", NOW, SERVICES) == 600  # type: ignore[arg-type]
    # at 19 h 55 min into its window: looked at again at 20 h, when the expiry warning is due
    assert interval(age=20 * 3600 - 300, done=10) == 300
