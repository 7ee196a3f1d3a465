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
from collections.abc import Callable
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


class LocalShards:
    """The shard files this invocation wrote itself (the split's), kept on local disk by work key, so that
    the API upload reads them instead of downloading the work copy back; and their durable copies to the
    work prefix, written in the background meanwhile. Gone with the invocation (close() waits for the
    copies: Lambda freezes what still runs after the handler returns)."""

    def __init__(self, workdir: str) -> None:
        self._workdir = workdir
        self._directory: str | None = None
        self._paths: dict[str, str] = {}
        self._lock = threading.Lock()
        self._copier: ThreadPoolExecutor | None = None
        self._copies: list[Future[None]] = []
        self._copying: set[str] = set()
        self._dropped: set[str] = set()
        """Dropped while their copy was being written: removed once it is done."""

    def copy_in_background(self, work_key: str, copy: Callable[[], None]) -> None:
        """One copy at a time, in order, beside the caller's work; the file stays until its copy is done."""
        if self._copier is None:
            self._copier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="work-copy")

        def copy_then_release() -> None:
            try:
                copy()
            finally:
                with self._lock:
                    self._copying.discard(work_key)
                    dropped = work_key in self._dropped
                if dropped:
                    self.drop(work_key)

        with self._lock:
            self._copying.add(work_key)
        self._copies.append(self._copier.submit(copy_then_release))

    def cancel_copies(self) -> None:
        """Copies not started yet are dropped; the one running ends; none raises."""
        for copy in self._copies:
            copy.cancel()
        self._drain(report=False)
        with self._lock:
            self._copying.clear()

    def finish_copies(self) -> int:
        """Waits for every copy; returns how many failed (each logged: such a shard is rebuilt from the
        input when it is next needed, as after the work prefix's expiry)."""
        return self._drain(report=True)

    def _drain(self, *, report: bool) -> int:
        failed = 0
        copies, self._copies = self._copies, []
        for copy in copies:
            if copy.cancelled():
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
            kept = os.path.join(self._directory, f"{len(self._paths):05d}-{os.path.basename(path)}")
            os.replace(path, kept)
            self._paths[work_key] = kept
            return kept

    def path(self, work_key: str, size: int) -> str | None:
        """The local file of that work copy, if this invocation has it whole."""
        with self._lock:
            path = self._paths.get(work_key)
        if path is not None and os.path.exists(path) and os.path.getsize(path) == size:
            return path
        return None

    def drop(self, work_key: str) -> None:
        """The file is no longer needed here (removed now, or once its copy is written)."""
        with self._lock:
            if work_key in self._copying:
                self._dropped.add(work_key)
                return
            self._dropped.discard(work_key)
            path = self._paths.pop(work_key, None)
        if path is not None and os.path.exists(path):
            os.remove(path)

    def close(self) -> None:
        self.finish_copies()
        if self._copier is not None:
            self._copier.shutdown(wait=True)
            self._copier = None
        with self._lock:
            directory, self._directory = self._directory, None
            self._paths.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def local_shard_copy(shard: Shard, job: Job, directory: str, s3: S3Client, local: LocalShards | None = None) -> str:
    """The path of a local file holding exactly the shard's lines: the split's own file if this
    invocation has it (`local`), else its work copy downloaded into `directory`, else rebuilt there."""
    if local is not None and (kept := local.path(shard.work_key, shard.bytes)) is not None:
        return kept
    path = os.path.join(directory, shard.upload_filename)
    try:
        s3io.download_file(s3, job.input.bucket, shard.work_key, path, size=shard.bytes)
        return path
    except ClientError as error:
        if not s3io.is_missing(error):
            raise
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
