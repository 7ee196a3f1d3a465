"""The rules a ZeroGPU batch input file must follow, with ZeroGPU's exact messages.

One implementation serves both sides: the emulator applies it at batch create (stopping at the first
problem, as ZeroGPU does), and the submit function applies it to a whole dropped file (collecting every
problem) so that a bad file is rejected before any call to the API.

Line numbers are 1-based physical line numbers of the file; blank lines are skipped but still counted,
so a number always points at the line a person sees in an editor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

import orjson

from batchdrop.custom_ids import CustomIdSet, MemoryIdSet

MAX_LINE_BYTES = 1_048_576
MAX_LINES_PER_BATCH = 50_000
MAX_BATCH_BYTES = 209_715_200
MAX_UPLOAD_BYTES = 104_857_600
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
BATCH_ENDPOINTS = frozenset({CHAT_COMPLETIONS_URL})
MESSAGE_ROLES = ("user", "assistant", "system", "tool", "developer")

_READ_CHUNK = 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"


class ProblemCode(StrEnum):
    """Stable codes for report.json; the messages are ZeroGPU's wording where ZeroGPU has one."""

    INVALID_JSON = "invalid_json"
    INVALID_UTF8 = "invalid_utf8"
    WRONG_ENCODING = "wrong_encoding"
    INVALID_UNICODE = "invalid_unicode"
    NESTING_TOO_DEEP = "nesting_too_deep"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    DUPLICATE_KEY = "duplicate_key"
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
    INVALID_STREAM = "invalid_stream"
    MISSING_MODEL = "missing_model"
    INVALID_MESSAGES = "invalid_messages"
    EMPTY_FILE = "empty_file"
    TOO_MANY_LINES = "too_many_lines"
    FILE_TOO_LARGE = "file_too_large"
    ENDPOINT_MISMATCH = "endpoint_mismatch"
    # whole-file problems, found by the submit function only
    JSON_ARRAY = "json_array"
    NOT_JSON_LINES = "not_json_lines"
    INVALID_GZIP = "invalid_gzip"
    GZIP_NOT_DECLARED = "gzip_not_declared"
    INPUT_TOO_LARGE = "input_too_large"
    TOO_MANY_BATCHES = "too_many_batches"
    VALIDATION_TIMEOUT = "validation_timeout"
    INVALID_KEY = "invalid_key"
    KEY_TOO_LONG = "key_too_long"
    ESTIMATED_COST_TOO_HIGH = "estimated_cost_too_high"
    NOT_JSONL = "not_jsonl"


@dataclass(frozen=True, slots=True)
class Problem:
    code: ProblemCode
    message: str
    """ZeroGPU's wording where ZeroGPU has one (the API's own reply to the same file)."""
    line: int | None = None
    fix: str | None = None
    """What to change, and what was found: "`url` must be /v1/chat/completions (got /v1/embeddings)"."""


class ValidLine(NamedTuple):
    line: int
    custom_id: str
    content: bytes
    """The line without its line ending (and without a leading UTF-8 BOM on line 1)."""
    body: dict[str, Any] | None = None
    """The parsed request body."""


class Readable(Protocol):
    """What the line reader needs of a stream (a file, an S3 body, a counting wrapper)."""

    def read(self, size: int = -1, /) -> bytes: ...


class PhysicalLine(NamedTuple):
    """A tuple, not a dataclass: one is made for every line of every file, and a tuple is made fastest."""

    number: int
    content: bytes
    """The line without its line ending; empty when `too_long` (an over-long line is never kept)."""
    too_long: bool = False


def iter_physical_lines(stream: Readable, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[PhysicalLine]:
    """Split a binary stream into lines, reading fixed-size chunks: memory stays bounded by the chunk and
    `max_line_bytes` whatever the file or line size. LF ends a line; a CR before it is dropped. A line
    inside one chunk is sliced out of it once; only a line across two chunks is joined."""
    number = 0
    pending = b""  # the start of a line whose end is not read yet
    overflow = False  # the current line already passed max_line_bytes; its bytes are being discarded
    # +1 leaves room for a CR that belongs to the line ending; line 1 may also carry a BOM
    first_limit, limit = max_line_bytes + 1 + len(_UTF8_BOM), max_line_bytes + 1

    def finish(body: bytes, too_long: bool) -> PhysicalLine:
        if body[-1:] == b"\r":
            body = body[:-1]
        if number == 1 and body.startswith(_UTF8_BOM):
            body = body[len(_UTF8_BOM) :]
        if too_long or len(body) > max_line_bytes:
            return PhysicalLine(number, b"", True)
        return PhysicalLine(number, body, False)

    while chunk := stream.read(_READ_CHUNK):
        start = 0
        if overflow or pending:
            newline = chunk.find(b"\n")
            if newline < 0:
                if not overflow:
                    pending += chunk
                    if len(pending) > (first_limit if number == 0 else limit):
                        overflow, pending = True, b""
                continue
            number += 1
            yield finish(b"" if overflow else pending + chunk[:newline], overflow)
            overflow, pending, start = False, b"", newline + 1
        find = chunk.find
        while (newline := find(b"\n", start)) >= 0:
            number += 1
            if number == 1 or newline - start > max_line_bytes:
                yield finish(chunk[start:newline], False)
            elif chunk[newline - 1] == 13 and newline > start:  # a CR before the LF
                yield PhysicalLine(number, chunk[start : newline - 1], False)
            else:
                yield PhysicalLine(number, chunk[start:newline], False)
            start = newline + 1
        if start < len(chunk):
            pending = chunk[start:]
            if len(pending) > (first_limit if number == 0 else limit):
                overflow, pending = True, b""
    if pending or overflow:
        number += 1
        yield finish(pending, overflow)


MAX_ECHOED_CHARS = 120
"""Values a message quotes (a custom_id, a url) are cut to this many characters: a report stays small."""


def echo(value: str) -> str:
    """A value for a message, cut short with an ellipsis if it is long."""
    return value if len(value) <= MAX_ECHOED_CHARS else value[:MAX_ECHOED_CHARS] + "…"


def _shown(value: Any) -> str:
    """What was found, as a fix hint quotes it: JSON, cut short; `nothing` when absent."""
    if value is None:
        return "nothing"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return echo(text)


def _shown_bytes(content: bytes) -> str:
    return echo(content[:200].decode("utf-8", "replace")) if content.strip() else "an empty line"


class _NotJson(ValueError):
    pass


class _OutOfRange(ValueError):
    pass


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _reject_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), although Python's parser accepts them."""
    raise _NotJson(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _OutOfRange(text)
    return value


def _parse_int(text: str) -> int:
    # Past about 309 digits an integer no longer fits a double (what JSON parsers read numbers into).
    if len(text) > 308 and math.isinf(float(text)):
        raise _OutOfRange(text)
    return int(text)


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return document


# One decoder each, built once (json.loads with options builds a new decoder per call).
_API_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_STRICT_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant,
    parse_float=_parse_float,
    parse_int=_parse_int,
    object_pairs_hook=_object_without_duplicate_keys,
)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(text: str, document: Any) -> bool:
    """A `\\ud800`-style escape with no partner decodes to a code point UTF-8 cannot encode."""
    if not _SURROGATE_ESCAPE.search(text):
        return False
    # A walk with a stack of its own: a document nested near the parser's limit must not recurse here.
    pending: list[Any] = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


_KEY_END = re.compile(rb'"[ \t\r\n]*:')
"""Where a key ends: its closing quote, then a colon. Every key of a line has one; a quote escaped inside
a string (`\\":`) can add more, never fewer."""


def _quotes_a_float(document: Any) -> bool:
    """Whether the one message that quotes a value (a `stream` that is not a boolean) would quote a float:
    orjson reads an integer past 64 bits as one, the stdlib keeps it as written; the stdlib reads such a
    line, so that the message quotes it as written."""
    body = document.get("body") if type(document) is dict else None
    return type(body) is dict and type(body.get("stream")) is float


def _may_repeat_keys(content: bytes, document: Any) -> bool:
    """False only when the line certainly has no repeated key: it has no more key ends than the parsed
    value has keys (a repeated key would leave the value a key short)."""
    return len(_KEY_END.findall(content)) != _key_count(document)


def _key_count(document: Any) -> int:
    """Keys of every object in the value, nested ones too (a stack of its own: no recursion)."""
    keys = 0
    pending = [document]
    pop, push = pending.pop, pending.append
    while pending:
        value = pop()
        kind = type(value)
        if kind is dict:
            keys += len(value)
            items = value.values()
        elif kind is list:
            items = value
        else:
            continue  # a line that is a bare number, string, true, false or null
        for item in items:
            kind = type(item)
            if kind is dict or kind is list:
                push(item)
    return keys


class LineValidator:
    """Checks the lines of one input file in order.

    It keeps the set of custom_ids seen so far (`custom_ids`; in memory unless another is given).
    `strict` adds what the submit function checks beyond ZeroGPU's create-time rules, so that such lines
    are rejected up front rather than billed as failures: a model and well-formed messages, a boolean
    `stream`, no duplicate keys, numbers a double can hold; and it names encoding problems by their own
    codes where the API (and so the emulator) says only "not valid JSON".
    """

    def __init__(
        self,
        endpoint: str = CHAT_COMPLETIONS_URL,
        *,
        max_lines: int | None = MAX_LINES_PER_BATCH,
        strict: bool = False,
        custom_ids: CustomIdSet | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.strict = strict
        self.lines = 0
        self.first_url: str | None = None
        self._custom_ids = custom_ids if custom_ids is not None else MemoryIdSet()
        self._decoder = _STRICT_DECODER if strict else _API_DECODER

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
        parsed = self._parse(n, physical.content)
        if isinstance(parsed, Problem):
            return parsed
        if not isinstance(parsed, dict):
            return Problem(
                ProblemCode.NOT_AN_OBJECT,
                f"Line {n} must be a JSON object",
                n,
                f'each line must be an object like {{"custom_id": ..., "method": "POST", ...}} (got {_shown(parsed)})',
            )
        return self._check_object(n, parsed, physical.content)

    def _parse(self, n: int, content: bytes) -> Any:
        """The line's JSON value, or its problem.

        orjson reads every line first: it refuses all the stdlib parser refuses here (invalid UTF-8, NaN
        and Infinity, floats past a double, lone surrogates) and reads the rest alike, but it keeps the
        last of repeated keys silently, reads integers past 64 bits as floats, and names no problem. So a
        line it refuses, or (when strict) one whose keys may repeat or whose message would quote such a
        float, is read again by the stdlib path below, which decides and names the problem.
        """
        try:
            document = orjson.loads(content)
        except orjson.JSONDecodeError:
            return self._parse_exactly(n, content)
        if self.strict and (_may_repeat_keys(content, document) or _quotes_a_float(document)):
            return self._parse_exactly(n, content)
        return document

    def _parse_exactly(self, n: int, content: bytes) -> Any:
        """The stdlib's reading, with a problem named for every way a line can fail. Only UTF-8 is JSON
        here (json.loads would also read UTF-16 and UTF-32 bytes, which the API cannot)."""
        not_json = Problem(
            ProblemCode.INVALID_JSON,
            f"Line {n} is not valid JSON",
            n,
            f"each line must be one JSON object (got {_shown_bytes(content)})",
        )
        if b"\x00" in content:
            if not self.strict:
                return not_json
            return Problem(
                ProblemCode.WRONG_ENCODING,
                f"Line {n} contains NUL bytes: the file looks UTF-16 or UTF-32 encoded; save it as UTF-8",
                n,
            )
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as error:
            if not self.strict:
                return not_json
            return Problem(
                ProblemCode.INVALID_UTF8,
                f"Line {n} is not valid UTF-8 (byte 0x{content[error.start]:02x} at position {error.start + 1}): "
                "save the file as UTF-8",
                n,
            )
        try:
            document = self._decoder.decode(text)
        except _OutOfRange as error:
            return Problem(
                ProblemCode.NUMBER_OUT_OF_RANGE,
                f"Line {n} has a number out of range ({echo(str(error))}): numbers must fit a 64-bit float",
                n,
            )
        except _DuplicateKey as error:
            return Problem(
                ProblemCode.DUPLICATE_KEY,
                f'Line {n} has the key "{echo(error.key)}" twice in one object: the API would keep only one',
                n,
            )
        except RecursionError:
            if not self.strict:
                return not_json
            return Problem(ProblemCode.NESTING_TOO_DEEP, f"Line {n} nests arrays or objects too deeply to read", n)
        except ValueError:
            return not_json
        if _has_lone_surrogate(text, document):
            if not self.strict:
                return not_json
            return Problem(
                ProblemCode.INVALID_UNICODE,
                f"Line {n} has a lone surrogate escape (such as \\ud800) in a string: it is not valid Unicode",
                n,
            )
        return document

    def finish(self) -> Problem | None:
        """The file-level checks that need every line seen."""
        if self.lines == 0:
            return Problem(ProblemCode.EMPTY_FILE, "Input file contains no JSONL lines")
        if self.endpoint not in BATCH_ENDPOINTS and self.first_url is not None:
            return Problem(
                ProblemCode.ENDPOINT_MISMATCH,
                f'endpoint "{self.endpoint}" does not match the url "{echo(self.first_url)}" used by the input file',
            )
        return None

    def close(self) -> None:
        self._custom_ids.close()

    def _count_problem(self) -> Problem | None:
        if self.max_lines is not None and self.lines > self.max_lines:
            return Problem(ProblemCode.TOO_MANY_LINES, f"Input file exceeds maximum of {self.max_lines} lines")
        return None

    def _check_object(self, n: int, document: dict[str, Any], content: bytes) -> ValidLine | Problem:
        custom_id = document.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return Problem(
                ProblemCode.MISSING_CUSTOM_ID,
                f"Line {n} is missing custom_id",
                n,
                f"add `custom_id`, a non-empty string unique in the file (got {_shown(custom_id)})",
            )
        if not self._custom_ids.add(custom_id):
            return Problem(
                ProblemCode.DUPLICATE_CUSTOM_ID,
                f'Line {n} duplicates custom_id "{echo(custom_id)}"',
                n,
                f'give each line its own `custom_id` (got "{echo(custom_id)}", which an earlier line has)',
            )
        method = document.get("method")
        if not isinstance(method, str) or method.upper() != "POST":
            return Problem(
                ProblemCode.INVALID_METHOD,
                f'Line {n} method must be "POST"',
                n,
                f"`method` must be POST (got {_shown(method)})",
            )
        url = document.get("url")
        if not isinstance(url, str) or not url:
            return Problem(
                ProblemCode.MISSING_URL,
                f"Line {n} is missing url",
                n,
                f"add `url`: /v1/chat/completions (got {_shown(url)})",
            )
        if url not in BATCH_ENDPOINTS:
            return Problem(
                ProblemCode.URL_NOT_ALLOWED,
                f'Line {n} url "{echo(url)}" is not an allowed batch endpoint',
                n,
                f"`url` must be {' or '.join(sorted(BATCH_ENDPOINTS))} (got {echo(url)})",
            )
        if self.endpoint in BATCH_ENDPOINTS and url != self.endpoint:
            return Problem(
                ProblemCode.URL_MISMATCH,
                f'Line {n} url "{echo(url)}" does not match the batch endpoint "{self.endpoint}"',
                n,
                f"every line's `url` must be {self.endpoint} (got {echo(url)})",
            )
        if self.first_url is None:
            self.first_url = url
        body = document.get("body")
        if not isinstance(body, dict) or not body:
            return Problem(
                ProblemCode.MISSING_BODY,
                f"Line {n} is missing body",
                n,
                f"add `body`, the request as a JSON object with model and messages (got {_shown(body)})",
            )
        if body.get("stream") is True:
            return Problem(
                ProblemCode.STREAM_NOT_SUPPORTED,
                f"Line {n} has stream=true; streaming is not supported in batch mode",
                n,
                "remove `stream` from `body`, or set it to false (got true)",
            )
        if self.strict and (problem := _check_chat_body(n, body)):
            return problem
        return ValidLine(n, custom_id, content, body)


def _check_chat_body(n: int, body: dict[str, Any]) -> Problem | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Problem(
            ProblemCode.MISSING_MODEL,
            f"Line {n} body is missing model",
            n,
            f"`model` is missing in `body`: name the model to run (got {_shown(model)})",
        )
    if "stream" in body and not isinstance(body["stream"], bool):
        return Problem(
            ProblemCode.INVALID_STREAM,
            f"Line {n} body.stream must be true or false, not {echo(json.dumps(body['stream']))}",
            n,
            f"`stream` must be false or absent (got {echo(json.dumps(body['stream']))})",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Problem(
            ProblemCode.INVALID_MESSAGES,
            f"Line {n} body.messages must be a non-empty list of messages",
            n,
            f'`messages` in `body` must be a list like [{{"role": "user", "content": "..."}}] (got {_shown(messages)})',
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return Problem(
                ProblemCode.INVALID_MESSAGES,
                f"Line {n} body.messages[{index}] must be an object with a role",
                n,
                f'`messages[{index}]` must be an object like {{"role": "user", ...}} (got {_shown(message)})',
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            return Problem(
                ProblemCode.INVALID_MESSAGES,
                f"Line {n} body.messages[{index}].role must be one of {', '.join(MESSAGE_ROLES)}",
                n,
                f"`messages[{index}].role` must be one of {', '.join(MESSAGE_ROLES)} (got {_shown(role)})",
            )
    return None
