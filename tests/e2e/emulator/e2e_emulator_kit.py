"""Shared constants and helpers for the real-socket emulator tests (a uniquely named module: these test
dirs are not packages, so `conftest` cannot be imported from safely)."""

from __future__ import annotations

import json
from typing import Any

API_KEY = "zgpu-e2e-key"
PROJECT_ID = "0b6c3a52-3c47-4d3e-9a43-5d8d2b3f1e10"
AUTH = {"x-api-key": API_KEY, "x-project-id": PROJECT_ID}


def chat_line(custom_id: str, question: str) -> str:
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "<model-id>", "messages": [{"role": "user", "content": question}]},
    }
    return json.dumps(line)
