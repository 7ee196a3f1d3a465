"""The completion state machine on small fakes: a job ends once, is announced once (each announcement
marked as it is sent), gives its claim back when an announcement fails, and a rejection never overrides
a job that moved on."""

from __future__ import annotations

import json

import pytest
from machine_fakes import NOW, Machine

from batchdrop.flow.completion import finalize_job, publish_rejection
from batchdrop.flow.split import SplitResult
from batchdrop.models import Job, JobStatus, Outcome, ShardResult, ShardState
from batchdrop.validation import Problem, ProblemCode


@pytest.fixture
def machine() -> Machine:
    return Machine()


def collected_job(machine: Machine, *, succeeded: int, failed: int, shards: int = 1) -> Job:
    job = machine.job(shards=shards)
    for index in range(shards):
        base = f"work/{job.job_id}/results/{index:05d}"
        machine.s3.objects[f"{base}.output.jsonl"] = b'{"custom_id": "ok"}\n' * succeeded
        machine.s3.objects[f"{base}.errors.jsonl"] = b'{"custom_id": "bad"}\n' * failed
        machine.shard(
            job,
            index,
            state=ShardState.COLLECTED,
            batch_id=f"batch-{index}",
            result=ShardResult(
                succeeded=succeeded,
                failed=failed,
                errors_by_code={"invalid_request_error": failed} if failed else {},
                output_key=f"{base}.output.jsonl",
                errors_key=f"{base}.errors.jsonl",
            ),
        )
        machine.store.note_progress(machine.store.shards[(job.job_id, index)])
    return machine.store.jobs[job.job_id]


def test_a_job_with_a_shard_still_out_is_left_as_it_is(machine: Machine) -> None:
    job = machine.job(shards=2)
    machine.shard(job, 0, state=ShardState.COLLECTED)
    machine.shard(job, 1, state=ShardState.SUBMITTED)

    assert finalize_job(job.job_id, machine.services()) == job
    assert machine.store.job_writes == 0 and machine.notifier.events == []


def test_the_last_shard_in_ends_the_job_once_with_one_report_and_one_announcement(machine: Machine) -> None:
    # Given every shard collected, two of three lines answered
    job = collected_job(machine, succeeded=2, failed=1)

    # When the job is finalized, and finalized again (a redelivery)
    finished = finalize_job(job.job_id, machine.services())
    again = finalize_job(job.job_id, machine.services())

    # Then it ended partial, with the merged files and the report, announced exactly once
    assert finished is not None and finished.status == JobStatus.FINISHED and finished.outcome == Outcome.PARTIAL
    report = json.loads(machine.s3.objects["outbox/x/report.json"])
    assert report["counts"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert report["errors_by_code"] == {"invalid_request_error": 1}
    assert machine.s3.objects["outbox/x/output.jsonl"].count(b"\n") == 2
    assert [kind for kind, _ in machine.notifier.events] == ["Batch Job Finished"]
    assert len(machine.notifier.messages) == 1
    stored = machine.store.jobs[job.job_id]
    assert stored.notified_at == NOW and stored.finished_event_sent_at and stored.finished_message_sent_at
    assert again is not None and again.notified_at == NOW


def test_a_failed_announcement_gives_the_claim_back_and_the_retry_sends_only_what_is_missing(
    machine: Machine,
) -> None:
    # Given SNS failing once, after the event went out
    job = collected_job(machine, succeeded=1, failed=0)
    machine.notifier.fail_messages = 1

    # When the job is finalized, the error goes on to the caller (its message is retried)
    with pytest.raises(RuntimeError, match="SNS is down"):
        finalize_job(job.job_id, machine.services())
    stored = machine.store.jobs[job.job_id]
    assert stored.notify_claimed_at is None  # given back: the retry need not wait for the lease
    assert stored.finished_event_sent_at is not None and stored.notified_at is None

    # Then the retry sends the SNS message only: the event is not sent twice
    finalize_job(job.job_id, machine.services(owner="invocation-2"))
    assert [kind for kind, _ in machine.notifier.events] == ["Batch Job Finished"]
    assert len(machine.notifier.messages) == 1
    assert machine.store.jobs[job.job_id].notified_at is not None


def test_someone_elses_claim_is_respected_until_its_lease_ends(machine: Machine) -> None:
    job = collected_job(machine, succeeded=1, failed=0)
    machine.store.jobs[job.job_id] = machine.store.jobs[job.job_id].model_copy(
        update={"status": JobStatus.FINISHED, "outcome": Outcome.SUCCEEDED, "notify_claimed_at": NOW}
    )

    finalize_job(job.job_id, machine.services())
    assert machine.notifier.events == []

    machine.clock.advance(3600)  # past NOTIFY_LEASE_SECONDS: the claimant died
    finalize_job(job.job_id, machine.services())
    assert [kind for kind, _ in machine.notifier.events] == ["Batch Job Finished"]


def _bad_split() -> SplitResult:
    split = SplitResult()
    split.lines = 2
    split.note(Problem(ProblemCode.INVALID_JSON, "Line 2 is not valid JSON", 2))
    return split


def test_a_rejection_writes_its_report_and_announces_it(machine: Machine) -> None:
    job = machine.job(status=JobStatus.RECEIVED)
    machine.s3.objects["outbox/x/output.jsonl"] = b"an earlier version's results\n"

    rejected = publish_rejection(job, _bad_split(), machine.services())

    assert rejected.status == JobStatus.REJECTED and rejected.outcome == Outcome.REJECTED
    report = json.loads(machine.s3.objects["outbox/x/report.json"])
    assert report["validation_errors"] == [{"line": 2, "code": "invalid_json", "message": "Line 2 is not valid JSON"}]
    assert "outbox/x/output.jsonl" not in machine.s3.objects  # one version's files only
    ((kind, detail),) = machine.notifier.events
    assert (kind, detail["outcome"], detail["validation_error_count"]) == ("Batch Job Finished", "rejected", 1)


def test_a_rejection_leaves_a_job_that_another_delivery_accepted_alone(machine: Machine) -> None:
    job = machine.job(status=JobStatus.RECEIVED)
    machine.store.jobs[job.job_id] = job.model_copy(update={"status": JobStatus.SUBMITTING, "version": 1})

    kept = publish_rejection(job, _bad_split(), machine.services())

    assert kept.status == JobStatus.SUBMITTING
    assert "outbox/x/report.json" not in machine.s3.objects and machine.notifier.events == []


def test_a_job_accepted_while_its_rejection_was_being_written_is_not_announced_as_rejected(
    machine: Machine,
) -> None:
    # Given a delivery rejecting the input, and another one accepting it while the report is written
    job = machine.job(status=JobStatus.RECEIVED)
    write_report = machine.s3.put_object

    def accepted_meanwhile(**kwargs):  # type: ignore[no-untyped-def]
        stored = machine.store.jobs[job.job_id]
        machine.store.jobs[job.job_id] = stored.model_copy(
            update={"status": JobStatus.SUBMITTING, "version": stored.version + 1}
        )
        return write_report(**kwargs)

    machine.s3.put_object = accepted_meanwhile  # type: ignore[method-assign]

    # When the rejection goes on
    kept = publish_rejection(job, _bad_split(), machine.services())

    # Then the job stays accepted, and no `Batch Job Finished` says it was rejected
    assert kept.status == JobStatus.SUBMITTING
    assert machine.notifier.events == []
    assert machine.store.jobs[job.job_id].notify_claimed_at is None
