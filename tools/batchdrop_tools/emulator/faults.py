"""Injected faults: HTTP errors, slow replies, lost replies, and per-line failures."""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

FaultKind = Literal["http", "slow", "reply_lost"]


@dataclass
class Fault:
    """One request-level fault, matched by method (None = any) and an fnmatch-style path pattern.

    `times` is how many matching requests it applies to (None = forever)."""

    kind: FaultKind
    method: str | None = None
    path: str = "*"
    times: int | None = 1
    status: int = 0
    error_type: str | None = None
    message: str | None = None
    retry_after: str | None = None
    seconds: float = 0.0

    @classmethod
    def http(
        cls,
        status: int,
        *,
        method: str | None = None,
        path: str = "*",
        times: int | None = 1,
        retry_after: str | float | None = None,
        error_type: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Reply `status` with an error envelope instead of handling the request.

        A 429's body is `rate_limit_exceeded` unless `error_type="insufficient_quota"`. `retry_after` is
        sent as `Retry-After` (seconds, or an HTTP date string)."""
        if not 400 <= status <= 599:
            raise ValueError(f"an HTTP fault needs an error status, not {status}")
        return cls(
            "http",
            method=_method(method),
            path=path,
            times=times,
            status=status,
            error_type=error_type,
            message=message,
            retry_after=None if retry_after is None else _retry_after(retry_after),
        )

    @classmethod
    def slow(cls, seconds: float, *, method: str | None = None, path: str = "*", times: int | None = 1) -> Fault:
        """Wait `seconds` before handling the request (the request is still applied)."""
        if seconds < 0:
            raise ValueError("a slow fault needs a non-negative delay")
        return cls("slow", method=_method(method), path=path, times=times, seconds=float(seconds))

    @classmethod
    def reply_lost(cls, *, method: str | None = None, path: str = "*", times: int | None = 1) -> Fault:
        """Handle the request, then lose the reply: the client sees a timeout or a dropped connection."""
        return cls("reply_lost", method=_method(method), path=path, times=times)

    @classmethod
    def from_json(cls, spec: dict[str, Any]) -> Fault:
        """The admin surface's shape: {"kind": ..., plus the keyword arguments of the constructor}."""
        kind = spec.get("kind")
        common: dict[str, Any] = {
            "method": spec.get("method"),
            "path": spec.get("path", "*"),
            "times": spec.get("times", 1),
        }
        if kind == "http":
            return cls.http(
                int(spec["status"]),
                retry_after=spec.get("retry_after"),
                error_type=spec.get("error_type"),
                message=spec.get("message"),
                **common,
            )
        if kind == "slow":
            return cls.slow(float(spec["seconds"]), **common)
        if kind == "reply_lost":
            return cls.reply_lost(**common)
        raise ValueError(f"unknown fault kind {kind!r}")

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method.upper()) and fnmatch.fnmatchcase(path, self.path)


@dataclass(frozen=True)
class LineErrorRule:
    """Lines whose custom_id is in `custom_ids`, or whose hash(seed, custom_id) falls below `rate`, fail
    with `code` instead of reaching the backend; with `times_per_line`, only on the first that many
    attempts of each such custom_id (a transient failure that heals when the line is sent again)."""

    code: str
    rate: float = 0.0
    seed: int = 0
    custom_ids: frozenset[str] = frozenset()
    times_per_line: int | None = None
    attempts: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    """How often the rule has failed each custom_id (with `times_per_line` only)."""

    def applies_to(self, custom_id: str) -> bool:
        if custom_id in self.custom_ids:
            return True
        if self.rate <= 0:
            return False
        digest = hashlib.sha256(f"{self.seed}\0{custom_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.rate


@dataclass
class StallRule:
    """The next `times` batches created (every one, with None) stop after `after_lines` lines: they stay
    `in_progress` with no progress until they are cancelled or expire (a batch stuck at the API)."""

    after_lines: int = 0
    times: int | None = 1


@dataclass
class FaultPlan:
    """What the faults say about one request: a delay, then at most one action."""

    delay: float = 0.0
    http: Fault | None = None
    reply_lost: bool = False
    applied: list[Fault] = field(default_factory=list)


class Faults:
    """The active faults of one emulator; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._line_rules: list[LineErrorRule] = []
        self._stalls: list[StallRule] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def line_errors(
        self,
        code: str,
        *,
        rate: float = 0.0,
        seed: int = 0,
        custom_ids: Iterable[str] = (),
        times_per_line: int | None = None,
    ) -> LineErrorRule:
        """Fail lines with `code`: those chosen by rate (deterministic per seed and custom_id) and/or
        those named in `custom_ids`; with `times_per_line`, only the first that many times each line runs.
        The first rule that fails a line wins."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if times_per_line is not None and times_per_line < 1:
            raise ValueError("times_per_line must be at least 1 (or absent: every attempt fails)")
        rule = LineErrorRule(
            code, rate=rate, seed=seed, custom_ids=frozenset(custom_ids), times_per_line=times_per_line
        )
        with self._lock:
            self._line_rules.append(rule)
        return rule

    def stall_batches(self, *, after_lines: int = 0, times: int | None = 1) -> StallRule:
        """The next `times` batches (None: all) created stall after `after_lines` lines (see StallRule).
        Clearing the faults spares batches created after; a batch stalled already stays so."""
        if after_lines < 0:
            raise ValueError("after_lines must be 0 or more")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or absent: every batch)")
        rule = StallRule(after_lines=after_lines, times=times)
        with self._lock:
            self._stalls.append(rule)
        return rule

    def stall_for_new_batch(self) -> int | None:
        """How many lines a batch being created runs before it stalls (None: it does not)."""
        with self._lock:
            for rule in list(self._stalls):
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._stalls.remove(rule)
                return rule.after_lines
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._line_rules.clear()
            self._stalls.clear()

    def take(self, method: str, path: str) -> FaultPlan:
        """Consume the faults that apply to this request: every matching slow fault adds its delay,
        then the first matching http or reply_lost fault is the action."""
        plan = FaultPlan()
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.kind != "slow" and (plan.http is not None or plan.reply_lost):
                    continue
                if fault.kind == "slow":
                    plan.delay += fault.seconds
                elif fault.kind == "http":
                    plan.http = fault
                else:
                    plan.reply_lost = True
                plan.applied.append(fault)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return plan

    def line_error_for(self, custom_id: str) -> str | None:
        """The code this run of the line fails with, if any (each call is one attempt of the line)."""
        with self._lock:
            for rule in self._line_rules:
                if not rule.applies_to(custom_id):
                    continue
                if rule.times_per_line is not None:
                    failed = rule.attempts.get(custom_id, 0)
                    if failed >= rule.times_per_line:
                        continue  # healed for this line
                    rule.attempts[custom_id] = failed + 1
                return rule.code
        return None

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [vars(fault).copy() for fault in self._faults],
                "line_errors": [
                    {
                        "code": r.code,
                        "rate": r.rate,
                        "seed": r.seed,
                        "custom_ids": sorted(r.custom_ids),
                        "times_per_line": r.times_per_line,
                    }
                    for r in self._line_rules
                ],
                "stalls": [{"after_lines": r.after_lines, "times": r.times} for r in self._stalls],
            }


def _method(method: str | None) -> str | None:
    return None if method is None else method.upper()


def _retry_after(value: str | float) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)
