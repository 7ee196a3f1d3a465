"""In-process emulator fixtures: a ManualClock, an `Emulator`, and an httpx client on its transport."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from emulator_testkit import AUTH, BASE_URL, START, Api

from batchdrop_tools.emulator import Emulator, EmulatorSettings, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def make_api(clock: ManualClock) -> Iterator[Callable[..., Api]]:
    """Build an emulator with the given settings (and optional backend) and a client for it."""
    made: list[tuple[Emulator, httpx.Client]] = []

    def make(*, backend: Any = None, headers: dict[str, str] | None = None, **settings: Any) -> Api:
        emulator = Emulator(settings=EmulatorSettings(**settings), clock=clock, backend=backend)
        client = httpx.Client(
            transport=emulator.transport(), base_url=BASE_URL, headers=AUTH if headers is None else headers
        )
        made.append((emulator, client))
        return Api(emulator, client)

    yield make
    for emulator, client in made:
        client.close()
        emulator.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()
