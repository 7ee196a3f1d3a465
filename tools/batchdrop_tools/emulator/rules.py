"""ZeroGPU's create-time validation of an input file, written from the wire reference (section 1.4) on
its own: the emulator never borrows the pipeline's validator, so that "submit rejects what the API
would" is a comparison of two implementations. tests/line_rule_cases.py pins both to one table.

The API reads the file in order and stops at the first problem; its messages are exact, N is the 1-based
line number (blank lines are skipped but counted).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any

import orjson

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
MESSAGE_ROLES = ("user", "assistant", "system", "tool", "developer")
MAX_UPLOAD_BYTES = 104_857_600
MAX_FILE_BYTES = 209_715_200
MAX_LINES = 50_000
MAX_LINE_BYTES = 1_048_576
ALLOWED_URLS = frozenset({CHAT_COMPLETIONS_URL})


@dataclass(frozen=True)
class Refusal:
    """Why the API refuses to create the batch: its 400 message, for a line the line number, and a code for
    the stored batch's `errors` (the API documents the message, not these codes)."""

    code: str
    message: str
    line: int | None = None


def check_file(source: IO[bytes], endpoint: str, *, size: int, copy: IO[bytes]) -> tuple[Refusal | None, int]:
    """Reads `source` (of `size` bytes), writing each accepted line to `copy`. Returns the first refusal
    (or None) and the number of request lines."""
    if size > MAX_FILE_BYTES:
        return Refusal("file_too_large", f"Input file exceeds maximum size of {MAX_FILE_BYTES} bytes"), 0
    seen: set[str] = set()
    first_url: str | None = None
    requests = 0
    number = 0
    while True:
        raw = source.readline(MAX_LINE_BYTES + 2)
        if not raw:
            break
        number += 1
        ended = raw.endswith(b"\n")
        line = raw[:-1] if ended else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE_BYTES:
            if not ended:
                _skip_rest_of_line(source)
            requests += 1
            if requests > MAX_LINES:
                return Refusal("too_many_lines", f"Input file exceeds maximum of {MAX_LINES} lines"), 0
            return Refusal("line_too_large", f"Line {number} exceeds maximum size of {MAX_LINE_BYTES} bytes", number), 0
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        requests += 1
        if requests > MAX_LINES:
            return Refusal("too_many_lines", f"Input file exceeds maximum of {MAX_LINES} lines"), 0
        refusal, url = _check_line(number, line, endpoint, seen)
        if refusal is not None:
            return refusal, 0
        first_url = first_url or url
        copy.write(line + b"\n")
    if requests == 0:
        return Refusal("empty_file", "Input file contains no JSONL lines"), 0
    if endpoint not in ALLOWED_URLS and first_url is not None:
        return Refusal(
            "endpoint_mismatch", f'endpoint "{endpoint}" does not match the url "{first_url}" used by the input file'
        ), 0
    return None, requests


def _skip_rest_of_line(source: IO[bytes]) -> None:
    while (piece := source.readline(MAX_LINE_BYTES)) and not piece.endswith(b"\n"):
        pass


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _parse(line: bytes) -> Any:
    """orjson first (what it reads, the stdlib reads alike); a line it refuses is decided by the stdlib
    reading below, which accepts a few things orjson does not (numbers past a double, read as infinity)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        pass
    document = json.loads(line.decode("utf-8"), parse_constant=_not_json)
    # JSON text is Unicode: an escaped lone surrogate ("\ud800") is not
    json.dumps(document, ensure_ascii=False).encode("utf-8")
    return document


def _check_line(number: int, line: bytes, endpoint: str, seen: set[str]) -> tuple[Refusal | None, str | None]:
    n = number
    try:
        document: Any = _parse(line)
    except (UnicodeError, ValueError, RecursionError):
        return Refusal("invalid_json_line", f"Line {n} is not valid JSON", n), None
    if not isinstance(document, dict):
        return Refusal("invalid_json_line", f"Line {n} must be a JSON object", n), None
    custom_id = document.get("custom_id")
    if not isinstance(custom_id, str) or custom_id == "":
        return Refusal("missing_custom_id", f"Line {n} is missing custom_id", n), None
    if custom_id in seen:
        return Refusal("duplicate_custom_id", f'Line {n} duplicates custom_id "{custom_id}"', n), None
    seen.add(custom_id)
    method = document.get("method")
    if not isinstance(method, str) or method.lower() != "post":
        return Refusal("invalid_method", f'Line {n} method must be "POST"', n), None
    url = document.get("url")
    if not isinstance(url, str) or url == "":
        return Refusal("missing_url", f"Line {n} is missing url", n), None
    if url not in ALLOWED_URLS:
        return Refusal("invalid_url", f'Line {n} url "{url}" is not an allowed batch endpoint', n), None
    if endpoint in ALLOWED_URLS and url != endpoint:
        return Refusal("url_mismatch", f'Line {n} url "{url}" does not match the batch endpoint "{endpoint}"', n), None
    body = document.get("body")
    if not isinstance(body, dict) or not body:
        return Refusal("missing_body", f"Line {n} is missing body", n), None
    if body.get("stream") is True:
        return Refusal(
            "stream_not_supported", f"Line {n} has stream=true; streaming is not supported in batch mode", n
        ), None
    return None, url
