"""Helpers for the in-process emulator tests (a uniquely named module: these test dirs are not packages)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from batchdrop_tools.emulator import Emulator

START = 1_767_225_600.0
BASE_URL = "http://zerogpu.test"
AUTH = {"x-api-key": "zgpu-test-key", "x-project-id": "11111111-2222-3333-4444-555555555555"}


def chat_line(custom_id: str, question: str, **overrides: Any) -> dict[str, Any]:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "test-model", "messages": [{"role": "user", "content": question}]},
    }
    line.update(overrides)
    return line


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def parse_jsonl(content: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in content.splitlines() if line.strip()]


class Api:
    """The calls every test makes, on one in-process client."""

    def __init__(self, emulator: Emulator, client: httpx.Client) -> None:
        self.emu = emulator
        self.client = client

    def upload(self, content: bytes, filename: str = "input.jsonl") -> dict[str, Any]:
        reply = self.client.post("/v1/files", files={"file": (filename, content)}, data={"purpose": "batch"})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def create(self, content: bytes, **fields: Any) -> httpx.Response:
        file_id = self.upload(content)["id"]
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", **fields}
        return self.client.post("/v1/batches", json=body)

    def create_ok(self, lines: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        reply = self.create(jsonl(lines), **fields)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def batch(self, batch_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/v1/batches/{batch_id}")
        assert reply.status_code == 200, reply.text
        return reply.json()

    def content(self, file_id: str) -> list[dict[str, Any]]:
        reply = self.client.get(f"/v1/files/{file_id}/content")
        assert reply.status_code == 200, reply.text
        return parse_jsonl(reply.content)

    def questions(self, count: int, prefix: str = "q") -> list[dict[str, Any]]:
        return [chat_line(f"{prefix}-{i}", f"Question {i}?") for i in range(1, count + 1)]
