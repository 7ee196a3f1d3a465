"""A ~50,000-line, ~18 MB input through the real server: uploaded, validated, processed and downloaded
with the emulator's memory bounded well below the file size (everything streams through disk)."""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_emulator_kit import AUTH

from batchdrop_tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.e2e

LINES = 50_000
PADDING = "lorem ipsum dolor sit amet " * 8
MB = 1024 * 1024


def _write_input(path: Path) -> int:
    with path.open("w") as f:
        for i in range(LINES):
            line = {
                "custom_id": f"row-{i:05d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": f"{i} {PADDING}"}]},
            }
            f.write(json.dumps(line) + "\n")
    return path.stat().st_size


class _PhasePeaks:
    """Peak traced memory (every thread: client and server run in this process) per phase."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}

    def end(self, phase: str) -> None:
        self.peaks[phase] = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()


def test_large_input_streams_with_bounded_memory(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    source = tmp_path / "big.jsonl"
    size = _write_input(source)
    assert 15 * MB < size < 20 * MB
    server = serve()
    output = tmp_path / "output.jsonl"
    phases = _PhasePeaks()
    tracemalloc.start()
    try:
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as client, source.open("rb") as upload:
            reply = client.post("/v1/files", files={"file": ("big.jsonl", upload)}, data={"purpose": "batch"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["bytes"] == size
            phases.end("upload")

            created = client.post(
                "/v1/batches", json={"input_file_id": reply.json()["id"], "endpoint": "/v1/chat/completions"}
            )
            assert created.status_code == 200, created.text
            assert created.json()["request_counts"]["total"] == LINES
            phases.end("create")

            deadline = time.monotonic() + 120
            while (batch := client.get(f"/v1/batches/{created.json()['id']}").json())["status"] != "completed":
                assert time.monotonic() < deadline, batch
                time.sleep(0.1)
            assert batch["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
            phases.end("process")

            with (
                client.stream("GET", f"/v1/files/{batch['output_file_id']}/content") as download,
                output.open("wb") as sink,
            ):
                for chunk in download.iter_bytes():
                    sink.write(chunk)
            phases.end("download")
    finally:
        tracemalloc.stop()
    with output.open("rb") as f:
        assert sum(1 for _ in f) == LINES
    assert output.stat().st_size > size  # the results are bigger still, and never held in memory either

    peaks = phases.peaks
    assert peaks["upload"] < 4 * MB, peaks
    # The validator keeps the set of custom_ids seen (bounded by the 50,000-line limit, ~5 MB here), and
    # nothing that grows with the bytes of the file.
    assert peaks["create"] < 9 * MB, peaks
    assert peaks["process"] < 4 * MB, peaks
    assert peaks["download"] < 4 * MB, peaks
