"""The `batchdrop local` fixture: one stack process per test module."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator

import pytest
from stack_harness import BIN, RunningStack, clean_env, free_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    aws_port, emulator_port = free_port(), free_port()
    env = clean_env() | {"XDG_RUNTIME_DIR": str(tmp_path_factory.mktemp("runtime"))}
    process = subprocess.Popen(
        [
            str(BIN / "batchdrop"),
            "local",
            "--aws-port",
            str(aws_port),
            "--emulator-port",
            str(emulator_port),
            "--poll-seconds",
            "0.5",
            "--webhook-url",
            "https://hooks.example/batchdrop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    running = RunningStack(f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{emulator_port}", process, env=env)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            if line.strip() == "ready":
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(90):
        process.kill()
        raise AssertionError("batchdrop local never said ready:\n" + "".join(running.output))
    yield running
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, "".join(running.output[-30:])
