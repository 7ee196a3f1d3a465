"""The ZeroGPU client against the in-process emulator: lifecycle, paging, faults, adoption, line parsing."""

from __future__ import annotations

import io

import pytest
from zerogpu_emulator_helpers import Sleeps, input_file, jsonl, make_client

from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    BadRequestError,
    BatchStatus,
    InsufficientQuotaError,
    LineCategory,
    NotFoundError,
    ZeroGPUClient,
    iter_result_lines,
)
from batchdrop_tools.emulator import Emulator, EmulatorSettings, Fault
from batchdrop_tools.emulator.client_kit import FullClient


def _download_lines(client: ZeroGPUClient, file_id: str):
    target = io.BytesIO()
    client.download_file_content(file_id, target)
    return list(iter_result_lines(target.getvalue().splitlines()))


def test_upload_create_process_retrieve_download(emu: Emulator, client: ZeroGPUClient) -> None:
    # Given an input of three lines, one of which fails with internal_error
    emu.faults.line_errors("internal_error", custom_ids={"q-2"})
    data = jsonl(["q-1", "q-2", "q-3"])
    uploaded = client.upload_file(io.BytesIO(data), "job-1.jsonl")
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (len(data), "job-1.jsonl", "batch")
    assert client.retrieve_file(uploaded.id).id == uploaded.id

    # When a batch runs to completion
    created = client.create_batch(uploaded.id, metadata={"job_id": "job-1"})
    assert created.status is BatchStatus.IN_PROGRESS
    assert created.metadata == {"job_id": "job-1"}
    emu.process()
    batch = client.retrieve_batch(created.id)

    # Then both files hold every line, parsed with the right categories
    assert batch.status is BatchStatus.COMPLETED and batch.is_terminal
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        3,
        2,
        1,
    )
    successes = _download_lines(client, batch.output_file_id)
    failures = _download_lines(client, batch.error_file_id)
    assert sorted(line.custom_id for line in successes) == ["q-1", "q-3"]
    assert all(line.succeeded and line.category is LineCategory.SUCCESS for line in successes)
    assert successes[0].body["object"] == "chat.completion"
    (failure,) = failures
    assert (failure.custom_id, failure.code, failure.category) == (
        "q-2",
        "internal_error",
        LineCategory.TRANSIENT,
    )
    assert failure.retryable
    assert failure.legacy_code
    assert not failure.message.startswith("[legacy:")
    error_file = client.retrieve_file(batch.error_file_id)
    assert error_file.is_error and error_file.purpose == "batch_output"


def test_every_line_code_category_round_trips(emu: Emulator, client: ZeroGPUClient) -> None:
    expected = {
        "q-1": ("internal_error", LineCategory.TRANSIENT),
        "q-2": ("rate_limit_exceeded", LineCategory.TRANSIENT),
        "q-3": ("insufficient_quota", LineCategory.OPERATIONAL),
        "q-4": ("authentication_error", LineCategory.OPERATIONAL),
        "q-5": ("invalid_request_error", LineCategory.PERMANENT),
        "q-6": ("not_found_error", LineCategory.PERMANENT),
        "q-7": ("request_too_large", LineCategory.PERMANENT),
    }
    for custom_id, (code, _) in expected.items():
        emu.faults.line_errors(code, custom_ids={custom_id})
    uploaded = client.upload_file(input_file(8), "codes.jsonl")
    batch = client.create_batch(uploaded.id)
    emu.process()
    batch = client.retrieve_batch(batch.id)
    parsed = {line.custom_id: line for line in _download_lines(client, batch.error_file_id)}
    assert {cid: (line.code, line.category) for cid, line in parsed.items()} == expected
    assert [line.custom_id for line in _download_lines(client, batch.output_file_id)] == ["q-8"]


def test_create_validation_failure_is_a_bad_request_with_line(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(io.BytesIO(jsonl(["a", "a"])), "dup.jsonl")
    with pytest.raises(BadRequestError) as info:
        client.create_batch(uploaded.id)
    assert info.value.line == 2
    assert info.value.request_id and info.value.request_id.startswith("req_")
    assert emu.count_calls("POST", "/v1/batches") == 1


def test_list_auto_paging_over_more_than_100_batches_and_files(emu: Emulator, client: ZeroGPUClient) -> None:
    file_ids = [client.upload_file(input_file(1), f"f-{i}.jsonl").id for i in range(105)]
    batch_ids = [client.create_batch(file_ids[0], metadata={"n": str(i)}).id for i in range(105)]

    listed_batches = [b.id for b in client.list_batches()]
    assert listed_batches == list(reversed(batch_ids))  # newest first
    assert emu.count_calls("GET", "/v1/batches") == 6  # default page of 20

    listed_files = [f.id for f in client.list_files(purpose="batch", page_size=50)]
    assert listed_files == list(reversed(file_ids))
    ascending = [f.id for f in client.list_files(purpose="batch", order="asc", page_size=40)]
    assert ascending == file_ids


def test_find_batch_and_find_file(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(2), "job-7.jsonl")
    target = client.create_batch(uploaded.id, metadata={"job_id": "job-7", "tenant": "t"})
    for i in range(30):
        client.create_batch(uploaded.id, metadata={"job_id": f"other-{i}"})
    assert client.find_batch({"job_id": "job-7"}).id == target.id
    assert client.find_batch({"job_id": "job-7", "tenant": "x"}) is None
    assert client.find_batch({"job_id": "job-7"}, created_after=int(target.created_at) + 1) is None
    assert client.find_file("job-7.jsonl", uploaded.bytes).id == uploaded.id
    assert client.find_file("job-7.jsonl", uploaded.bytes + 1) is None


def test_503_then_success_on_create(emu: Emulator, client: ZeroGPUClient, sleeps: Sleeps) -> None:
    uploaded = client.upload_file(input_file(2), "in.jsonl")
    emu.faults.add(Fault.http(503, method="POST", path="/v1/batches", times=2, retry_after="1"))
    batch = client.create_batch(uploaded.id, metadata={"job_id": "j"})
    assert batch.status is BatchStatus.IN_PROGRESS
    assert emu.count_calls("POST", "/v1/batches") == 3
    assert sleeps.delays == [1.0, 1.0]
    assert len(list(client.list_batches())) == 1


def test_500_on_create_is_ambiguous_and_not_repeated(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(2), "in.jsonl")
    emu.faults.add(Fault.http(500, method="POST", path="/v1/batches", times=1))
    with pytest.raises(AmbiguousRequestError):
        client.create_batch(uploaded.id, metadata={"job_id": "j"})
    assert emu.count_calls("POST", "/v1/batches") == 1


def test_adoption_after_an_ambiguous_create(emu: Emulator, client: ZeroGPUClient) -> None:
    # Given a create whose reply is lost after the batch was made
    uploaded = client.upload_file(input_file(3), "in.jsonl")
    emu.faults.add(Fault.reply_lost(method="POST", path="/v1/batches", times=1))
    # When
    batch = client.create_batch_or_adopt(uploaded.id, {"job_id": "job-42"})
    # Then the one batch is adopted and nothing was POSTed twice
    assert batch.metadata == {"job_id": "job-42"}
    assert emu.count_calls("POST", "/v1/batches") == 1
    assert [b.id for b in client.list_batches()] == [batch.id]


def test_create_or_adopt_creates_again_when_the_first_post_made_nothing(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(3), "in.jsonl")
    emu.faults.add(Fault.http(502, method="POST", path="/v1/batches", times=1))
    batch = client.create_batch_or_adopt(uploaded.id, {"job_id": "job-43"})
    assert emu.count_calls("POST", "/v1/batches") == 2
    assert [b.id for b in client.list_batches()] == [batch.id]


def test_adoption_after_an_ambiguous_upload(emu: Emulator, client: ZeroGPUClient, tmp_path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(jsonl(["a", "b", "c"]))
    emu.faults.add(Fault.reply_lost(method="POST", path="/v1/files", times=1))
    uploaded = client.upload_file_or_adopt(path, "job-42.jsonl")
    assert (uploaded.filename, uploaded.bytes) == ("job-42.jsonl", path.stat().st_size)
    assert emu.count_calls("POST", "/v1/files") == 1
    assert [f.id for f in client.list_files()] == [uploaded.id]


def test_insufficient_quota_is_tried_once(emu: Emulator, client: ZeroGPUClient, sleeps: Sleeps) -> None:
    uploaded = client.upload_file(input_file(1), "in.jsonl")
    emu.faults.add(Fault.http(429, method="POST", path="/v1/batches", times=1, error_type="insufficient_quota"))
    with pytest.raises(InsufficientQuotaError):
        client.create_batch(uploaded.id)
    assert emu.count_calls("POST", "/v1/batches") == 1
    assert sleeps.delays == []


def test_rate_limited_get_is_retried(emu: Emulator, client: ZeroGPUClient, sleeps: Sleeps) -> None:
    uploaded = client.upload_file(input_file(1), "in.jsonl")
    batch = client.create_batch(uploaded.id)
    emu.faults.add(Fault.http(429, method="GET", path="/v1/batches/*", times=2, error_type="rate_limit_exceeded"))
    assert client.retrieve_batch(batch.id).id == batch.id
    assert sleeps.delays == [0.25, 0.5]


def test_lost_reply_on_get_is_retried(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(1), "in.jsonl")
    emu.faults.add(Fault.reply_lost(method="GET", path="/v1/files/*", times=1))
    assert client.retrieve_file(uploaded.id).id == uploaded.id
    assert emu.count_calls("GET", f"/v1/files/{uploaded.id}") == 2


@pytest.mark.parametrize("settings", [EmulatorSettings(lines_per_second=1.0)])
def test_cancel_then_cancel_again(emu: Emulator, client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(10), "in.jsonl")
    batch = client.create_batch(uploaded.id)
    emu.advance(3)
    emu.process()
    cancelling = client.cancel_batch(batch.id)
    assert cancelling.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    emu.advance(1)
    emu.process()
    cancelled = client.retrieve_batch(batch.id)
    assert cancelled.status is BatchStatus.CANCELLED
    # A second cancel hits the 409 for a terminal batch and returns the batch
    again = client.cancel_batch(batch.id)
    assert again.status is BatchStatus.CANCELLED and again.id == batch.id
    never_ran = _download_lines(client, cancelled.error_file_id)
    assert never_ran
    assert {(line.code, line.category) for line in never_ran} == {("batch_cancelled", LineCategory.NEVER_RAN)}
    ran = _download_lines(client, cancelled.output_file_id)
    assert len(ran) + len(never_ran) == 10


def test_cancel_unknown_batch_raises(client: ZeroGPUClient) -> None:
    with pytest.raises(NotFoundError):
        client.cancel_batch("batch_does_not_exist")


@pytest.mark.parametrize("settings", [EmulatorSettings(lines_per_second=1 / 3600)])
def test_expiry_keeps_partial_results(emu: Emulator, client: ZeroGPUClient) -> None:
    # Given a batch of 30 lines that runs one line an hour
    uploaded = client.upload_file(input_file(30), "slow.jsonl")
    batch = client.create_batch(uploaded.id)
    # When the 24 h window runs out
    emu.advance(86_400 + 1)
    emu.process()
    expired = client.retrieve_batch(batch.id)
    # Then the lines that ran are in the output and the rest never ran
    assert expired.status is BatchStatus.EXPIRED and expired.is_terminal
    done = _download_lines(client, expired.output_file_id)
    never_ran = _download_lines(client, expired.error_file_id)
    assert done and never_ran
    assert len(done) + len(never_ran) == 30
    assert all(line.succeeded for line in done)
    assert all(line.code == "batch_expired" and line.retryable for line in never_ran)
    assert all(line.category is LineCategory.NEVER_RAN for line in never_ran)


@pytest.mark.parametrize("settings", [EmulatorSettings(line_format="openai")])
def test_openai_line_format(emu: Emulator, client: ZeroGPUClient) -> None:
    emu.faults.line_errors("internal_error", custom_ids={"q-1"})
    emu.faults.line_errors("invalid_request_error", custom_ids={"q-2"})
    emu.faults.line_errors("batch_expired", custom_ids={"q-3"})
    uploaded = client.upload_file(input_file(4), "openai.jsonl")
    batch = client.create_batch(uploaded.id)
    emu.process()
    batch = client.retrieve_batch(batch.id)
    failures = {line.custom_id: line for line in _download_lines(client, batch.error_file_id)}
    assert failures["q-1"].category is LineCategory.TRANSIENT
    assert failures["q-1"].status_code is not None and failures["q-1"].status_code >= 500
    assert failures["q-2"].category is LineCategory.PERMANENT
    assert failures["q-2"].status_code == 400
    assert failures["q-3"].category is LineCategory.NEVER_RAN
    (success,) = _download_lines(client, batch.output_file_id)
    assert success.custom_id == "q-4" and success.succeeded


def test_delete_file_then_404(client: ZeroGPUClient) -> None:
    uploaded = client.upload_file(input_file(1), "gone.jsonl")
    assert client.delete_file(uploaded.id).deleted
    with pytest.raises(NotFoundError):
        client.retrieve_file(uploaded.id)
    with pytest.raises(NotFoundError):
        client.download_file_content(uploaded.id, io.BytesIO())


@pytest.mark.parametrize("settings", [EmulatorSettings(api_key="zgpu-api-INTEGRATION-KEY")])
def test_wrong_key_is_permission_denied_once(emu: Emulator, sleeps: Sleeps) -> None:
    from batchdrop.integrations.zerogpu import PermissionDeniedError

    with (
        FullClient("zgpu-wrong", transport=emu.transport(), base_url="http://emulator", sleep=sleeps) as bad,
        pytest.raises(PermissionDeniedError),
    ):
        bad.retrieve_file("file-x")
    assert sleeps.delays == []
    with make_client(emu, sleeps) as good, pytest.raises(NotFoundError):
        good.retrieve_file("file-x")
