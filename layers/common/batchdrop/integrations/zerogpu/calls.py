"""The retry loop under every ZeroGPU call: timeouts, backoff, the time budget, idempotency, paging.

A call is repeated only when the failure is retryable *and* repeating cannot duplicate a side effect
(see :func:`batchdrop.integrations.zerogpu.retry.is_safe_to_repeat`); otherwise it raises, wrapping possibly-applied
non-idempotent failures in :class:`AmbiguousRequestError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from batchdrop.integrations.zerogpu.errors import (
    REQUEST_ID_HEADER,
    AmbiguousRequestError,
    APIConnectionError,
    DeadlineExceededError,
    NotFoundError,
    UnexpectedResponseError,
    ZeroGPUError,
    error_from_response,
    error_from_transport,
)
from batchdrop.integrations.zerogpu.models import ListPage
from batchdrop.integrations.zerogpu.retry import (
    RetryPolicy,
    is_retryable,
    is_safe_to_repeat,
    parse_retry_after,
    request_was_sent,
)

logger = logging.getLogger("batchdrop.integrations.zerogpu.client")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_PAGES = 10_000

# Failures that mean the request never reached a server worth retrying (a bad URL, an invalid header).
_FATAL_TRANSPORT_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


@dataclass(frozen=True, slots=True)
class _Success(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class _Failure:
    error: ZeroGPUError
    cause: BaseException
    sent: bool
    retry_after: float | None = None


def json_handler(model: type[M]) -> Callable[[httpx.Response], M]:
    """A ``handle`` for :meth:`RetryingCaller.call` that parses a 2xx JSON reply into ``model``."""

    def handle(response: httpx.Response) -> M:
        response.read()
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # `from None`: pydantic's message would quote the reply body.
            raise UnexpectedResponseError(
                f"unexpected {model.__name__} reply ({exc.error_count()} validation errors)",
                status=response.status_code,
                request_id=response.headers.get(REQUEST_ID_HEADER),
            ) from None

    return handle


class RetryingCaller:
    """Sends requests through an ``httpx.Client`` with the retry policy and the optional time budget."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        timeout: httpx.Timeout,
        retry: RetryPolicy,
        remaining_time: Callable[[], float] | None,
        sleep: Callable[[float], None],
        random: Callable[[], float],
        now: Callable[[], float],
        on_error: Callable[[ZeroGPUError], None] | None = None,
    ) -> None:
        self._http = http
        self._on_error = on_error
        self._timeout = timeout
        self._retry = retry
        self._remaining_time = remaining_time
        self._sleep = sleep
        self._random = random
        self._now = now

    def paginate(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, following the ``after`` cursor (the last item's id) lazily."""
        query = {key: value for key, value in params.items() if value is not None}
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            page = self.call("GET", path, params=query, handle=json_handler(ListPage))
            yield from page.data
            if not page.has_more:
                return
            last_item_id = page.data[-1].get("id") if page.data else None
            cursor = last_item_id if isinstance(last_item_id, str) and last_item_id else page.last_id
            if not cursor or cursor in seen:
                raise UnexpectedResponseError(f"{path} pagination did not advance (has_more with cursor {cursor!r})")
            seen.add(cursor)
            query = {**query, "after": cursor}
        raise UnexpectedResponseError(f"{path} returned more than {MAX_PAGES} pages")

    def _time_left(self) -> float | None:
        return None if self._remaining_time is None else self._remaining_time()

    def _attempt_timeout(self, last_error: ZeroGPUError | None) -> httpx.Timeout:
        left = self._time_left()
        if left is None:
            return self._timeout
        if left < self._retry.min_attempt_time:
            raise DeadlineExceededError(
                f"out of time: {left:.2f}s left, {self._retry.min_attempt_time:.2f}s needed for an attempt",
                last_error=last_error,
            )
        t = self._timeout
        return httpx.Timeout(
            connect=min(t.connect, left),  # type: ignore[type-var]
            read=min(t.read, left),  # type: ignore[type-var]
            write=min(t.write, left),  # type: ignore[type-var]
            pool=min(t.pool, left),  # type: ignore[type-var]
        )

    def check_deadline_mid_stream(self) -> None:
        """Raise :class:`DeadlineExceededError` once the time budget is spent (between streamed chunks)."""
        left = self._time_left()
        if left is not None and left <= 0:
            raise DeadlineExceededError("out of time while streaming a download")

    def call(
        self,
        method: str,
        path: str,
        *,
        handle: Callable[[httpx.Response], T],
        idempotent: bool = True,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        no_retry_statuses: frozenset[int] = frozenset(),
        before_retry: Callable[[], None] | None = None,
        gone_after_retry: Callable[[], T] | None = None,
    ) -> T:
        """Send one logical call with retries; ``handle`` turns a 2xx reply into the result.

        ``no_retry_statuses`` are raised at once; ``before_retry`` runs before each retry;
        ``gone_after_retry`` answers a 404 that follows a lost reply (the first attempt did the work).
        """
        policy = self._retry
        last_error: ZeroGPUError | None = None
        last_cause: BaseException | None = None
        lost_reply = False
        for attempt in range(policy.max_attempts):
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=json,
                files=files,
                data=data,
                headers=headers,
                timeout=self._attempt_timeout(last_error),
            )
            outcome = self._attempt(request, handle, idempotent=idempotent)
            if not isinstance(outcome, _Failure):
                return outcome.value
            error = outcome.error
            if self._on_error is not None:
                try:
                    self._on_error(error)
                except Exception:  # an observer's failure is not the call's
                    logger.warning("the on_error hook failed", exc_info=True)
            if isinstance(error, NotFoundError) and lost_reply and gone_after_retry is not None:
                return gone_after_retry()
            if isinstance(error, UnexpectedResponseError):
                # Only a non-idempotent call gets here: the server acted but its reply is unusable.
                raise AmbiguousRequestError(f"{method} {path} reply unusable: {error.message}", cause=error)
            if not is_retryable(error) or error.status in no_retry_statuses:
                raise error from (None if outcome.cause is error else outcome.cause)
            if not is_safe_to_repeat(error, idempotent=idempotent, sent=outcome.sent):
                raise AmbiguousRequestError(
                    f"{method} {path} may have taken effect: {error.message}", cause=error
                ) from outcome.cause
            last_error, last_cause = error, outcome.cause
            lost_reply = lost_reply or (outcome.sent and isinstance(error, APIConnectionError))
            if attempt + 1 >= policy.max_attempts:
                break
            delay = policy.delay(attempt, self._random, outcome.retry_after)
            self._sleep_within_budget(delay, error)
            logger.info(
                "zerogpu %s %s failed (%s status=%s code=%s request_id=%s); retry %d/%d after %.2fs",
                method,
                path,
                type(error).__name__,
                error.status,
                error.code,
                error.request_id,
                attempt + 1,
                policy.max_attempts - 1,
                delay,
            )
            if before_retry is not None:
                before_retry()
            self._sleep(delay)
        assert last_error is not None
        raise last_error from (None if last_cause is last_error else last_cause)

    def _attempt(
        self, request: httpx.Request, handle: Callable[[httpx.Response], T], *, idempotent: bool
    ) -> _Success[T] | _Failure:
        """One HTTP exchange: the handled 2xx result, or what went wrong and whether the request was sent."""
        try:
            response = self._http.send(request, stream=True)
        except _FATAL_TRANSPORT_ERRORS as exc:
            raise APIConnectionError(f"{type(exc).__name__}: {exc}", retryable=False) from exc
        except httpx.TransportError as exc:
            return _Failure(error_from_transport(exc), exc, sent=request_was_sent(exc))
        try:
            if response.is_success:
                return _Success(handle(response))
            response.read()
            error = error_from_response(response)
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=self._now)
            return _Failure(error, error, sent=True, retry_after=retry_after)
        except httpx.TransportError as exc:
            return _Failure(error_from_transport(exc), exc, sent=True)
        except UnexpectedResponseError as exc:
            if idempotent:
                raise
            return _Failure(exc, exc, sent=True)
        finally:
            response.close()

    def _sleep_within_budget(self, delay: float, error: ZeroGPUError) -> None:
        left = self._time_left()
        if left is not None and left - delay < self._retry.min_attempt_time:
            raise DeadlineExceededError(
                f"out of time: a {delay:.2f}s backoff would leave {left - delay:.2f}s", last_error=error
            ) from error
