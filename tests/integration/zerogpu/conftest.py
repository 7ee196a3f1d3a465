"""Fixtures for the ZeroGPU client against the in-process emulator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from zerogpu_emulator_helpers import Sleeps, make_client

from batchdrop.integrations.zerogpu import ZeroGPUClient
from batchdrop_tools.emulator import Emulator, EmulatorSettings, ManualClock

START = 1_767_225_600.0


@pytest.fixture
def settings() -> EmulatorSettings:
    """Overridden by tests that need other emulator knobs."""
    return EmulatorSettings()


@pytest.fixture
def emu(settings: EmulatorSettings) -> Iterator[Emulator]:
    emulator = Emulator(settings=settings, clock=ManualClock(start=START))
    yield emulator
    emulator.close()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(emu: Emulator, sleeps: Sleeps) -> Iterator[ZeroGPUClient]:
    with make_client(emu, sleeps) as zerogpu:
        yield zerogpu
