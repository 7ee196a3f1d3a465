"""Early warning, before a batch's 24-hour window ends: what the poller learns from each look at a
running batch besides its status.

- **Stuck**: an `in_progress` batch with no line more done for STUCK_AFTER_MINUTES is counted on each
  look (`BatchesStuck`, an alarm) and marked on its shard (`stuck_since`, shown by `batchdrop jobs show`)
  until it moves again.
- **Near its expiry**: a batch that is still running EXPIRY_WARNING_HOURS into its window with less than
  EXPIRY_WARNING_DONE_FRACTION of its lines done is marked once (`near_expiry_at`, `BatchesNearExpiry`, an
  alarm); with CANCEL_NEAR_EXPIRY it is cancelled then, so that its unrun lines (`batch_cancelled`, which
  never ran) go into the job's next round at once instead of waiting hours for the expiry; only where a
  round can follow (re-drive on, and the batch's lines not on their last allowed attempt).

Pure: the poller writes the changes with the look's own conditional write (no call of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchdrop.integrations.zerogpu import CANCELLABLE_STATUSES, Batch
from batchdrop.models import RequestCounts, Shard
from batchdrop.settings import Settings

WINDOW_SECONDS = 24 * 3600
"""The API's completion window (`24h`, the only one it accepts)."""


@dataclass(frozen=True, slots=True)
class Look:
    """What one look at a running batch says, and the shard fields to record with it."""

    changes: dict[str, Any] = field(default_factory=dict)
    stuck: bool = False
    newly_stuck: bool = False
    newly_near_expiry: bool = False
    cancel_early: bool = False


def _done(counts: RequestCounts | None) -> int:
    return (counts.completed + counts.failed) if counts else 0


def window_of(shard: Shard, batch: Batch | None = None) -> tuple[int, int] | None:
    """When the batch's window began and when it ends (the API's own times where it gave them)."""
    created = (batch.created_at if batch else None) or shard.create_started_at
    if created is None:
        return None
    ends = (batch.expires_at if batch else None) or created + WINDOW_SECONDS
    return created, ends


def expiry_warning_at(shard: Shard, settings: Settings, batch: Batch | None = None) -> int | None:
    window = window_of(shard, batch)
    return None if window is None else window[0] + int(settings.expiry_warning_hours * 3600)


def look_at(shard: Shard, batch: Batch, counts: RequestCounts | None, now: int, settings: Settings) -> Look:
    """The running batch's progress, stuck and near-expiry marks as of `now`."""
    status = str(batch.status)
    moved = shard.progress_at is None or shard.batch_status != status or _done(counts) > _done(shard.request_counts)
    progress_at = now if moved else shard.progress_at
    assert progress_at is not None
    changes: dict[str, Any] = {}
    if progress_at != shard.progress_at:
        changes["progress_at"] = progress_at
    stuck = status == "in_progress" and now - progress_at >= settings.stuck_after_minutes * 60
    if stuck and shard.stuck_since is None:
        changes["stuck_since"] = now
    elif not stuck and shard.stuck_since is not None:
        changes["stuck_since"] = None
    near = False
    warning_at = expiry_warning_at(shard, settings, batch)
    if status in CANCELLABLE_STATUSES and warning_at is not None and now >= warning_at:
        total = counts.total if counts else 0
        share_done = _done(counts) / total if total else 0.0
        near = share_done < settings.expiry_warning_done_fraction
    newly_near = near and shard.near_expiry_at is None
    if newly_near:
        changes["near_expiry_at"] = now
    # Only where a round can follow: else the lines it could still finish would end as failures.
    can_follow = settings.redrive_enabled and shard.attempt <= settings.max_redrive_rounds
    cancel_early = near and settings.cancel_near_expiry and can_follow and shard.cancelled_early_at is None
    if cancel_early:
        changes["cancelled_early_at"] = now
    return Look(
        changes=changes,
        stuck=stuck,
        newly_stuck=stuck and shard.stuck_since is None,
        newly_near_expiry=newly_near,
        cancel_early=cancel_early,
    )


def warnings_of(shard: Shard, now: int) -> list[str]:
    """What an operator should know about a running batch (for `batchdrop jobs show`)."""
    if shard.batch_id is None or shard.ended_at is not None:
        return []
    found = []
    if shard.stuck_since is not None and shard.progress_at is not None:
        minutes = (now - shard.progress_at) // 60
        found.append(
            f"stuck: batch {shard.batch_id} has done no line for {minutes} minutes (STUCK_AFTER_MINUTES); "
            "if it stays so, cancel the job and retry its lines (batchdrop jobs cancel, then jobs retry)"
        )
    if shard.cancelled_early_at is not None:
        found.append(f"cancelled near its expiry: batch {shard.batch_id}'s unrun lines go into the job's next round")
    elif shard.near_expiry_at is not None:
        found.append(
            f"near its expiry: batch {shard.batch_id} had less than the EXPIRY_WARNING_DONE_FRACTION of its lines "
            "done at EXPIRY_WARNING_HOURS; its unrun lines expire with it and are re-driven after "
            "(CancelNearExpiry=true cancels such batches early)"
        )
    return found
