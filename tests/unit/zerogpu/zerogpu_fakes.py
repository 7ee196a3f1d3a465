"""Fakes for the ZeroGPU client unit tests: a scripted MockTransport, recorded sleeps, a fake clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from batchdrop.integrations.zerogpu import RetryPolicy
from batchdrop_tools.emulator.client_kit import FullClient

API_KEY = "zgpu-api-SECRET-KEY-123"
PROJECT_ID = "0b6f3c1e-7d1a-4c59-9f0e-PROJECT"
BASE = "http://zerogpu.test"

Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def reply(status: int = 200, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """A JSON reply (``body`` None means an empty body)."""
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers={"x-request-id": "req_test", **(headers or {})})


def err(status: int, type_: str | None = None, code: str | None = None, **headers: str) -> httpx.Response:
    body = {"error": {"message": f"boom {status}", "type": type_, "code": code, "param": None}}
    return reply(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def batch_json(batch_id: str = "batch_1", status: str = "in_progress", **extra: Any) -> dict[str, Any]:
    return {
        "id": batch_id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-1",
        "completion_window": "24h",
        "status": status,
        "created_at": 1_767_225_600,
        "request_counts": {"total": 1, "completed": 0, "failed": 0},
        "metadata": {},
        **extra,
    }


def file_json(file_id: str = "file-1", **extra: Any) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": 10,
        "created_at": 1_767_225_600,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        **extra,
    }


@dataclass
class Script:
    """A transport handler that plays ``steps`` in order (the last one repeats) and records requests."""

    steps: list[Step]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            # A fresh copy, so a repeated step can be read again.
            return httpx.Response(step.status_code, headers=step.headers, content=step.content)
        return step(request)

    @property
    def calls(self) -> int:
        return len(self.requests)


@dataclass
class Harness:
    """Builds clients wired to a script, a recording sleep, a fixed random() and a fake clock."""

    random_value: float = 0.5
    clock: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock += seconds

    def client(self, script: Script | Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> FullClient:
        """The pipeline's client, with the test kit's extra calls (retrieve and delete a file)."""
        kwargs.setdefault("retry", RetryPolicy())
        return FullClient(
            API_KEY,
            PROJECT_ID,
            BASE,
            transport=httpx.MockTransport(script),
            sleep=self.sleep,
            random=lambda: self.random_value,
            now=lambda: 1_767_225_600.0 + self.clock,
            **kwargs,
        )
