"""A port one of this package's servers needs, checked before anything starts: a taken one is one line
naming what may hold it and the flag that moves it (the servers themselves would exit with their own words)."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(OSError):
    """The message names the port, what may hold it, and the flag to change."""


def check_port_free(host: str, port: int, flag: str, holders: str) -> None:
    """Raises PortUnavailable if `host:port` cannot be listened on (port 0, any free one, always can)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortUnavailable(
                    f"port {port} on {host} is in use ({error.strerror}); {holders} may be running: "
                    f"stop it, or choose another with {flag}"
                ) from None
            raise PortUnavailable(f"cannot listen on {host}:{port} ({error.strerror or error}): check --host") from None
