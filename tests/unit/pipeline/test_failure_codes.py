"""A shard's failure code says what went wrong: never `http_None` for a failure without a status."""

from __future__ import annotations

import pytest

from batchdrop.flow.submission import failure_code
from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    APIConnectionError,
    APITimeoutError,
    DeadlineExceededError,
    InsufficientQuotaError,
    ServerError,
    ZeroGPUError,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (APITimeoutError("ReadTimeout"), "api_unreachable"),
        (APIConnectionError("ConnectError"), "api_unreachable"),
        (DeadlineExceededError("out of time"), "deadline_exceeded"),
        (AmbiguousRequestError("maybe", cause=APITimeoutError("ReadTimeout")), "api_unreachable"),
        (AmbiguousRequestError("maybe", cause=ServerError("boom", status=502)), "http_502"),
        (InsufficientQuotaError("no money", status=429, code="insufficient_quota"), "insufficient_quota"),
        (ServerError("boom", status=500, type="internal_error"), "internal_error"),
        (ZeroGPUError("odd"), "api_error"),
    ],
)
def test_failure_codes(error: ZeroGPUError, code: str) -> None:
    assert failure_code(error) == code
    assert "None" not in failure_code(error)
