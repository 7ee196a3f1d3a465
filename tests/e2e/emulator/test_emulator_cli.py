"""`batchdrop emulator` as a subprocess: prints where it listens, answers, exits 0 on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e

LISTENING = re.compile(r"^ZeroGPU emulator listening on (http://127\.0\.0\.1:\d+)$")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_stops_cleanly(stop_signal: signal.Signals) -> None:
    secret = "zgpu-cli-secret-key"
    command = [sys.executable, "-m", "batchdrop_tools.cli", "emulator", "--port", "0", "--api-key", secret]
    command += ["--lines-per-second", "100", "--fail-rate", "1", "--fail-code", "timeout"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        match = LISTENING.match(first_line)
        assert match, first_line
        url = match.group(1)
        assert httpx.get(url + "/v1/batches", headers={"x-api-key": secret}).status_code == 200
        assert httpx.get(url + "/v1/batches", headers={"x-api-key": "wrong"}).status_code == 403
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert secret not in first_line + stdout + stderr


def test_on_a_taken_port_it_says_which_flag_moves_it() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        command = [sys.executable, "-m", "batchdrop_tools.cli", "emulator", "--port", str(port)]
        ended = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert ended.returncode == 2
    (line,) = ended.stderr.strip().splitlines()
    assert f"port {port} on 127.0.0.1 is in use" in line and "choose another with --port" in line
