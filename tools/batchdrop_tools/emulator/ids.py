"""Identifiers in ZeroGPU's shapes.

Batch and file ids are ULID-like: a millisecond timestamp followed by randomness, both in Crockford
base32, generated monotonically, so that sorting ids sorts by creation. Lists use that for `after`.
"""

from __future__ import annotations

import hashlib
import secrets
import threading

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 10


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class SortableIds:
    """Monotonic ULID-like strings: `_TIME_CHARS` of milliseconds, then `random_chars` of randomness.

    Within one millisecond (or if the clock stalls, as a ManualClock does) the random part is incremented,
    so ids generated later always sort after earlier ones."""

    def __init__(self, random_chars: int) -> None:
        self._random_chars = random_chars
        self._random_limit = 32**random_chars
        self._last_ms = -1
        self._last_random = 0
        self._lock = threading.Lock()

    def new(self, now: float) -> str:
        ms = int(now * 1000)
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                self._last_random += 1
                if self._last_random >= self._random_limit:
                    ms += 1
                    self._last_random = 0
            else:
                # Leave headroom so increments within the same millisecond cannot overflow.
                self._last_random = secrets.randbelow(self._random_limit // 2)
            self._last_ms = ms
            return _encode(ms, _TIME_CHARS) + _encode(self._last_random, self._random_chars)


def request_id() -> str:
    return "req_" + secrets.token_hex(12)


def batch_request_id(batch_id: str, custom_id: str) -> str:
    """`batch_req_...`, stable for a given batch and line (ZeroGPU: "stable across retries")."""
    digest = hashlib.sha256(f"{batch_id}\0{custom_id}".encode()).hexdigest()
    return "batch_req_" + digest[:24]


def stable_hex(*parts: str, length: int = 24) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]
