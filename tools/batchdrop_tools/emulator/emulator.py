"""The `Emulator` facade: one emulated ZeroGPU project, usable in-process or behind `EmulatorServer`."""

from __future__ import annotations

from types import TracebackType

from batchdrop_tools.emulator.app import CallLog, CallRecord, EmulatorApp
from batchdrop_tools.emulator.backends import Backend, EchoBackend
from batchdrop_tools.emulator.clock import Clock, ManualClock, SkewableClock, SystemClock
from batchdrop_tools.emulator.engine import Engine
from batchdrop_tools.emulator.faults import Faults
from batchdrop_tools.emulator.inprocess import EmulatorTransport
from batchdrop_tools.emulator.settings import EmulatorSettings
from batchdrop_tools.emulator.store import StorageDir


class Emulator:
    """A wire-faithful fake of the ZeroGPU Batch + Files API.

    `app` is the WSGI callable; `transport()` gives an httpx transport for in-process clients. Requests
    move processing on to the clock's time, so in-process tests need no thread (`EmulatorServer` runs
    one for real-socket use). `faults` injects HTTP errors, slow and lost replies, and line failures.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        clock: Clock | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.clock: Clock = clock or SystemClock()
        self.backend: Backend = backend or EchoBackend()
        self.faults = Faults()
        self.storage = StorageDir(self.settings.storage_dir)
        self.engine = Engine(self.settings, self.clock, self.backend, self.faults, self.storage)
        self._calls = CallLog()
        advance = self.advance if isinstance(self.clock, ManualClock | SkewableClock) else None
        self.app = EmulatorApp(self.engine, self.faults, self.settings, self._calls, advance)

    @property
    def calls(self) -> list[CallRecord]:
        """Every `/v1` request received, in order (faulted ones included)."""
        return self._calls.all()

    def count_calls(self, method: str, path: str) -> int:
        method = method.upper()
        return sum(1 for call in self._calls.all() if call.method == method and call.path == path)

    def transport(self) -> EmulatorTransport:
        return EmulatorTransport(app=self.app)

    def process(self) -> None:
        """Move every running batch on to `clock.now()`."""
        self.engine.process()

    def advance(self, seconds: float) -> float:
        """A ManualClock or SkewableClock only: move time forward, then process. Returns the new time."""
        if not isinstance(self.clock, ManualClock | SkewableClock):
            raise TypeError("advance() needs the emulator to run on a ManualClock or a SkewableClock")
        now = self.clock.advance(seconds)
        self.engine.process()
        return now

    def batch_ids(self) -> list[str]:
        return self.engine.batch_ids()

    def file_ids(self) -> list[str]:
        return self.engine.file_ids()

    def close(self) -> None:
        self.backend.close()
        self.storage.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
