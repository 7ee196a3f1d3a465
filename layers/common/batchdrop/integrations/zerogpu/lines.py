"""Parsing of batch output and error-file lines, with a recovery category for every failure.

Both line shapes are understood:

* ZeroGPU: failures are ``{"response": null, "error": {"code", "message", "param"}}`` and the message
  may start with ``[legacy:<old_code>] `` (moved to ``legacy_code``).
* OpenAI: an HTTP failure is ``{"response": {"status_code": 4xx/5xx, "body": {"error": {...}}},
  "error": null}``; its code comes from ``body.error.code`` (or ``type``), and when that code is not one
  we know, the category follows the status (429 and 5xx transient, other 4xx permanent).

A line that cannot be understood (bad JSON, not an object, no ``custom_id``, neither a response nor an
error) does not raise: it becomes a failed :class:`ResultLine` with code ``unparseable_line`` and
category ``permanent``, so one bad line cannot stop the export of the others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

UNPARSEABLE_LINE = "unparseable_line"

_LEGACY_PREFIX = re.compile(r"^\[legacy:([^\]]*)\]\s*")


class LineCategory(StrEnum):
    """What to do about a line."""

    SUCCESS = "success"
    TRANSIENT = "transient"  # resubmit as-is
    NEVER_RAN = "never_ran"  # resubmit in a new batch
    OPERATIONAL = "operational"  # fix the account (quota, key) first, then resubmit
    PERMANENT = "permanent"  # fix the input line


CODE_CATEGORIES: Mapping[str, LineCategory] = {
    "internal_error": LineCategory.TRANSIENT,
    "rate_limit_exceeded": LineCategory.TRANSIENT,
    "model_error": LineCategory.TRANSIENT,
    "batch_expired": LineCategory.NEVER_RAN,
    "batch_cancelled": LineCategory.NEVER_RAN,
    "insufficient_quota": LineCategory.OPERATIONAL,
    "authentication_error": LineCategory.OPERATIONAL,
    "invalid_request_error": LineCategory.PERMANENT,
    "not_found_error": LineCategory.PERMANENT,
    "request_too_large": LineCategory.PERMANENT,
    "context_length_exceeded": LineCategory.PERMANENT,
    "timeout": LineCategory.PERMANENT,
}

_RETRYABLE = frozenset({LineCategory.TRANSIENT, LineCategory.NEVER_RAN})


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One parsed output or error line."""

    custom_id: str | None
    succeeded: bool
    category: LineCategory
    code: str | None = None
    status_code: int | None = None
    message: str | None = None
    legacy_code: str | None = None
    param: str | None = None
    id: str | None = None
    body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def retryable(self) -> bool:
        """True when resubmitting the unchanged line may succeed (transient or never ran)."""
        return self.category in _RETRYABLE


def category_for_code(code: str | None, status_code: int | None = None) -> LineCategory:
    """The category of a failure code; an unknown code falls back to the HTTP status, else permanent."""
    if code is not None and code in CODE_CATEGORIES:
        return CODE_CATEGORIES[code]
    if status_code is not None and (status_code == 429 or status_code >= 500):
        return LineCategory.TRANSIENT
    return LineCategory.PERMANENT


def _unparseable(reason: str, custom_id: str | None = None, line_id: str | None = None) -> ResultLine:
    return ResultLine(
        custom_id=custom_id,
        succeeded=False,
        category=LineCategory.PERMANENT,
        code=UNPARSEABLE_LINE,
        message=reason,
        id=line_id,
    )


def _split_legacy(message: Any) -> tuple[str | None, str | None]:
    if not isinstance(message, str):
        return (None if message is None else str(message)), None
    match = _LEGACY_PREFIX.match(message)
    if match is None:
        return message, None
    return message[match.end() :], match.group(1)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _status_code(response: Any) -> int | None:
    if not isinstance(response, dict):
        return None
    status = response.get("status_code")
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def _decode(raw: bytes | str | Mapping[str, Any]) -> dict[str, Any] | str:
    """The line as a dict, or a string saying why it is not one."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = orjson.loads(raw)  # the fast reading; what it refuses, the stdlib below decides
    except orjson.JSONDecodeError:
        pass
    else:
        return value if isinstance(value, dict) else "line is not a JSON object"
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        value = json.loads(text)
    except UnicodeDecodeError:
        return "line is not valid UTF-8"
    except (ValueError, RecursionError):
        return "line is not valid JSON"
    return value if isinstance(value, dict) else "line is not a JSON object"


def parse_result_line(raw: bytes | str | Mapping[str, Any]) -> ResultLine:
    """Parse one line of an output or error file (see the module docstring for the rules)."""
    decoded = _decode(raw)
    if isinstance(decoded, str):
        return _unparseable(decoded)
    line_id = _opt_str(decoded.get("id"))
    custom_id = _opt_str(decoded.get("custom_id"))
    if custom_id is None:
        return _unparseable("line has no custom_id", line_id=line_id)

    response = decoded.get("response")
    error = decoded.get("error")
    status_code = _status_code(response)
    body = response.get("body") if isinstance(response, dict) else None
    body = body if isinstance(body, dict) else None

    if error is not None:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = _opt_str(error.get("code")) or _opt_str(error.get("type"))
        return _failure(custom_id, line_id, code, status_code, error, body)
    if status_code is None:
        return _unparseable("line has neither a response with a status_code nor an error", custom_id, line_id)
    if status_code >= 400:
        body_error = body.get("error") if body else None
        body_error = body_error if isinstance(body_error, dict) else {}
        code = _opt_str(body_error.get("code")) or _opt_str(body_error.get("type")) or f"http_{status_code}"
        return _failure(custom_id, line_id, code, status_code, body_error, body)
    return ResultLine(
        custom_id=custom_id,
        succeeded=True,
        category=LineCategory.SUCCESS,
        status_code=status_code,
        id=line_id,
        body=body,
    )


def _failure(
    custom_id: str,
    line_id: str | None,
    code: str | None,
    status_code: int | None,
    error: dict[str, Any],
    body: dict[str, Any] | None,
) -> ResultLine:
    message, legacy_code = _split_legacy(error.get("message"))
    param = error.get("param")
    return ResultLine(
        custom_id=custom_id,
        succeeded=False,
        category=category_for_code(code, status_code),
        code=code,
        status_code=status_code,
        message=message,
        legacy_code=legacy_code,
        param=param if isinstance(param, str) else None,
        id=line_id,
        body=body,
    )


def iter_result_lines(lines: Iterable[bytes | str]) -> Iterator[ResultLine]:
    """Parse each non-blank line of an output or error file (e.g. an open binary file)."""
    for raw in lines:
        if raw.strip():
            yield parse_result_line(raw)
