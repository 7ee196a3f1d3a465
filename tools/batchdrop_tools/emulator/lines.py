"""Output and error file lines, in ZeroGPU's shape or OpenAI's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batchdrop_tools.emulator import ids
from batchdrop_tools.emulator.backends import BackendReply
from batchdrop_tools.emulator.settings import LineFormat

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


@dataclass(frozen=True)
class LineFailure:
    """Why a line failed. `status_code` is the HTTP status of an HTTP failure, None for one that never ran."""

    code: str
    message: str
    legacy_code: str
    status_code: int | None
    upstream_body: dict[str, Any] | None = None


BATCH_CANCELLED = LineFailure("batch_cancelled", CANCELLED_MESSAGE, "batch_cancelled", None)
BATCH_EXPIRED = LineFailure("batch_expired", EXPIRED_MESSAGE, "batch_expired", None)

# Injected failures (emu.faults.line_errors): code -> (HTTP status, legacy code, message).
_INJECTED: dict[str, tuple[int, str, str]] = {
    "invalid_request_error": (400, "http_400", "The request body was rejected by the model endpoint"),
    "authentication_error": (401, "http_401", "The API key is not allowed to use this model"),
    "not_found_error": (404, "http_404", "The model does not exist or is not enabled for this project"),
    "request_too_large": (413, "http_413", "The request is larger than the model accepts"),
    "insufficient_quota": (
        429,
        "http_420",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    "rate_limit_exceeded": (429, "http_429", "Rate limit exceeded"),
    "internal_error": (500, "http_500", "The model endpoint returned HTTP 500 after 4 attempts"),
    "context_length_exceeded": (400, "http_400", "The input exceeds the model's context length"),
    "model_error": (500, "model_error", "The model failed to produce a response"),
    "timeout": (504, "timeout", "The model did not answer in time"),
}


def injected_failure(code: str) -> LineFailure:
    if code == BATCH_CANCELLED.code:
        return BATCH_CANCELLED
    if code == BATCH_EXPIRED.code:
        return BATCH_EXPIRED
    status, legacy, message = _INJECTED.get(code, (500, code, f"Injected failure: {code}"))
    return LineFailure(code, message, legacy, status)


def code_for_status(status: int) -> str:
    if status in (400, 422):
        return "invalid_request_error"
    if status in (401, 403):
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 413:
        return "request_too_large"
    if status == 420:
        return "insufficient_quota"
    if status == 429:
        return "rate_limit_exceeded"
    if status >= 500:
        return "internal_error"
    return "invalid_request_error"


def failure_from_reply(reply: BackendReply) -> LineFailure:
    error = reply.body.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(message, str) or not message:
        message = f"The model endpoint returned HTTP {reply.status_code}"
    return LineFailure(
        code_for_status(reply.status_code),
        message,
        reply.legacy_code or f"http_{reply.status_code}",
        reply.status_code,
        reply.body if isinstance(error, dict) else None,
    )


def success_line(line_format: LineFormat, batch_id: str, custom_id: str, reply: BackendReply) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": ids.batch_request_id(batch_id, custom_id),
        "custom_id": custom_id,
        "response": {"status_code": reply.status_code, "request_id": ids.request_id(), "body": reply.body},
    }
    if line_format == "openai":
        line["error"] = None
    return line


def error_line(line_format: LineFormat, batch_id: str, custom_id: str, failure: LineFailure) -> dict[str, Any]:
    line_id = ids.batch_request_id(batch_id, custom_id)
    if line_format == "openai":
        if failure.status_code is None:
            return {
                "id": line_id,
                "custom_id": custom_id,
                "response": None,
                "error": {"code": failure.code, "message": failure.message},
            }
        body = failure.upstream_body or {
            "error": {"message": failure.message, "type": failure.code, "param": None, "code": failure.code}
        }
        return {
            "id": line_id,
            "custom_id": custom_id,
            "response": {"status_code": failure.status_code, "request_id": ids.request_id(), "body": body},
            "error": None,
        }
    return {
        "id": line_id,
        "custom_id": custom_id,
        "response": None,
        "error": {
            "code": failure.code,
            "message": f"[legacy:{failure.legacy_code}] {failure.message}",
            "param": None,
        },
    }
