"""Retry policy: capped exponential backoff with full jitter, ``Retry-After``, and which failures retry.

Delay rule (documented choice): the jittered delay is ``random() * min(max_delay, base_delay * 2**n)``
for the n-th retry (n = 0, 1, ...). When the reply carries ``Retry-After`` (seconds or an HTTP date,
capped at ``max_retry_after``) the delay is ``max(retry_after, jittered)``: the server's minimum is
honoured while clients that got the same hint still spread out.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from batchdrop.integrations.zerogpu.errors import (
    APIConnectionError,
    APIStatusError,
    ZeroGPUError,
)

# Statuses after which a non-idempotent POST is known not to have been acted on, so it can be repeated:
# 408 (the server gave up reading the request), 409 (conflict, nothing changed), 429 (throttled before
# any work) and 503 (unavailable, refused up front). Any other 5xx may come after the work was done.
NON_IDEMPOTENT_SAFE_STATUSES = frozenset({408, 409, 429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a failed call.

    ``max_attempts`` counts every attempt including the first. ``min_attempt_time`` is the least time
    (seconds) that must be left in the ``remaining_time`` budget to start an attempt.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    min_attempt_time: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.base_delay, self.max_delay, self.max_retry_after, self.min_attempt_time) < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry_number: int, random: Callable[[], float]) -> float:
        """Full-jitter delay before retry number ``retry_number`` (0-based)."""
        # Cap the exponent so huge attempt counts cannot overflow a float.
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry_number, 62))
        return random() * ceiling

    def delay(self, retry_number: int, random: Callable[[], float], retry_after: float | None) -> float:
        """The delay before the next attempt, combining jitter and a (capped) ``Retry-After``."""
        jittered = self.backoff(retry_number, random)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.max_retry_after), jittered)


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if parsed.tzinfo is None:
            return None
        seconds = parsed.timestamp() - now()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def is_safe_to_repeat(error: ZeroGPUError, *, idempotent: bool, sent: bool) -> bool:
    """Whether repeating the call cannot cause a duplicate side effect.

    ``sent`` is False only when the failure happened before the request left the client (connect/pool).
    """
    if idempotent or not sent:
        return True
    return isinstance(error, APIStatusError) and error.status in NON_IDEMPOTENT_SAFE_STATUSES


def request_was_sent(exc: httpx.TransportError) -> bool:
    """False when httpx failed before any byte of the request could reach the server."""
    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def is_retryable(error: ZeroGPUError) -> bool:
    """Whether the failure class is worth retrying at all (before idempotency is considered)."""
    return error.retryable and isinstance(error, APIStatusError | APIConnectionError)
