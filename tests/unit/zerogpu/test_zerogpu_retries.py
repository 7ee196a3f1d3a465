"""Retry classification, backoff, Retry-After and the remaining-time budget of ZeroGPUClient."""

from __future__ import annotations

import email.utils
import io

import httpx
import pytest
from zerogpu_fakes import Harness, Script, batch_json, err, file_json, reply

from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ContextLengthError,
    DeadlineExceededError,
    FileTooLargeError,
    InsufficientQuotaError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RetryPolicy,
    ServerError,
)

# random() = 0.5, base 0.5, cap 20: 0.5 * min(20, 0.5 * 2**n)
EXPECTED_DELAYS = [0.25, 0.5, 1.0, 2.0]

RETRYABLE = [
    pytest.param(err(408), RequestTimeoutError, id="408"),
    pytest.param(err(409), ConflictError, id="409"),
    pytest.param(err(429, "rate_limit_exceeded", "rate_limit_exceeded"), RateLimitError, id="429-rate-limit"),
    pytest.param(reply(429, {"error": {"message": "slow down"}}), RateLimitError, id="429-unknown"),
    pytest.param(err(500, "internal_error", "storage_error"), ServerError, id="500"),
    pytest.param(err(502), ServerError, id="502"),
    pytest.param(err(503), ServerError, id="503"),
    pytest.param(httpx.ConnectError("refused"), APIConnectionError, id="connect-error"),
    pytest.param(httpx.ConnectTimeout("connect timeout"), APITimeoutError, id="connect-timeout"),
    pytest.param(httpx.ReadTimeout("read timeout"), APITimeoutError, id="read-timeout"),
    pytest.param(httpx.ReadError("reset by peer"), APIConnectionError, id="read-error"),
    pytest.param(httpx.RemoteProtocolError("server disconnected"), APIConnectionError, id="disconnect"),
    pytest.param(httpx.PoolTimeout("pool"), APITimeoutError, id="pool-timeout"),
]

NEVER_RETRIED = [
    pytest.param(400, None, BadRequestError, id="400"),
    pytest.param(401, None, AuthenticationError, id="401"),
    pytest.param(403, None, PermissionDeniedError, id="403"),
    pytest.param(404, None, NotFoundError, id="404"),
    pytest.param(413, "file_too_large", FileTooLargeError, id="413"),
    pytest.param(420, "context_length_exceeded", ContextLengthError, id="420"),
    pytest.param(429, "insufficient_quota", InsufficientQuotaError, id="429-insufficient-quota"),
]


@pytest.mark.parametrize(("failure", "error_class"), RETRYABLE)
def test_retryable_failure_is_retried_with_backoff_then_succeeds(harness: Harness, failure, error_class) -> None:
    # Given four failures and then a success on an idempotent GET
    script = Script([failure, failure, failure, failure, reply(200, batch_json())])
    # When
    batch = harness.client(script).retrieve_batch("batch_1")
    # Then five attempts, with full-jitter delays between them
    assert batch.id == "batch_1"
    assert script.calls == 5
    assert harness.sleeps == EXPECTED_DELAYS


@pytest.mark.parametrize(("failure", "error_class"), RETRYABLE)
def test_retryable_failure_gives_up_after_max_attempts(harness: Harness, failure, error_class) -> None:
    script = Script([failure])
    with pytest.raises(error_class) as info:
        harness.client(script, retry=RetryPolicy(max_attempts=3)).retrieve_batch("batch_1")
    assert script.calls == 3
    assert harness.sleeps == EXPECTED_DELAYS[:2]
    assert info.value.retryable


@pytest.mark.parametrize(("status", "code", "error_class"), NEVER_RETRIED)
def test_never_retried_status_is_tried_exactly_once(harness: Harness, status, code, error_class) -> None:
    script = Script([err(status, code, code), reply(200, batch_json())])
    with pytest.raises(error_class) as info:
        harness.client(script).retrieve_batch("batch_1")
    assert script.calls == 1
    assert harness.sleeps == []
    assert info.value.status == status
    assert not info.value.retryable
    assert info.value.request_id == "req_test"


@pytest.mark.parametrize(("status", "code", "error_class"), NEVER_RETRIED)
def test_never_retried_status_on_create_is_raised_as_is(harness: Harness, status, code, error_class) -> None:
    script = Script([err(status, code, code)])
    with pytest.raises(error_class):
        harness.client(script).create_batch("file-1")
    assert script.calls == 1


def test_insufficient_quota_detected_by_type_only(harness: Harness) -> None:
    script = Script([err(429, "insufficient_quota", None)])
    with pytest.raises(InsufficientQuotaError):
        harness.client(script).retrieve_batch("b")
    assert script.calls == 1


def test_backoff_is_capped_at_max_delay(harness: Harness) -> None:
    harness.random_value = 1.0
    policy = RetryPolicy(max_attempts=8, base_delay=1.0, max_delay=5.0)
    with pytest.raises(ServerError):
        harness.client(Script([err(500)]), retry=policy).retrieve_batch("b")
    assert harness.sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


@pytest.mark.parametrize("random_value", [0.0, 0.3, 0.999999])
def test_full_jitter_stays_within_zero_and_the_exponential_ceiling(harness: Harness, random_value) -> None:
    harness.random_value = random_value
    with pytest.raises(ServerError):
        harness.client(Script([err(503)])).retrieve_batch("b")
    ceilings = [0.5, 1.0, 2.0, 4.0]
    assert len(harness.sleeps) == 4
    for delay, ceiling in zip(harness.sleeps, ceilings, strict=True):
        assert 0.0 <= delay < ceiling
        assert delay == pytest.approx(random_value * ceiling)


def test_retry_after_seconds_is_honoured(harness: Harness) -> None:
    script = Script([err(429, "rate_limit_exceeded", retry_after="7"), reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    assert harness.sleeps == [7.0]


def test_retry_after_smaller_than_jitter_uses_the_jittered_delay(harness: Harness) -> None:
    harness.random_value = 1.0
    script = Script([err(503, retry_after="0"), reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    assert harness.sleeps == [0.5]


def test_retry_after_http_date_is_honoured(harness: Harness) -> None:
    when = email.utils.formatdate(1_767_225_600.0 + 12, usegmt=True)
    script = Script([err(503, retry_after=when), reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    assert harness.sleeps == [pytest.approx(12.0)]


@pytest.mark.parametrize("header", ["3600", email.utils.formatdate(1_767_225_600.0 + 3600, usegmt=True)])
def test_retry_after_is_capped(harness: Harness, header: str) -> None:
    script = Script([err(429, "rate_limit_exceeded", retry_after=header), reply(200, batch_json())])
    harness.client(script, retry=RetryPolicy(max_retry_after=30.0)).retrieve_batch("b")
    assert harness.sleeps == [30.0]


def test_garbage_retry_after_falls_back_to_jitter(harness: Harness) -> None:
    script = Script([err(503, retry_after="soon-ish"), reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    assert harness.sleeps == [0.25]


# -- deadline ------------------------------------------------------------------------------------


def test_deadline_stops_retries_before_the_budget_is_exceeded(harness: Harness) -> None:
    # Given 3 s left and a server that always answers 503 with Retry-After: 1
    budget = 3.0
    script = Script([err(503, retry_after="1")])
    client = harness.client(script, remaining_time=lambda: budget - harness.clock, retry=RetryPolicy(max_attempts=10))
    # When
    with pytest.raises(DeadlineExceededError) as info:
        client.retrieve_batch("b")
    # Then it never slept past the budget and reports the last 503
    assert sum(harness.sleeps) <= budget - RetryPolicy().min_attempt_time
    assert script.calls == 3
    assert isinstance(info.value.last_error, ServerError)
    assert info.value.last_error.status == 503
    assert info.value.retryable


def test_deadline_refuses_a_backoff_longer_than_the_time_left(harness: Harness) -> None:
    script = Script([err(429, "rate_limit_exceeded", retry_after="30")])
    client = harness.client(script, remaining_time=lambda: 10.0)
    with pytest.raises(DeadlineExceededError) as info:
        client.retrieve_batch("b")
    assert harness.sleeps == []
    assert script.calls == 1
    assert isinstance(info.value.last_error, RateLimitError)


def test_deadline_already_passed_makes_no_call(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    with pytest.raises(DeadlineExceededError) as info:
        harness.client(script, remaining_time=lambda: 0.2).retrieve_batch("b")
    assert script.calls == 0
    assert info.value.last_error is None


def test_request_timeouts_are_clipped_to_the_time_left(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    harness.client(script, remaining_time=lambda: 2.5).retrieve_batch("b")
    assert script.requests[0].extensions["timeout"] == {
        "connect": 2.5,
        "read": 2.5,
        "write": 2.5,
        "pool": 2.5,
    }


def test_explicit_timeouts_are_sent_on_every_call(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    assert script.requests[0].extensions["timeout"] == {
        "connect": 5.0,
        "read": 60.0,
        "write": 120.0,
        "pool": 5.0,
    }


def test_timeout_none_is_refused() -> None:
    from batchdrop.integrations.zerogpu import ZeroGPUClient

    with pytest.raises(ValueError, match="timeout"):
        ZeroGPUClient("k", timeout=httpx.Timeout(5.0, read=None))


# -- non-idempotent calls --------------------------------------------------------------------------

AMBIGUOUS = [
    pytest.param(httpx.ReadTimeout("read timeout"), id="read-timeout"),
    pytest.param(httpx.ReadError("reset"), id="read-error"),
    pytest.param(httpx.RemoteProtocolError("server disconnected"), id="disconnect"),
    pytest.param(httpx.WriteTimeout("write timeout"), id="write-timeout"),
    pytest.param(err(500), id="500"),
    pytest.param(err(502), id="502"),
    pytest.param(err(504), id="504"),
    pytest.param(reply(200, {"not": "a batch"}), id="unusable-200"),
]

SAFE_TO_REPEAT = [
    pytest.param(httpx.ConnectError("refused"), id="connect-error"),
    pytest.param(httpx.ConnectTimeout("connect timeout"), id="connect-timeout"),
    pytest.param(err(408), id="408"),
    pytest.param(err(409), id="409"),
    pytest.param(err(429, "rate_limit_exceeded", "rate_limit_exceeded"), id="429"),
    pytest.param(err(503), id="503"),
]


@pytest.mark.parametrize("failure", AMBIGUOUS)
def test_create_is_never_repeated_after_an_ambiguous_failure(harness: Harness, failure) -> None:
    script = Script([failure, reply(200, batch_json())])
    with pytest.raises(AmbiguousRequestError) as info:
        harness.client(script).create_batch("file-1", metadata={"job_id": "j1"})
    assert script.calls == 1
    assert harness.sleeps == []
    assert not info.value.retryable
    assert info.value.cause is not None


@pytest.mark.parametrize("failure", AMBIGUOUS)
def test_upload_is_never_repeated_after_an_ambiguous_failure(harness: Harness, failure) -> None:
    script = Script([failure, reply(200, file_json())])
    with pytest.raises(AmbiguousRequestError):
        harness.client(script).upload_file(io.BytesIO(b'{"a":1}\n'), "in.jsonl")
    assert script.calls == 1


@pytest.mark.parametrize("failure", SAFE_TO_REPEAT)
def test_create_is_retried_when_the_server_cannot_have_acted(harness: Harness, failure) -> None:
    script = Script([failure, reply(200, batch_json())])
    batch = harness.client(script).create_batch("file-1")
    assert batch.id == "batch_1"
    assert script.calls == 2
    assert harness.sleeps == [0.25]


@pytest.mark.parametrize("failure", SAFE_TO_REPEAT)
def test_upload_is_retried_with_the_whole_file_when_the_server_cannot_have_acted(harness: Harness, failure) -> None:
    payload = b'{"custom_id":"a"}\n' * 100
    script = Script([failure, reply(200, file_json())])
    harness.client(script).upload_file(io.BytesIO(payload), "in.jsonl")
    assert script.calls == 2
    assert payload in script.requests[-1].content


def test_cancel_is_retried_like_an_idempotent_call(harness: Harness) -> None:
    script = Script([httpx.ReadTimeout("t"), err(500), reply(200, batch_json(status="cancelling"))])
    batch = harness.client(script).cancel_batch("batch_1")
    assert batch.status == "cancelling"
    assert script.calls == 3


def test_unsupported_protocol_is_not_retried(harness: Harness) -> None:
    script = Script([httpx.UnsupportedProtocol("nope")])
    with pytest.raises(APIConnectionError) as info:
        harness.client(script).retrieve_batch("b")
    assert script.calls == 1
    assert not info.value.retryable
