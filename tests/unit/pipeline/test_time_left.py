"""The time left of a running job: at the pace its batches showed when the poller last looked."""

from __future__ import annotations

from testsupport import a_job

from batchdrop.flow import progress
from batchdrop.models import BatchProgress, Job


def running_job() -> Job:
    job: Job = a_job(received_at=0)
    return job


def test_a_look_that_ages_does_not_make_the_job_slower() -> None:
    # Given a batch seen 100 s after its creation with a tenth of its lines done
    look = {"0": BatchProgress(status="in_progress", total=1_000, completed=100, created_at=0, seen_at=100)}
    # When the job is read at once, and again 300 s later with no newer look (the poller looks every few minutes)
    at_once = progress.view(running_job(), 100, look).eta_seconds
    later = progress.view(running_job(), 400, look).eta_seconds
    # Then the time left counts down from the pace at the look, instead of growing with the look's age
    assert (at_once, later) == (900, 600)
    assert progress.view(running_job(), 5_000, look).eta_seconds is None  # late: not known until the next look


def test_a_look_from_before_seen_at_was_kept_is_read_as_of_now() -> None:
    look = {"0": BatchProgress(status="in_progress", total=1_000, completed=100, created_at=0)}
    assert progress.view(running_job(), 100, look).eta_seconds == 900
