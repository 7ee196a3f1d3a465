"""The ZeroGPU client over real local sockets (EmulatorServer), where a real timeout is needed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from zerogpu_emulator_helpers import API_KEY, PROJECT_ID, Sleeps, input_file

from batchdrop.integrations.zerogpu import APITimeoutError, RetryPolicy, ZeroGPUClient
from batchdrop_tools.emulator import Emulator, EmulatorSettings, Fault, ManualClock
from batchdrop_tools.emulator.client_kit import FullClient
from batchdrop_tools.emulator.server import EmulatorServer

SHORT = httpx.Timeout(connect=2.0, read=0.3, write=2.0, pool=2.0)


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(settings=EmulatorSettings(reply_lost_delay=0.2), clock=ManualClock(start=1_767_225_600.0))
    with EmulatorServer(emu, host="127.0.0.1", port=0) as server:
        yield emu, server.url
    emu.close()


def _client(url: str, sleeps: Sleeps, **kwargs) -> ZeroGPUClient:
    return ZeroGPUClient(API_KEY, PROJECT_ID, url, timeout=SHORT, sleep=sleeps, random=lambda: 0.5, **kwargs)


def test_slow_reply_raises_a_real_read_timeout(served: tuple[Emulator, str]) -> None:
    emu, url = served
    sleeps = Sleeps()
    with _client(url, sleeps, retry=RetryPolicy(max_attempts=1)) as client:
        batch = client.create_batch(client.upload_file(input_file(1), "in.jsonl").id)
        emu.faults.add(Fault.slow(2.0, method="GET", path="/v1/batches/*", times=1))
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            client.retrieve_batch(batch.id)
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)


def test_slow_reply_is_retried_after_the_read_timeout(served: tuple[Emulator, str]) -> None:
    emu, url = served
    sleeps = Sleeps()
    with _client(url, sleeps) as client:
        batch = client.create_batch(client.upload_file(input_file(1), "in.jsonl").id)
        emu.faults.add(Fault.slow(2.0, method="GET", path="/v1/batches/*", times=1))
        assert client.retrieve_batch(batch.id).id == batch.id
        # One timed-out attempt, one backoff, one success (the emulator logs the slow call only once
        # its 2 s stall ends, so its call count is not checked here).
        assert sleeps.delays == [0.25]


def test_remaining_time_clips_the_read_timeout(served: tuple[Emulator, str]) -> None:
    emu, url = served
    sleeps = Sleeps()
    deadline = time.monotonic() + 1.4
    long_read = httpx.Timeout(connect=2.0, read=30.0, write=2.0, pool=2.0)
    with FullClient(
        API_KEY,
        PROJECT_ID,
        url,
        timeout=long_read,
        sleep=sleeps,
        remaining_time=lambda: deadline - time.monotonic(),
    ) as client:
        uploaded = client.upload_file(input_file(1), "in.jsonl")
        emu.faults.add(Fault.slow(5.0, method="GET", path="/v1/files/*", times=1))
        started = time.monotonic()
        from batchdrop.integrations.zerogpu import DeadlineExceededError

        with pytest.raises(DeadlineExceededError) as info:
            client.retrieve_file(uploaded.id)
        assert time.monotonic() - started < 2.0
        assert isinstance(info.value.last_error, APITimeoutError)


def test_ambiguous_create_over_sockets_is_adopted(served: tuple[Emulator, str]) -> None:
    emu, url = served
    with _client(url, Sleeps()) as client:
        uploaded = client.upload_file(input_file(2), "in.jsonl")
        emu.faults.add(Fault.reply_lost(method="POST", path="/v1/batches", times=1))
        batch = client.create_batch_or_adopt(uploaded.id, {"job_id": "sock-1"})
        assert batch.metadata == {"job_id": "sock-1"}
        assert emu.count_calls("POST", "/v1/batches") == 1
        assert [b.id for b in client.list_batches()] == [batch.id]
