"""The emulator over real sockets, and the `batchdrop emulator` command.

`EmulatorServer(emu, host, port)` serves `emu.app` with werkzeug's threaded server and runs a background
thread that calls `emu.process()` every `tick_seconds`.

Admin surface (no auth; not recorded in `emu.calls`):

- `POST /_emulator/faults` with a JSON fault, one of
  `{"kind": "http", "status": 503, "method": "POST", "path": "/v1/batches", "times": 2, "retry_after": "1"}`
  (429 also takes `"error_type": "rate_limit_exceeded" | "insufficient_quota"`),
  `{"kind": "slow", "seconds": 2.0, "method": "GET", "path": "/v1/batches/*", "times": 1}`,
  `{"kind": "reply_lost", "method": "POST", "path": "/v1/batches", "times": 1}`,
  `{"kind": "line_errors", "code": "internal_error", "rate": 0.1, "seed": 0}` or
  `{"kind": "line_errors", "code": "rate_limit_exceeded", "custom_ids": ["q-2"]}`; add
  `"times_per_line": N` to fail each such line on its first N attempts only (it heals when sent again);
  `{"kind": "stall_batches", "after_lines": 0, "times": 1}`: the next batch created runs that many lines,
  then stays `in_progress` with no progress until it is cancelled or expires (a stuck batch).
  `method` absent = any method; `path` is an fnmatch pattern (default `*`); `times: null` = forever.
- `DELETE /_emulator/faults` clears every fault; `GET /_emulator/faults` lists them.
- `GET /_emulator/calls`: `{"object": "list", "data": [{"method", "path", "status", "request_id", "at"}]}`.
- `POST /_emulator/advance` `{"seconds": N}`: moves the emulator's clock ahead (a ManualClock, or the SkewableClock
  of `batchdrop local`: wall time plus what was advanced; 400 on the wall clock); replies `{"now": t}`.
- `POST /_emulator/process`: run a processing step now.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from types import FrameType, TracebackType
from typing import IO, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from batchdrop_tools.emulator.backends import Backend, EchoBackend, UpstreamBackend
from batchdrop_tools.emulator.clock import SystemClock
from batchdrop_tools.emulator.emulator import Emulator
from batchdrop_tools.emulator.settings import EmulatorSettings
from batchdrop_tools.ports import PortUnavailable, check_port_free

_READ_PIECE = 64 * 1024


class _PiecewiseReader:
    """Wraps the socket reader so a large `read(n)` is done in 64 KiB pieces. werkzeug drains every
    connection with `read(10_000_000)`, which makes a buffered reader allocate 10 MB up front even when
    nothing is left to read; reading piecewise keeps the server's memory flat."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size <= _READ_PIECE:
            return self._inner.read(-1 if size is None else size)
        pieces: list[bytes] = []
        remaining = size
        while remaining > 0:
            piece = self._inner.read(min(remaining, _READ_PIECE))
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
        return b"".join(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler with piecewise reads and no per-request access log on stderr."""

    def setup(self) -> None:
        super().setup()
        self.rfile = _PiecewiseReader(self.rfile)  # type: ignore[assignment,arg-type]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class EmulatorServer:
    """Serves an `Emulator` on a real port (0 = a free one) with a background processing thread."""

    def __init__(
        self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *, tick_seconds: float = 0.05
    ) -> None:
        self.emulator = emulator
        self._tick_seconds = tick_seconds
        self._server: BaseWSGIServer = make_server(
            host, port, emulator.app, threaded=True, request_handler=_RequestHandler
        )
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> EmulatorServer:
        if self._threads:
            return self
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._process_loop, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._threads:
            self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _process_loop(self) -> None:
        if self.emulator.settings.manual_processing:
            return
        while not self._stop.wait(self._tick_seconds):
            try:
                self.emulator.process()
            except Exception:
                traceback.print_exc(file=sys.stderr)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8400, help="the port to listen on (default: %(default)s)")
    parser.add_argument("--api-key", help="the only x-api-key accepted (default: any non-empty key)")
    parser.add_argument("--project-id", help="the only x-project-id accepted when one is sent")
    parser.add_argument("--require-project-id", action="store_true", help="401 without x-project-id")
    parser.add_argument("--lines-per-second", type=float, help="processing rate per batch (default: instant)")
    parser.add_argument(
        "--finalizing-seconds",
        type=float,
        default=0.0,
        help="how long a batch stays finalizing once every line is done (default: %(default)s)",
    )
    parser.add_argument(
        "--line-format",
        choices=("zerogpu", "openai"),
        default="zerogpu",
        help="the shape of output lines: ZeroGPU's or OpenAI's (default: %(default)s)",
    )
    parser.add_argument("--upstream", metavar="URL", help="run lines against this OpenAI-compatible server")
    parser.add_argument(
        "--upstream-timeout", type=float, default=60.0, help="seconds a line may take upstream (default: %(default)s)"
    )
    parser.add_argument("--data-dir", help="where files live (default: a temp dir removed on exit)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="fraction of lines that fail (0..1)")
    parser.add_argument("--fail-code", default="internal_error", help="the error code of failed lines")
    parser.add_argument(
        "--manual-processing",
        action="store_true",
        help="batches move on only when POST /_emulator/process asks (for benchmarks)",
    )


def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM; returns the exit code."""
    settings = EmulatorSettings(
        api_key=args.api_key,
        project_id=args.project_id,
        require_project_id=args.require_project_id,
        lines_per_second=args.lines_per_second,
        finalizing_seconds=args.finalizing_seconds,
        line_format=args.line_format,
        storage_dir=args.data_dir,
        manual_processing=args.manual_processing,
    )
    backend: Backend = UpstreamBackend(args.upstream, timeout=args.upstream_timeout) if args.upstream else EchoBackend()
    try:
        check_port_free(args.host, args.port, "--port", "another emulator or batchdrop local")
    except PortUnavailable as error:
        print(f"batchdrop emulator: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, Any] = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Emulator(settings, SystemClock(), backend) as emulator:
            if args.fail_rate > 0:
                emulator.faults.line_errors(args.fail_code, rate=args.fail_rate, seed=0)
            with EmulatorServer(emulator, args.host, args.port) as server:
                print(f"ZeroGPU emulator listening on {server.url}", flush=True)
                while not stop.wait(0.5):
                    pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
