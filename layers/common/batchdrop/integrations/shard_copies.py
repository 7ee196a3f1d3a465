"""A shard's input lines on local disk: its work copy, or, if that has expired, rebuilt from the input.

Shards can wait under the work prefix for a long time (held back by the in-flight limit, or deferred by
API failures), longer than the work prefix's lifecycle expiry. The input object itself is kept (it is
versioned), and a shard is a run of the input's lines: `lines` non-blank lines from physical line
`first_line` on, normalised the same way the split did. So a lost work copy is rebuilt, not lost.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from batchdrop.integrations import s3io
from batchdrop.models import Job, ObjectRef, Shard
from batchdrop.observability import Metric, count, logger
from batchdrop.validation import iter_physical_lines

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ShardSourceMissing(Exception):
    """Neither the shard's work copy nor the input object it came from can be read any more."""


COPIES_QUEUED = 1
"""Work copies waiting behind the one being written: the split waits for a copy beyond that, so local
disk never holds more than two shards that still wait for their copy (S3 slow, the copy thread starved)."""


class LocalShards:
    """The shard files this invocation wrote itself (the split's), kept on local disk by work key, so that
    the API upload reads them instead of downloading the work copy back; and their durable copies to the
    work prefix, written in the background meanwhile. Gone with the invocation: close() waits for the
    copies (Lambda freezes what still runs after the handler returns), within the time it is given."""

    def __init__(self, workdir: str) -> None:
        self._workdir = workdir
        self._directory: str | None = None
        self._paths: dict[str, str] = {}
        self._kept = 0  # files kept so far: each kept file's name is new
        self._lock = threading.Lock()
        self._copier: ThreadPoolExecutor | None = None
        self._copies: dict[Future[None], str] = {}  # each copy, with the work key of its file
        self._queued: deque[Future[None]] = deque()  # the copies that may not be done yet
        self._busy: dict[str, int] = {}
        """Files being copied or read (an upload under way): a drop of one waits for the last to end."""
        self._dropped: set[str] = set()

    def copy_in_background(self, work_key: str, copy: Callable[[], None]) -> None:
        """One copy at a time, in order, beside the caller's work; the file stays until its copy is done.
        Waits while COPIES_QUEUED copies already wait behind the one being written."""
        if self._copier is None:
            self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="work-copy")
        queued = self._queued  # in order (one copier): the ones done are at the front
        while queued and queued[0].done():
            queued.popleft()
        if len(queued) > COPIES_QUEUED:
            futures.wait(list(queued)[: len(queued) - COPIES_QUEUED])

        def copy_then_release() -> None:
            try:
                copy()
            finally:
                self._release(work_key)

        self._pin(work_key)
        submitted = self._copier.submit(copy_then_release)
        self._copies[submitted] = work_key
        queued.append(submitted)

    def cancel_copies(self) -> None:
        """Copies not started yet are dropped; the one running ends; none raises."""
        for copy, work_key in self._copies.items():
            if copy.cancel():
                self._release(work_key)
        self._drain(report=False, timeout=None)

    def finish_copies(self, timeout: float | None = None) -> int:
        """Waits for every copy (for at most `timeout` seconds); returns how many failed or were left
        unfinished (each logged: such a shard is rebuilt from the input when it is next needed, as after
        the work prefix's expiry)."""
        return self._drain(report=True, timeout=timeout)

    def _drain(self, *, report: bool, timeout: float | None) -> int:
        copies, self._copies = list(self._copies), {}
        self._queued.clear()
        _, unfinished = futures.wait(copies, timeout=timeout)
        failed = len(unfinished)
        if unfinished and report:
            logger.warning("work copies still being written when the invocation ends", extra={"copies": failed})
        for copy in copies:
            if copy in unfinished or copy.cancelled():
                continue
            error = copy.exception()
            if error is not None:
                failed += 1
                if report:
                    logger.warning("a shard's work copy could not be written", extra={"error": repr(error)})
        return failed

    def keep(self, work_key: str, path: str) -> str:
        """Moves the file in (a rename: same disk) and returns its new path."""
        with self._lock:
            if self._directory is None:
                self._directory = tempfile.mkdtemp(prefix="shards-", dir=self._workdir)
            self._kept += 1
            kept = os.path.join(self._directory, f"{self._kept:05d}-{os.path.basename(path)}")
            os.replace(path, kept)
            self._paths[work_key] = kept
            return kept

    def path(self, work_key: str, size: int) -> str | None:
        """The local file of that work copy, if this invocation has it whole; it stays until the caller
        drops it (a copy finishing meanwhile does not remove it from under the reader)."""
        with self._lock:
            path = self._paths.get(work_key)
            if path is None or not os.path.exists(path) or os.path.getsize(path) != size:
                return None
            self._busy[work_key] = self._busy.get(work_key, 0) + 1
            return path

    def drop(self, work_key: str, *, reader: bool = False) -> None:
        """The file is no longer needed (a `reader` is done with it): removed now, or once the copy or
        read of it under way ends."""
        if reader:
            self._release(work_key, drop=True)
            return
        with self._lock:
            if self._busy.get(work_key):
                self._dropped.add(work_key)
                return
            self._remove(work_key)

    def _pin(self, work_key: str) -> None:
        with self._lock:
            self._busy[work_key] = self._busy.get(work_key, 0) + 1

    def _release(self, work_key: str, *, drop: bool = False) -> None:
        with self._lock:
            left = self._busy.get(work_key, 1) - 1
            if left > 0:
                self._busy[work_key] = left
                if drop:
                    self._dropped.add(work_key)
                return
            self._busy.pop(work_key, None)
            if drop or work_key in self._dropped:
                self._remove(work_key)

    def _remove(self, work_key: str) -> None:
        """Under the lock."""
        self._dropped.discard(work_key)
        path = self._paths.pop(work_key, None)
        if path is not None and os.path.exists(path):
            os.remove(path)

    def close(self, timeout: float | None = None) -> None:
        self.finish_copies(timeout)
        if self._copier is not None:
            self._copier.shutdown(wait=False, cancel_futures=True)
            self._copier = None
        with self._lock:
            directory, self._directory = self._directory, None
            self._paths.clear()
            self._busy.clear()
            self._dropped.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def local_shard_copy(shard: Shard, job: Job, directory: str, s3: S3Client) -> str:
    """The path of a local file in `directory` holding exactly the shard's lines: its work copy
    downloaded, or rebuilt from the input."""
    path = os.path.join(directory, shard.upload_filename)
    try:
        s3io.download_file(s3, job.input.bucket, shard.work_key, path, size=shard.bytes)
        return path
    except ClientError as error:
        if not s3io.is_missing(error):
            raise
    if shard.round:
        # A re-drive's lines are not one run of the input: there is nothing to rebuild it from.
        raise ShardSourceMissing(
            f"shard {shard.index} of {job.job_id} (round {shard.round}): its work copy expired (WorkRetentionDays)"
        )
    logger.warning("the shard's work copy is gone; rebuilding it from the input", extra={"shard": shard.index})
    count(Metric.SHARDS_REBUILT)
    ref = ObjectRef(job.input.bucket, job.input.key, job.input.version_id, job.input.etag)
    taken = 0
    try:
        with s3io.open_object(s3, ref) as stream, open(path, "wb") as copy:
            for physical in iter_physical_lines(stream):
                if physical.number < shard.first_line or not physical.content.strip():
                    continue
                copy.write(physical.content + b"\n")
                taken += 1
                if taken == shard.lines:
                    break
    except ClientError as error:
        if s3io.is_missing(error):
            raise ShardSourceMissing(f"shard {shard.index} of {job.job_id}: the input object is gone too") from None
        raise
    if taken != shard.lines or os.path.getsize(path) != shard.bytes:
        raise ShardSourceMissing(f"shard {shard.index} of {job.job_id}: the input no longer holds its lines")
    s3io.upload_file(s3, path, job.input.bucket, shard.work_key)
    return path
