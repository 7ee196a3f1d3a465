"""In-process use: an httpx transport that calls the WSGI app directly and can lose replies.

The app learns through a thread-local that it runs under this transport (so a "reply lost" fault, or a
slow reply longer than the client's read timeout, becomes httpx.ReadTimeout after the request was
applied), instead of stalling and dropping a socket as it does behind the real server.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import httpx

_local = threading.local()


@dataclass
class InProcessCall:
    """One request served through `EmulatorTransport`: the client's read timeout, and whether the reply was lost."""

    read_timeout: float | None
    reply_lost: bool = False


def current_call() -> InProcessCall | None:
    """The in-process call being served on this thread, if any."""
    return getattr(_local, "call", None)


class EmulatorTransport(httpx.WSGITransport):
    """httpx.WSGITransport, plus lost replies surfacing as httpx.ReadTimeout."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        call = InProcessCall(read_timeout=timeouts.get("read"))
        outer = current_call()
        _local.call = call
        try:
            response = super().handle_request(request)
        finally:
            _local.call = outer
        if call.reply_lost:
            response.close()
            raise httpx.ReadTimeout("the emulator lost the reply (injected fault)", request=request)
        return response
