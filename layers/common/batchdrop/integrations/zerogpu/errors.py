"""Typed errors raised by the ZeroGPU client.

Every error carries the fields of ZeroGPU's error envelope (``type``, ``code``, ``param``, ``line``),
the HTTP status, the ``x-request-id`` of the reply and whether retrying the *same* call later makes sense
(``retryable``). No error ever holds the API key or a request/response body.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import httpx

REQUEST_ID_HEADER = "x-request-id"
_MAX_MESSAGE_CHARS = 500


class ErrorKind(StrEnum):
    """What a failure means for the work that made the call (the pipeline decides by this alone)."""

    PERMANENT = "permanent"
    """The request itself is wrong (invalid, too large, unknown): no retry can mend it."""
    RETRYABLE = "retryable"
    """The same work may succeed later: an outage, a rate limit, a timeout, an ambiguous reply."""
    OPERATIONAL = "operational"
    """The account or the key needs a person (authentication, quota): retried later, never ended for it."""


class ZeroGPUError(Exception):
    """Base class of every error the client raises.

    ``retryable`` is the client's own decision about repeating the *same call* at once; ``kind`` is what
    the failure means for the work behind the call.
    """

    default_retryable = False
    kind: ErrorKind = ErrorKind.RETRYABLE

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        line: int | None = None,
        request_id: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.line = line
        self.request_id = request_id
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        details = [
            f"{name}={value}"
            for name, value in (
                ("status", self.status),
                ("code", self.code),
                ("line", self.line),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{self.message} ({', '.join(details)})" if details else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r})"


class APIStatusError(ZeroGPUError):
    """The API answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400: the request is invalid (including synchronous batch validation, see ``line``)."""

    kind = ErrorKind.PERMANENT


class AuthenticationError(APIStatusError):
    """401: authentication headers are missing."""

    kind = ErrorKind.OPERATIONAL


class PermissionDeniedError(APIStatusError):
    """403: the key is invalid, inactive or not in the project."""

    kind = ErrorKind.OPERATIONAL


class NotFoundError(APIStatusError):
    """404: unknown, deleted, or another project's resource."""

    kind = ErrorKind.PERMANENT


class RequestTimeoutError(APIStatusError):
    """408: the server timed out waiting for the request."""

    default_retryable = True


class ConflictError(APIStatusError):
    """409: a conflict; on cancel it means the batch is already terminal."""

    default_retryable = True


class FileTooLargeError(APIStatusError):
    """413: the upload is over the 100 MB cap."""

    kind = ErrorKind.PERMANENT


class ContextLengthError(APIStatusError):
    """420: the input is over the token limit."""

    kind = ErrorKind.PERMANENT


class RateLimitError(APIStatusError):
    """429 ``rate_limit_exceeded`` (or a 429 without a quota marker): slow down and retry."""

    default_retryable = True


class InsufficientQuotaError(APIStatusError):
    """429 ``insufficient_quota``: the organisation has no balance; retrying cannot help until it is topped up."""

    kind = ErrorKind.OPERATIONAL


class ServerError(APIStatusError):
    """5xx: a server-side failure."""

    default_retryable = True


class APIConnectionError(ZeroGPUError):
    """The request failed at the transport level (connect, send or receive)."""

    default_retryable = True


class APITimeoutError(APIConnectionError):
    """A connect, read, write or pool timeout."""


class AmbiguousRequestError(ZeroGPUError):
    """A non-idempotent call (upload, create) failed after it was sent: it may or may not have taken effect.

    It is never repeated blindly; reconcile first (``find_batch``/``find_file``, or the ``*_or_adopt``
    helpers). ``cause`` is the underlying error.
    """

    def __init__(self, message: str, *, cause: ZeroGPUError) -> None:
        super().__init__(message, status=cause.status, type=cause.type, code=cause.code, request_id=cause.request_id)
        self.cause = cause
        self.kind = cause.kind


class DeadlineExceededError(ZeroGPUError):
    """The time budget (``remaining_time``) ran out before the call could succeed.

    The call itself may be retried later (e.g. by the next Lambda invocation); ``last_error`` is the last
    underlying error, or None when no attempt could be made.
    """

    default_retryable = True

    def __init__(self, message: str, *, last_error: ZeroGPUError | None = None) -> None:
        super().__init__(
            message,
            status=last_error.status if last_error else None,
            code=last_error.code if last_error else None,
            request_id=last_error.request_id if last_error else None,
        )
        self.last_error = last_error


class PartialDownloadError(ZeroGPUError):
    """A download broke off after bytes were written to a target that cannot be rewound."""


class UnexpectedResponseError(ZeroGPUError):
    """A successful reply that the client cannot use (bad JSON, a cursor that does not advance)."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: FileTooLargeError,
    420: ContextLengthError,
}


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _parse_envelope(content: bytes) -> dict[str, Any]:
    """The ``error`` object of a reply body, or {} for empty, non-JSON or oddly shaped bodies."""
    if not content:
        return {}
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(body, dict):
        return {}
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    # Some gateways answer {"message": ...} without the envelope.
    return {"message": body["message"]} if isinstance(body.get("message"), str) else {}


def error_from_response(response: httpx.Response) -> APIStatusError:
    """Build the typed error for an HTTP error reply; the body must already be read."""
    status = response.status_code
    envelope = _parse_envelope(response.content)
    message = _str_or_none(envelope.get("message")) or f"HTTP {status} {response.reason_phrase}".strip()
    error_type = _str_or_none(envelope.get("type"))
    code = _str_or_none(envelope.get("code"))
    line = envelope.get("line")
    kwargs: dict[str, Any] = {
        "status": status,
        "type": error_type,
        "code": code,
        "param": _str_or_none(envelope.get("param")),
        "line": line if isinstance(line, int) and not isinstance(line, bool) else None,
        "request_id": response.headers.get(REQUEST_ID_HEADER),
    }
    cls: type[APIStatusError]
    if status == 429:
        cls = InsufficientQuotaError if "insufficient_quota" in (error_type, code) else RateLimitError
    elif status >= 500:
        cls = ServerError
    else:
        cls = _STATUS_CLASSES.get(status, APIStatusError)
    return cls(message[:_MAX_MESSAGE_CHARS], **kwargs)


def error_from_transport(exc: httpx.TransportError) -> APIConnectionError:
    """Wrap an httpx transport error without keeping its request (which holds the auth headers)."""
    cls = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return cls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
