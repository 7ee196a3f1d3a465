"""Real-socket emulator fixtures: `serve(**settings)` starts an `EmulatorServer` on a free port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from e2e_emulator_kit import API_KEY, PROJECT_ID

from batchdrop_tools.emulator import Emulator, EmulatorSettings
from batchdrop_tools.emulator.server import EmulatorServer


@pytest.fixture
def serve() -> Iterator[Callable[..., EmulatorServer]]:
    started: list[tuple[Emulator, EmulatorServer]] = []

    def start(**settings: Any) -> EmulatorServer:
        settings.setdefault("api_key", API_KEY)
        settings.setdefault("project_id", PROJECT_ID)
        emulator = Emulator(settings=EmulatorSettings(**settings))
        server = EmulatorServer(emulator, host="127.0.0.1", port=0).start()
        started.append((emulator, server))
        return server

    yield start
    for emulator, server in started:
        server.stop()
        emulator.close()
