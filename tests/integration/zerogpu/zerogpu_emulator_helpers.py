"""Helpers for the ZeroGPU client integration tests."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from batchdrop_tools.emulator import Emulator
from batchdrop_tools.emulator.client_kit import FullClient

API_KEY = "zgpu-api-INTEGRATION-KEY"
PROJECT_ID = "5f0c8a52-6a8e-4a0e-b0a8-1c1f2f3e4d5c"


@dataclass
class Sleeps:
    """A sleep that records its delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_client(emu: Emulator, sleeps: Sleeps, **kwargs: Any) -> FullClient:
    return FullClient(
        API_KEY,
        PROJECT_ID,
        "http://emulator/v1",
        transport=emu.transport(),
        sleep=sleeps,
        random=lambda: 0.5,
        **kwargs,
    )


def jsonl(custom_ids: list[str], model: str = "echo-1") -> bytes:
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {cid}"}]},
        }
        for cid in custom_ids
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def input_file(count: int, prefix: str = "q") -> io.BytesIO:
    return io.BytesIO(jsonl([f"{prefix}-{i}" for i in range(1, count + 1)]))
