"""The submission state machine, shard by shard, on small fakes: each checkpoint, each kind of failure,
each bound. (The same machine against moto and the emulator: tests/integration/pipeline.)"""

from __future__ import annotations

import pytest
from machine_fakes import NOW, Machine, batch

from batchdrop.flow.submission import submit_shard
from batchdrop.integrations.store import NoSlotAvailable, StaleRecord
from batchdrop.integrations.zerogpu import (
    AuthenticationError,
    BadRequestError,
    FileObject,
    InsufficientQuotaError,
    ServerError,
)
from batchdrop.models import FailureCode, JobStatus, ShardState
from batchdrop.timing import RETRY_LATER_SECONDS


@pytest.fixture
def machine() -> Machine:
    return Machine()


def test_a_fresh_shard_is_uploaded_then_created_with_every_checkpoint_recorded(machine: Machine) -> None:
    # Given a shard that has never been tried
    job = machine.job()
    shard = machine.shard(job)

    # When it is submitted
    done = submit_shard(shard, machine.services())

    # Then the file is uploaded and the batch created, nothing looked up (no earlier attempt to adopt)
    assert machine.api.calls == ["upload", "create"]
    assert (done.state, done.batch_id, done.input_file_id) == (ShardState.SUBMITTED, "batch-1", "file-1")
    assert done.upload_started_at == NOW and done.create_started_at == NOW
    assert (done.lease_owner, done.lease_until, done.holds_slot) == (None, None, True)
    assert machine.store.in_use == 1
    assert machine.store.jobs[job.job_id].started_shards == {0}


def test_an_upload_that_may_have_happened_is_looked_for_before_uploading_again(machine: Machine) -> None:
    # Given an attempt that died after marking the upload as started
    job = machine.job()
    shard = machine.shard(job, upload_started_at=NOW - 30, holds_slot=True)
    machine.store.in_use = 1
    machine.api.found_file = FileObject(id="file-earlier", bytes=shard.bytes, filename=shard.upload_filename)

    # When the shard is submitted again
    done = submit_shard(shard, machine.services())

    # Then the earlier upload is adopted, not repeated (and the create, never started, is made)
    assert machine.api.calls == ["find_file", "create"]
    assert done.input_file_id == "file-earlier" and done.state == ShardState.SUBMITTED
    assert machine.store.in_use == 1  # the slot it held, not a second one


def test_a_create_that_may_have_happened_is_adopted_not_repeated(machine: Machine) -> None:
    # Given an attempt that died after starting the create (the reply was lost)
    job = machine.job()
    shard = machine.shard(job, input_file_id="file-1", upload_started_at=NOW - 60, create_started_at=NOW - 30)
    machine.api.found_batch = batch("batch-earlier")

    # When the shard is submitted again
    done = submit_shard(shard, machine.services())

    # Then the batch found by the shard's metadata is adopted: no second billable batch
    assert "create" not in machine.api.calls
    assert done.batch_id == "batch-earlier" and done.state == ShardState.SUBMITTED


def test_a_permanent_refusal_ends_the_shard_and_gives_its_slot_back(machine: Machine) -> None:
    job = machine.job()
    shard = machine.shard(job)
    machine.api.create_error = BadRequestError("Line 1 is not valid JSON", status=400, line=1)

    done = submit_shard(shard, machine.services())

    assert done.state == ShardState.TERMINAL
    assert done.failure_code == FailureCode.BATCH_CREATE_FAILED
    assert "not valid JSON" in (done.failure_message or "")
    assert machine.store.in_use == 0
    assert machine.api.calls.count("create") == 1


@pytest.mark.parametrize(
    "error",
    [
        ServerError("upstream failed", status=503),
        AuthenticationError("Invalid credentials", status=401),
        InsufficientQuotaError("top up", status=429, code="insufficient_quota"),
    ],
    ids=["retryable", "operational-key", "operational-quota"],
)
def test_a_failure_that_may_pass_is_deferred_keeping_its_slot(machine: Machine, error: Exception) -> None:
    job = machine.job()
    shard = machine.shard(job)
    machine.api.create_error = error  # type: ignore[assignment]

    done = submit_shard(shard, machine.services())

    # Then the shard waits to be tried again, its lease released, its failure recorded
    assert done.state == ShardState.PENDING
    assert (done.lease_owner, done.lease_until) == (None, None)
    assert done.next_poll_at == NOW + RETRY_LATER_SECONDS
    assert done.failure_code and done.first_deferred_at == NOW
    assert done.submit_attempts == 1 and machine.store.in_use == 1


def test_a_shard_leased_by_another_invocation_is_left_to_it(machine: Machine) -> None:
    job = machine.job()
    shard = machine.shard(job, lease_owner="invocation-0", lease_until=NOW + 600, holds_slot=True)

    with pytest.raises(StaleRecord):
        submit_shard(shard, machine.services(owner="invocation-1"))
    assert machine.api.calls == []


def test_no_slot_no_call(machine: Machine) -> None:
    job = machine.job()
    shard = machine.shard(job)
    machine.store.in_use = 2  # MAX_BATCHES_IN_FLIGHT

    with pytest.raises(NoSlotAvailable):
        submit_shard(shard, machine.services())
    assert machine.api.calls == [] and machine.store.shards[(job.job_id, 0)].lease_owner is None


def test_past_the_retry_bound_the_shard_ends_without_reading_the_secret(machine: Machine) -> None:
    # Given a shard first tried longer ago than SUBMIT_RETRY_LIMIT_HOURS, and a secret that cannot be read
    job = machine.job()
    shard = machine.shard(job, first_attempt_at=NOW - 25 * 3600, failure_code="api_unreachable")
    machine.credentials_readable = False

    done = submit_shard(shard, machine.services())

    assert done.state == ShardState.TERMINAL and done.failure_code == FailureCode.BATCH_CREATE_FAILED
    assert "SUBMIT_RETRY_LIMIT_HOURS" in (done.failure_message or "")
    assert machine.api.calls == []


def test_a_job_whose_split_is_not_committed_submits_nothing(machine: Machine) -> None:
    job = machine.job(status=JobStatus.RECEIVED)
    shard = machine.shard(job)

    with pytest.raises(StaleRecord):
        submit_shard(shard, machine.services())
    assert machine.api.calls == []


def test_a_cancelled_job_ends_its_unsubmitted_shard_without_a_call(machine: Machine) -> None:
    job = machine.job(cancel_requested_at=NOW - 1)
    shard = machine.shard(job)

    done = submit_shard(shard, machine.services())

    assert done.state == ShardState.TERMINAL and done.failure_code == FailureCode.BATCH_CANCELLED
    assert machine.api.calls == []


def test_a_write_lost_to_an_unrelated_change_is_made_again_while_the_lease_is_ours(machine: Machine) -> None:
    # Given a submission under way, and the poller marking the shard (a hand-over) meanwhile
    job = machine.job()
    shard = machine.shard(job)
    services = machine.services()
    original = machine.api.upload_file_or_adopt

    def upload_while_the_poller_writes(*args, **kwargs):  # type: ignore[no-untyped-def]
        stored = machine.store.shards[(job.job_id, 0)]
        machine.store.shards[(job.job_id, 0)] = stored.model_copy(
            update={"handed_over_at": NOW, "version": stored.version + 1}
        )
        return original(*args, **kwargs)

    machine.api.upload_file_or_adopt = upload_while_the_poller_writes  # type: ignore[method-assign]

    # When it goes on
    done = submit_shard(shard, services)

    # Then its checkpoints land on the fresh record: nothing lost, nothing raised
    assert done.state == ShardState.SUBMITTED and done.input_file_id == "file-1"
    assert machine.store.shards[(job.job_id, 0)].handed_over_at == NOW
