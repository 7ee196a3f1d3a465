"""The ZeroGPU Files + Batches API client used by the Lambda functions.

Retries live here and only here (the httpx transport does not retry). Idempotent calls (GET, DELETE,
cancel) are retried on network errors, timeouts, 408, 409, 429 ``rate_limit_exceeded`` and 5xx.
Upload and create have no idempotency key, so after a failure that may have happened *after* the server
acted (a read timeout, a dropped connection, a 500/502/504, an unreadable 200) they raise
:class:`AmbiguousRequestError` instead of being repeated; they are repeated only when the request never
left the client (connect errors) or the status says the server refused it up front (408, 409, 429, 503).
``create_batch_or_adopt``/``upload_file_or_adopt`` then reconcile by listing before any new POST.
"""

from __future__ import annotations

import logging
import os
import random as _random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, BinaryIO, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from batchdrop import __version__
from batchdrop.integrations.zerogpu.calls import RetryingCaller, json_handler
from batchdrop.integrations.zerogpu.errors import (
    AmbiguousRequestError,
    ConflictError,
    PartialDownloadError,
    UnexpectedResponseError,
    ZeroGPUError,
)
from batchdrop.integrations.zerogpu.models import Batch, FileDeleted, FileObject
from batchdrop.integrations.zerogpu.retry import RetryPolicy

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

BASE_URLS: Mapping[str, str] = {
    "prod": "https://api.zerogpu.ai",
    "staging": "https://staging.api.zerogpu.ai",
    "dev": "https://dev.api.zerogpu.ai",
}
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=120.0, pool=5.0)
DEFAULT_USER_AGENT = f"batchdrop/{__version__} httpx/{httpx.__version__}"
CHAT_COMPLETIONS_ENDPOINT = "/v1/chat/completions"
BATCH_PAGE_SIZE = 100
FILE_PAGE_SIZE = 1_000


def resolve_base_url(base_url: str) -> str:
    """Map ``prod``/``staging``/``dev`` to their host; strip a trailing ``/`` or ``/v1`` from a URL."""
    url = BASE_URLS.get(base_url.strip().lower(), base_url.strip()).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be prod, staging, dev or an http(s) URL, got {base_url!r}")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _check_timeout(timeout: httpx.Timeout) -> httpx.Timeout:
    if None in (timeout.connect, timeout.read, timeout.write, timeout.pool):
        raise ValueError("every timeout (connect, read, write, pool) must be set; None would wait forever")
    return timeout


def path_id(value: str) -> str:
    if not value:
        raise ValueError("an id is required")
    return quote(value, safe="")


def _parse_item(model: type[M], item: dict[str, Any]) -> M:
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        raise UnexpectedResponseError(
            f"unexpected {model.__name__} in a list reply ({exc.error_count()} validation errors)"
        ) from None


def _seekable(fileobj: IO[bytes]) -> bool:
    try:
        return bool(fileobj.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def _size_of(fileobj: IO[bytes]) -> int | None:
    """Bytes httpx will upload (it rewinds to 0 first), or None when the object cannot seek."""
    if not _seekable(fileobj):
        return None
    position = fileobj.tell()
    size = fileobj.seek(0, os.SEEK_END)
    fileobj.seek(position)
    return size


class ZeroGPUClient:
    """A synchronous client for ZeroGPU's Files and Batches API with retries, deadlines and adoption.

    ``remaining_time`` returns the seconds the caller may still spend (e.g. a Lambda's remaining time
    minus a margin). When given, no sleep runs past it, each request's timeouts are clipped to it, and
    :class:`DeadlineExceededError` is raised once too little is left. ``sleep``, ``random`` and ``now``
    (the wall clock used for HTTP-date ``Retry-After``) are injectable for tests.
    """

    def __init__(
        self,
        api_key: str,
        project_id: str | None = None,
        base_url: str = "prod",
        *,
        timeout: httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        remaining_time: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        now: Callable[[], float] = time.time,
        user_agent: str = DEFAULT_USER_AGENT,
        on_error: Callable[[ZeroGPUError], None] | None = None,
    ) -> None:
        """`on_error` sees every failed attempt (retried or not), e.g. to count them by kind."""
        if not api_key:
            raise ValueError("api_key is required")
        self.base_url = resolve_base_url(base_url)
        checked_timeout = _check_timeout(timeout or DEFAULT_TIMEOUT)
        headers = {"x-api-key": api_key, "user-agent": user_agent, "accept": "application/json"}
        if project_id:
            headers["x-project-id"] = project_id
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=checked_timeout,
            transport=transport,
            follow_redirects=False,
        )
        self._calls = RetryingCaller(
            self._http,
            timeout=checked_timeout,
            retry=retry or RetryPolicy(),
            remaining_time=remaining_time,
            sleep=sleep,
            random=random,
            now=now,
            on_error=on_error,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def __enter__(self) -> ZeroGPUClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- files -------------------------------------------------------------------------------------

    def upload_file(self, fileobj: BinaryIO, filename: str, purpose: str = "batch") -> FileObject:
        """Upload a file (multipart, streamed in chunks from ``fileobj``, which httpx rewinds to 0).

        Raises :class:`AmbiguousRequestError` when the upload may have been stored; see
        :meth:`upload_file_or_adopt`.
        """
        return self._calls.call(
            "POST",
            "/v1/files",
            idempotent=False,
            files={"file": (filename, fileobj, "application/jsonl")},
            data={"purpose": purpose},
            handle=json_handler(FileObject),
        )

    def list_files(
        self, purpose: str | None = None, order: str | None = None, page_size: int | None = None
    ) -> Iterator[FileObject]:
        """Iterate over all files (newest first unless ``order="asc"``), fetching pages lazily."""
        params = {"purpose": purpose, "order": order, "limit": page_size}
        for item in self._calls.paginate("/v1/files", params):
            yield _parse_item(FileObject, item)

    def delete_file(self, file_id: str) -> FileDeleted:
        """Deletes a file at the API (its bytes go; a running batch keeps its own copy)."""
        return self._calls.call("DELETE", f"/v1/files/{path_id(file_id)}", handle=json_handler(FileDeleted))

    def download_file_content(self, file_id: str, target: BinaryIO) -> int:
        """Stream a file's content into ``target``; returns the bytes written.

        If a retry follows a partial write, a seekable ``target`` is rewound to where it started and
        truncated; a non-seekable one raises :class:`PartialDownloadError`. After any raised error the
        target's content is undefined.
        """
        start = target.tell() if _seekable(target) else None
        written = 0

        def handle(response: httpx.Response) -> int:
            nonlocal written
            for chunk in response.iter_bytes():
                target.write(chunk)
                written += len(chunk)
                self._calls.check_deadline_mid_stream()
            return written

        def rewind() -> None:
            nonlocal written
            if written == 0:
                return
            if start is None:
                raise PartialDownloadError(
                    f"download of {file_id} broke off after {written} bytes and the target cannot be rewound"
                )
            target.seek(start)
            target.truncate()
            written = 0

        return self._calls.call(
            "GET",
            f"/v1/files/{path_id(file_id)}/content",
            headers={"accept": "application/jsonl, application/octet-stream, */*"},
            handle=handle,
            before_retry=rewind,
        )

    def find_file(
        self,
        filename: str,
        size: int | None = None,
        *,
        created_after: int | None = None,
        purpose: str | None = "batch",
    ) -> FileObject | None:
        """The newest file named ``filename`` (and of ``size`` bytes, if given), or None.

        Lists newest first and stops at the first file created before ``created_after``.
        """
        for file in self.list_files(purpose=purpose, order="desc", page_size=FILE_PAGE_SIZE):
            if created_after is not None and file.created_at is not None and file.created_at < created_after:
                return None
            if file.filename == filename and (size is None or file.bytes == size):
                return file
        return None

    def upload_file_or_adopt(
        self,
        path_or_fileobj: str | os.PathLike[str] | BinaryIO,
        filename: str,
        *,
        purpose: str = "batch",
        created_after: int | None = None,
        max_uploads: int = 3,
    ) -> FileObject:
        """Upload, and after an ambiguous failure adopt the file if it was stored (by filename + size).

        Only if the lookup finds nothing is the upload repeated, at most ``max_uploads`` times in all. A
        non-seekable file object is never re-uploaded (its bytes are gone) and is matched by name only.
        The filename should be unique to the job (e.g. derived from its id) for the match to be exact.
        """
        if isinstance(path_or_fileobj, str | os.PathLike):
            with open(path_or_fileobj, "rb") as fileobj:
                return self._upload_or_adopt(fileobj, filename, purpose, created_after, max_uploads)
        return self._upload_or_adopt(path_or_fileobj, filename, purpose, created_after, max_uploads)

    def _upload_or_adopt(
        self,
        fileobj: BinaryIO,
        filename: str,
        purpose: str,
        created_after: int | None,
        max_uploads: int,
    ) -> FileObject:
        size = _size_of(fileobj)
        attempts = max(1, max_uploads) if size is not None else 1
        last: AmbiguousRequestError | None = None
        for attempt in range(attempts):
            try:
                return self.upload_file(fileobj, filename, purpose)
            except AmbiguousRequestError as exc:
                last = exc
                logger.warning("zerogpu upload %d was ambiguous (%s); looking it up", attempt + 1, exc.cause)
                found = self.find_file(filename, size, created_after=created_after, purpose=purpose)
                if found is not None:
                    logger.info("zerogpu adopted file %s after an ambiguous upload", found.id)
                    return found
        assert last is not None
        raise last

    # -- batches -----------------------------------------------------------------------------------

    def create_batch(
        self,
        input_file_id: str,
        *,
        endpoint: str = CHAT_COMPLETIONS_ENDPOINT,
        completion_window: str = "24h",
        metadata: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Create a batch. Raises :class:`AmbiguousRequestError` when it may have been created."""
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata is not None:
            body["metadata"] = dict(metadata)
        return self._calls.call("POST", "/v1/batches", idempotent=False, json=body, handle=json_handler(Batch))

    def retrieve_batch(self, batch_id: str) -> Batch:
        """Fetch one batch with live request counts."""
        return self._calls.call("GET", f"/v1/batches/{path_id(batch_id)}", handle=json_handler(Batch))

    def list_batches(self, page_size: int | None = None) -> Iterator[Batch]:
        """Iterate over all batches, newest first, fetching pages lazily."""
        for item in self._calls.paginate("/v1/batches", {"limit": page_size}):
            yield _parse_item(Batch, item)

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel a batch; if it is already terminal (409) return its current state instead of raising."""
        try:
            return self._calls.call(
                "POST",
                f"/v1/batches/{path_id(batch_id)}/cancel",
                handle=json_handler(Batch),
                no_retry_statuses=frozenset({409}),
            )
        except ConflictError:
            return self.retrieve_batch(batch_id)

    def find_batch(self, metadata: Mapping[str, Any], *, created_after: int | None = None) -> Batch | None:
        """The newest batch whose metadata contains every given key/value, or None.

        Lists newest first and stops at the first batch created before ``created_after``.
        """
        if not metadata:
            raise ValueError("find_batch needs at least one metadata key to match on")
        for batch in self.list_batches(page_size=BATCH_PAGE_SIZE):
            if created_after is not None and batch.created_at is not None and batch.created_at < created_after:
                return None
            if all(key in batch.metadata and batch.metadata[key] == value for key, value in metadata.items()):
                return batch
        return None

    def create_batch_or_adopt(
        self,
        input_file_id: str,
        metadata: Mapping[str, Any],
        *,
        endpoint: str = CHAT_COMPLETIONS_ENDPOINT,
        completion_window: str = "24h",
        created_after: int | None = None,
        max_creates: int = 3,
    ) -> Batch:
        """Create a batch tagged with ``metadata``; after an ambiguous failure adopt the match instead.

        The first POST is not preceded by a lookup (the caller's checkpoint covers re-runs). After an
        :class:`AmbiguousRequestError` the batch list is searched by ``metadata``; only when nothing
        matches is the create repeated, at most ``max_creates`` POSTs in all. ``metadata`` must identify
        the job uniquely (e.g. ``{"job_id": ...}``); ``created_after`` bounds the search.
        """
        if not metadata:
            raise ValueError("create_batch_or_adopt needs metadata that identifies the job")
        last: AmbiguousRequestError | None = None
        for attempt in range(max(1, max_creates)):
            try:
                return self.create_batch(
                    input_file_id, endpoint=endpoint, completion_window=completion_window, metadata=metadata
                )
            except AmbiguousRequestError as exc:
                last = exc
                logger.warning("zerogpu create %d was ambiguous (%s); looking it up", attempt + 1, exc.cause)
                found = self.find_batch(metadata, created_after=created_after)
                if found is not None:
                    logger.info("zerogpu adopted batch %s after an ambiguous create", found.id)
                    return found
        assert last is not None
        raise last
