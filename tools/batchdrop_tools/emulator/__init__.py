"""A wire-faithful emulator of the ZeroGPU Batch + Files API (see the reference's §4 checklist).

In-process::

    emu = Emulator(settings=EmulatorSettings(lines_per_second=10), clock=ManualClock())
    client = httpx.Client(transport=emu.transport(), base_url="http://zerogpu.test")

Over real sockets: `batchdrop_tools.emulator.server.EmulatorServer`, or the `batchdrop emulator` command; the
server module's docstring documents the `/_emulator` admin surface (faults, calls, clock).

A "reply lost" fault needs `emu.transport()` (it raises httpx.ReadTimeout) or the real server (the
connection is dropped); a bare WSGI caller just gets the reply.
"""

from batchdrop_tools.emulator.app import CallRecord
from batchdrop_tools.emulator.backends import Backend, BackendReply, EchoBackend, UpstreamBackend
from batchdrop_tools.emulator.clock import Clock, ManualClock, SkewableClock, SystemClock
from batchdrop_tools.emulator.emulator import Emulator
from batchdrop_tools.emulator.faults import Fault
from batchdrop_tools.emulator.settings import EmulatorSettings

__all__ = [
    "Backend",
    "BackendReply",
    "CallRecord",
    "Clock",
    "EchoBackend",
    "Emulator",
    "EmulatorSettings",
    "Fault",
    "ManualClock",
    "SkewableClock",
    "SystemClock",
    "UpstreamBackend",
]
