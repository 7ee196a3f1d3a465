"""The poller's economies on small fakes: what a run does not read."""

from __future__ import annotations

import threading
import time

from botocore.exceptions import ClientError
from machine_fakes import NOW, Machine

from batchdrop.flow.polling import _RunJobs, poll_once


def test_with_nobody_waiting_a_run_never_reads_the_slot_counter() -> None:
    # Given a stack with no shard queued for a slot
    machine = Machine()
    machine.job()

    # When the poller runs
    summary = poll_once(machine.services())

    # Then it asked the queue, found it empty, and left the counter alone
    assert machine.store.slot_reads == 0
    assert summary.handed_over == 0


def test_with_a_shard_waiting_the_counter_is_read_and_the_shard_handed_over() -> None:
    # Given a shard queued for a slot, and slots free
    machine = Machine()
    job = machine.job()
    machine.shard(job)  # PENDING, holding no slot: it waits in the queue

    # When the poller runs
    summary = poll_once(machine.services())

    # Then it read the counter and handed the shard to the submit function
    assert machine.store.slot_reads >= 1
    assert machine.sqs.sent == [("ingest", {"batchdrop": "submit-shard", "job_id": job.job_id, "shard": 0})]
    assert summary.handed_over == 1


def test_threads_asking_about_one_job_at_once_share_one_read() -> None:
    # Given a slow job read and sixteen threads asking about the same job at the same moment
    machine = Machine()
    job = machine.job(cancel_requested_at=NOW)
    original = machine.store.get_job

    def slow_read(job_id: str):  # type: ignore[no-untyped-def]
        time.sleep(0.05)
        return original(job_id)

    machine.store.get_job = slow_read  # type: ignore[method-assign]
    cancelled = _RunJobs(machine.services())
    barrier = threading.Barrier(16)
    answers: list[bool] = []

    def ask() -> None:
        barrier.wait()
        answers.append(cancelled(job.job_id))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then they all have the answer, from one read
    assert answers == [True] * 16
    assert machine.store.job_reads == 1


def test_jobs_read_ahead_answer_without_a_read_of_their_own() -> None:
    # Given a cancelled job and one that is not, read ahead together
    machine = Machine()
    other = machine.job().model_copy(update={"job_id": "job-" + "b" * 32})
    machine.store.jobs[other.job_id] = other
    cancelled_job = machine.job(cancel_requested_at=NOW)
    batch_reads: list[list[str]] = []

    def get_jobs(job_ids):  # type: ignore[no-untyped-def]
        batch_reads.append(list(job_ids))
        return {job_id: machine.store.jobs[job_id] for job_id in job_ids if job_id in machine.store.jobs}

    machine.store.get_jobs = get_jobs  # type: ignore[method-assign]
    cancelled = _RunJobs(machine.services())
    cancelled.prefetch([cancelled_job.job_id, other.job_id, cancelled_job.job_id, "job-gone"])

    # Then the answers come from that one batch read, and a second read-ahead of the same jobs reads nothing
    assert (cancelled(cancelled_job.job_id), cancelled(other.job_id), cancelled("job-gone")) == (True, False, False)
    cancelled.prefetch([other.job_id])
    assert batch_reads == [[cancelled_job.job_id, other.job_id, "job-gone"]]
    assert machine.store.job_reads == 0


def test_a_failed_read_ahead_leaves_each_job_to_be_read_when_asked() -> None:
    # Given a batch read that fails
    machine = Machine()
    job = machine.job(cancel_requested_at=NOW)

    def failing(job_ids):  # type: ignore[no-untyped-def]
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "BatchGetItem")

    machine.store.get_jobs = failing  # type: ignore[method-assign]
    cancelled = _RunJobs(machine.services())
    cancelled.prefetch([job.job_id])

    # Then the question still has its answer, from a read of its own
    assert cancelled(job.job_id) is True
    assert machine.store.job_reads == 1
