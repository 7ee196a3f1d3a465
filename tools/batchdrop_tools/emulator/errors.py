"""The synchronous error envelope: `{"error": {"message", "type", "code", "param"}}` (+ `line` at create)."""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
RATE_LIMIT = "rate_limit_exceeded"
INTERNAL = "internal_error"
INSUFFICIENT_QUOTA = "insufficient_quota"

QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."

_LINE_UNSET = object()


class ApiError(Exception):
    """An error reply: raised anywhere in request handling, rendered by the app."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        line: int | object | None = _LINE_UNSET,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.line = line
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "code": self.code,
            "param": self.param,
        }
        if self.line is not _LINE_UNSET:
            error["line"] = self.line
        return {"error": error}


def not_found_route(method: str, path: str) -> ApiError:
    return ApiError(404, f"Unknown route: {method} {path}", code="not_found")


def invalid_limit() -> ApiError:
    return ApiError(400, "Invalid limit", code="invalid_limit", param="limit")


def file_not_found(file_id: str) -> ApiError:
    return ApiError(404, f"File {file_id} not found", code="file_not_found")


def batch_not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"Batch not found: {batch_id}", code="batch_not_found")


def fault_error(status: int, error_type: str | None = None, message: str | None = None) -> ApiError:
    """The error an injected HTTP fault replies with: ZeroGPU's wording where it has one."""
    if status == 429:
        kind = error_type or RATE_LIMIT
        default = QUOTA_MESSAGE if kind == INSUFFICIENT_QUOTA else "Rate limit exceeded, please retry later"
        return ApiError(429, message or default, type=kind, code=kind)
    defaults: dict[int, tuple[str, str, str | None]] = {
        400: ("Bad request", INVALID_REQUEST, INVALID_REQUEST),
        401: ("Missing authentication headers", AUTHENTICATION, None),
        403: ("Invalid credentials", AUTHENTICATION, None),
        404: ("Not found", INVALID_REQUEST, "not_found"),
        408: ("Request timed out", INTERNAL, "timeout"),
        409: ("Conflict, please retry", INVALID_REQUEST, "conflict"),
        413: ("Request entity too large", INVALID_REQUEST, "file_too_large"),
        500: ("Internal server error", INTERNAL, "storage_error"),
        502: ("Bad gateway", INTERNAL, None),
        503: ("Service unavailable", INTERNAL, None),
        504: ("Gateway timeout", INTERNAL, None),
    }
    text, kind, code = defaults.get(status, ("Injected failure", INTERNAL if status >= 500 else INVALID_REQUEST, None))
    return ApiError(status, message or text, type=error_type or kind, code=code)
