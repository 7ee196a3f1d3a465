"""Each failed API attempt reaches the client's on_error hook, which the functions use to count API errors
by class for the dashboard (ApiErrorsRetryable, ApiErrorsPermanent, ApiErrorsOperational)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from zerogpu_emulator_helpers import Sleeps, make_client

from batchdrop import observability
from batchdrop.integrations.zerogpu import AuthenticationError
from batchdrop_tools.emulator import Emulator
from batchdrop_tools.emulator.faults import Fault


def test_retried_and_final_failures_are_counted_by_class(
    emu: Emulator, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: Counter[str] = Counter()
    monkeypatch.setattr(observability, "count", lambda metric, value=1: counted.update({metric.value: value}))
    seen: list[Any] = []

    def on_error(error: Any) -> None:
        seen.append(error)
        observability.count_api_error(error)

    # Given an API that answers two 503s, then a 401
    emu.faults.add(Fault.http(503, method="GET", path="/v1/batches", times=2))
    with make_client(emu, sleeps, on_error=on_error) as client:
        # When a list call is retried past the 503s, and another call meets the 401
        list(client.list_batches())
        emu.faults.add(Fault.http(401, method="GET", path="/v1/batches", times=1))
        with pytest.raises(AuthenticationError):
            list(client.list_batches())

    # Then each failed attempt was seen, and counted by what it means
    assert len(seen) == 3
    assert counted == Counter({"ApiErrorsRetryable": 2, "ApiErrorsOperational": 1})


def test_a_failing_hook_never_fails_the_call(emu: Emulator, sleeps: Sleeps) -> None:
    def broken(error: Any) -> None:
        raise RuntimeError("observer down")

    emu.faults.add(Fault.http(503, method="GET", path="/v1/batches", times=1))
    with make_client(emu, sleeps, on_error=broken) as client:
        list(client.list_batches())
