"""Error envelopes, including bodies with missing fields, and the error class for every status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from zerogpu_fakes import API_KEY, PROJECT_ID, Harness, Script, reply

from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    DeadlineExceededError,
    ErrorKind,
    InsufficientQuotaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ZeroGPUError,
    parse_retry_after,
)
from batchdrop.integrations.zerogpu.errors import error_from_response


def _response(status: int, content: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


def test_full_envelope_is_parsed() -> None:
    body = (
        b'{"error":{"message":"Line 2 is missing body","type":"invalid_request_error",'
        b'"code":"invalid_request_error","param":"body","line":2}}'
    )
    error = error_from_response(_response(400, body, **{"x-request-id": "req_abc"}))
    assert isinstance(error, BadRequestError)
    assert (error.status, error.type, error.code, error.param, error.line, error.request_id) == (
        400,
        "invalid_request_error",
        "invalid_request_error",
        "body",
        2,
        "req_abc",
    )
    assert error.message == "Line 2 is missing body"
    assert "line=2" in str(error) and "req_abc" in str(error)


@pytest.mark.parametrize(
    ("status", "content", "cls", "message"),
    [
        (
            401,
            b'{"error":{"message":"Missing authentication headers"}}',
            AuthenticationError,
            "Missing authentication headers",
        ),
        (403, b'{"error":{"message":"Invalid credentials"}}', PermissionDeniedError, "Invalid credentials"),
        (404, b'{"error":{"message":"Batch not found: batch_x"}}', NotFoundError, "Batch not found: batch_x"),
        (502, b"<html>Bad Gateway</html>", ServerError, "HTTP 502 Bad Gateway"),
        (500, b"", ServerError, "HTTP 500 Internal Server Error"),
        (400, b"[1, 2]", BadRequestError, "HTTP 400 Bad Request"),
        (400, b'{"error": "plain string"}', BadRequestError, "plain string"),
        (400, b'{"message": "no envelope"}', BadRequestError, "no envelope"),
        (400, b'{"error": {"message": 42, "line": "x", "code": 7}}', BadRequestError, "42"),
        (400, b"\xff\xfe", BadRequestError, "HTTP 400 Bad Request"),
        (418, b"{}", APIStatusError, "HTTP 418 I'm a teapot"),
    ],
)
def test_bodies_with_missing_fields_parse(status, content, cls, message) -> None:
    error = error_from_response(_response(status, content))
    assert type(error) is cls
    assert error.message == message
    assert error.status == status
    assert error.line is None
    assert error.request_id is None


def test_non_json_bodies_are_not_copied_into_the_error() -> None:
    error = error_from_response(_response(503, b"<html>secret upstream details</html>"))
    assert "secret" not in str(error)


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        (
            b'{"error":{"message":"m","type":"insufficient_quota","code":"insufficient_quota"}}',
            InsufficientQuotaError,
        ),
        (b'{"error":{"message":"m","type":null,"code":"insufficient_quota"}}', InsufficientQuotaError),
        (b'{"error":{"message":"m","type":"rate_limit_exceeded","code":null}}', RateLimitError),
        (b'{"error":{"message":"m"}}', RateLimitError),
        (b"", RateLimitError),
    ],
)
def test_429_split_between_quota_and_rate_limit(body, cls) -> None:
    assert type(error_from_response(_response(429, body))) is cls


def test_wrappers_keep_the_underlying_error() -> None:
    cause = ServerError("boom", status=500, request_id="req_1")
    ambiguous = AmbiguousRequestError("maybe", cause=cause)
    assert ambiguous.cause is cause and ambiguous.status == 500 and ambiguous.request_id == "req_1"
    deadline = DeadlineExceededError("late", last_error=cause)
    assert deadline.last_error is cause and deadline.retryable
    assert isinstance(ambiguous, ZeroGPUError) and isinstance(deadline, ZeroGPUError)


def test_error_repr_and_str_never_show_the_key(harness: Harness) -> None:
    scripts = [
        Script([reply(401, {"error": {"message": "Missing authentication headers"}})]),
        Script([httpx.ConnectError("refused")]),
        Script([httpx.ReadTimeout("timed out")]),
    ]
    for script in scripts:
        with pytest.raises(ZeroGPUError) as info:
            harness.client(script).create_batch("file-1")
        chain = [info.value, getattr(info.value, "cause", None), getattr(info.value, "last_error", None)]
        for exc in filter(None, chain):
            for secret in (API_KEY, PROJECT_ID):
                assert secret not in str(exc) and secret not in repr(exc)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("nan", None),
        ("later", None),
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
        ("Wed, 31 Dec 2025 23:59:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(header, expected) -> None:
    assert parse_retry_after(header, now=lambda: 1_767_225_600.0) == expected


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": {"message": "bad", "code": "invalid_request"}}, ErrorKind.PERMANENT),
        (404, {"error": {"message": "no such file"}}, ErrorKind.PERMANENT),
        (413, {"error": {"message": "too large"}}, ErrorKind.PERMANENT),
        (420, {"error": {"message": "context length"}}, ErrorKind.PERMANENT),
        (401, {"error": {"message": "no key"}}, ErrorKind.OPERATIONAL),
        (403, {"error": {"message": "bad key"}}, ErrorKind.OPERATIONAL),
        (429, {"error": {"message": "top up", "code": "insufficient_quota"}}, ErrorKind.OPERATIONAL),
        (429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, ErrorKind.RETRYABLE),
        (408, {}, ErrorKind.RETRYABLE),
        (409, {}, ErrorKind.RETRYABLE),
        (422, {}, ErrorKind.RETRYABLE),
        (500, {}, ErrorKind.RETRYABLE),
        (503, {}, ErrorKind.RETRYABLE),
    ],
)
def test_each_error_says_what_it_means_for_the_work(status: int, body: dict[str, Any], kind: ErrorKind) -> None:
    # Given a reply with this status, When it becomes an error, Then its kind decides for submit
    error = error_from_response(httpx.Response(status, json=body))
    assert error.kind is kind
    # and an ambiguous wrapper keeps the kind of what it wraps
    assert AmbiguousRequestError("lost reply", cause=error).kind is kind


def test_transport_failures_and_deadlines_are_retryable() -> None:
    assert APIConnectionError("reset").kind is ErrorKind.RETRYABLE
    assert APITimeoutError("read timeout").kind is ErrorKind.RETRYABLE
    assert DeadlineExceededError("out of time").kind is ErrorKind.RETRYABLE
