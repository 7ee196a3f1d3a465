"""The rules a ZeroGPU batch input file must follow, with ZeroGPU's exact messages.

One implementation serves both sides: the emulator applies it at batch create (stopping at the first
problem, as ZeroGPU does), and the submit function applies it to a whole dropped file (collecting every
problem) so that a bad file is rejected before any call to the API.

Line numbers are 1-based physical line numbers of the file; blank lines are skipped but still counted,
so a number always points at the line a person sees in an editor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

MAX_LINE_BYTES = 1_048_576
MAX_LINES_PER_BATCH = 50_000
MAX_BATCH_BYTES = 209_715_200
MAX_UPLOAD_BYTES = 104_857_600
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
BATCH_ENDPOINTS = frozenset({CHAT_COMPLETIONS_URL})
MESSAGE_ROLES = ("user", "assistant", "system", "tool", "developer")

_READ_CHUNK = 64 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"


class ProblemCode(StrEnum):
    """Stable codes for report.json; the messages are ZeroGPU's wording where ZeroGPU has one."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    LINE_TOO_LARGE = "line_too_large"
    MISSING_CUSTOM_ID = "missing_custom_id"
    DUPLICATE_CUSTOM_ID = "duplicate_custom_id"
    INVALID_METHOD = "invalid_method"
    MISSING_URL = "missing_url"
    URL_NOT_ALLOWED = "url_not_allowed"
    URL_MISMATCH = "url_mismatch"
    MISSING_BODY = "missing_body"
    STREAM_NOT_SUPPORTED = "stream_not_supported"
    MISSING_MODEL = "missing_model"
    INVALID_MESSAGES = "invalid_messages"
    EMPTY_FILE = "empty_file"
    TOO_MANY_LINES = "too_many_lines"
    FILE_TOO_LARGE = "file_too_large"
    ENDPOINT_MISMATCH = "endpoint_mismatch"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    message: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ValidLine:
    line: int
    custom_id: str
    content: bytes
    """The line without its line ending (and without a leading UTF-8 BOM on line 1)."""


@dataclass(frozen=True, slots=True)
class PhysicalLine:
    number: int
    content: bytes
    """The line without its line ending; empty when `too_long` (an over-long line is never kept)."""
    too_long: bool = False


def iter_physical_lines(stream: IO[bytes], *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[PhysicalLine]:
    """Split a binary stream into lines, reading fixed-size chunks: memory stays bounded by
    `max_line_bytes` whatever the file or line size. LF ends a line; a CR before it is dropped."""
    number = 0
    buffer = bytearray()
    overflow = False  # the current line already passed max_line_bytes; its bytes are being discarded

    def finish(content: bytes | bytearray, too_long: bool) -> PhysicalLine:
        body = bytes(content)
        if body.endswith(b"\r"):
            body = body[:-1]
        if number == 1 and body.startswith(_UTF8_BOM):
            body = body[len(_UTF8_BOM) :]
        if not too_long and len(body) > max_line_bytes:
            too_long = True
        return PhysicalLine(number, b"" if too_long else body, too_long)

    while chunk := stream.read(_READ_CHUNK):
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                if not overflow:
                    buffer += chunk[start:]
                    # +1 leaves room for a CR that belongs to the line ending
                    if len(buffer) > max_line_bytes + 1 + (len(_UTF8_BOM) if number == 0 else 0):
                        overflow = True
                        buffer.clear()
                break
            number += 1
            if overflow:
                yield finish(b"", True)
            else:
                buffer += chunk[start:newline]
                yield finish(buffer, False)
            buffer.clear()
            overflow = False
            start = newline + 1
    if buffer or overflow:
        number += 1
        yield finish(buffer, overflow)


class LineValidator:
    """Checks the lines of one input file in order.

    It keeps only the set of custom_ids seen so far, which a batch's line limit bounds.
    `strict_body` adds the checks ZeroGPU leaves to run time (a model and well-formed messages):
    the submit function uses it so that such lines are rejected up front rather than billed as failures.
    """

    def __init__(
        self,
        endpoint: str = CHAT_COMPLETIONS_URL,
        *,
        max_lines: int | None = MAX_LINES_PER_BATCH,
        strict_body: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.strict_body = strict_body
        self.lines = 0
        self.first_url: str | None = None
        self._custom_ids: set[str] = set()

    def check(self, physical: PhysicalLine) -> ValidLine | Problem | None:
        """Returns None for a blank line (skipped), else the valid line or its first problem."""
        n = physical.number
        if physical.too_long:
            self.lines += 1
            return self._count_problem() or Problem(
                ProblemCode.LINE_TOO_LARGE, f"Line {n} exceeds maximum size of {MAX_LINE_BYTES} bytes", n
            )
        if not physical.content.strip():
            return None
        self.lines += 1
        if too_many := self._count_problem():
            return too_many
        try:
            document = json.loads(physical.content, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return Problem(ProblemCode.INVALID_JSON, f"Line {n} is not valid JSON", n)
        if not isinstance(document, dict):
            return Problem(ProblemCode.NOT_AN_OBJECT, f"Line {n} must be a JSON object", n)
        return self._check_object(n, document, physical.content)

    def finish(self) -> Problem | None:
        """The file-level checks that need every line seen."""
        if self.lines == 0:
            return Problem(ProblemCode.EMPTY_FILE, "Input file contains no JSONL lines")
        if self.endpoint not in BATCH_ENDPOINTS and self.first_url is not None:
            return Problem(
                ProblemCode.ENDPOINT_MISMATCH,
                f'endpoint "{self.endpoint}" does not match the url "{self.first_url}" used by the input file',
            )
        return None

    def _count_problem(self) -> Problem | None:
        if self.max_lines is not None and self.lines > self.max_lines:
            return Problem(ProblemCode.TOO_MANY_LINES, f"Input file exceeds maximum of {self.max_lines} lines")
        return None

    def _check_object(self, n: int, document: dict[str, Any], content: bytes) -> ValidLine | Problem:
        custom_id = document.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return Problem(ProblemCode.MISSING_CUSTOM_ID, f"Line {n} is missing custom_id", n)
        if custom_id in self._custom_ids:
            return Problem(ProblemCode.DUPLICATE_CUSTOM_ID, f'Line {n} duplicates custom_id "{custom_id}"', n)
        self._custom_ids.add(custom_id)
        method = document.get("method")
        if not isinstance(method, str) or method.upper() != "POST":
            return Problem(ProblemCode.INVALID_METHOD, f'Line {n} method must be "POST"', n)
        url = document.get("url")
        if not isinstance(url, str) or not url:
            return Problem(ProblemCode.MISSING_URL, f"Line {n} is missing url", n)
        if url not in BATCH_ENDPOINTS:
            return Problem(ProblemCode.URL_NOT_ALLOWED, f'Line {n} url "{url}" is not an allowed batch endpoint', n)
        if self.endpoint in BATCH_ENDPOINTS and url != self.endpoint:
            return Problem(
                ProblemCode.URL_MISMATCH,
                f'Line {n} url "{url}" does not match the batch endpoint "{self.endpoint}"',
                n,
            )
        if self.first_url is None:
            self.first_url = url
        body = document.get("body")
        if not isinstance(body, dict) or not body:
            return Problem(ProblemCode.MISSING_BODY, f"Line {n} is missing body", n)
        if body.get("stream") is True:
            return Problem(
                ProblemCode.STREAM_NOT_SUPPORTED,
                f"Line {n} has stream=true; streaming is not supported in batch mode",
                n,
            )
        if self.strict_body and (problem := _check_chat_body(n, body)):
            return problem
        return ValidLine(n, custom_id, content)


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), although Python's parser accepts them."""
    raise ValueError(f"{name} is not valid JSON")


def _check_chat_body(n: int, body: dict[str, Any]) -> Problem | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Problem(ProblemCode.MISSING_MODEL, f"Line {n} body is missing model", n)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Problem(ProblemCode.INVALID_MESSAGES, f"Line {n} body.messages must be a non-empty list of messages", n)
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in MESSAGE_ROLES:
            return Problem(
                ProblemCode.INVALID_MESSAGES,
                f"Line {n} body.messages[{index}].role must be one of {', '.join(MESSAGE_ROLES)}",
                n,
            )
    return None
