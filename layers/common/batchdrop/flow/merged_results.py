"""A job's merged outbox files as the source of its expired work files.

At each end of a job, its `output.jsonl` and `errors.jsonl` are its shards' result files under the work
prefix put together in order (`completion`'s merge), byte for byte; the layout (`MergedLayout`, stored
beside the job) records which file lies where. A retry by hand after the work prefix's expiry
(`WorkRetentionDays`) cuts the result files it needs from there again: the outbox file pinned by the ETag
the merge recorded, so a file replaced since is never read as the job's. (The request lines themselves are
taken from the input object, as a first round already can.)
"""

from __future__ import annotations

from typing import Any

from batchdrop.integrations import s3io
from batchdrop.integrations.store import JobStore
from batchdrop.models import Job, MergedFile, MergedLayout
from batchdrop.observability import logger

LAYOUT_MAX_BYTES = 350 * 1024
"""A layout larger than this once gzipped (a job of more than about 20,000 shards, counting every round's) is
not kept: a DynamoDB item holds at most 400 KB."""


def record(job: Job, store: JobStore, files: dict[str, tuple[list[str], s3io.Concatenated]]) -> None:
    """The layout of the files just merged: `files` by name (`output.jsonl`, `errors.jsonl`), each the
    sources in order and what the merge made of them. Best effort: without it, only a retry after the work
    prefix expired is refused; the job's end goes on whatever happens here."""

    def merged(name: str) -> MergedFile:
        keys, made = files[name]
        return MergedFile.of(made.etag, keys, made.sizes)

    layout = MergedLayout(round=job.round, output=merged("output.jsonl"), errors=merged("errors.jsonl"))
    try:
        store.put_merged(job.job_id, layout, expires_at=job.expires_at, max_bytes=LAYOUT_MAX_BYTES)
    except Exception as error:  # a retry after expiry is refused instead; the job still ends
        logger.warning("where each result file lies in the merged files was not kept", extra={"error": repr(error)})


class MergedResults:
    """The work files a job's merged outbox files can give back, and giving them."""

    def __init__(self, job: Job, layout: MergedLayout, s3: Any) -> None:
        self._job, self._s3 = job, s3
        self._files = {
            f"{job.output_prefix}output.jsonl": layout.output,
            f"{job.output_prefix}errors.jsonl": layout.errors,
        }
        self._where = {
            key: (merged_key, offset, size)
            for merged_key, merged in self._files.items()
            for key, (offset, size) in merged.ranges().items()
        }
        self._unchanged: dict[str, bool] = {}

    @classmethod
    def load(cls, job: Job, store: JobStore, s3: Any) -> MergedResults | None:
        layout = store.get_merged(job.job_id)
        return cls(job, layout, s3) if layout is not None else None

    def covers(self, key: str) -> bool:
        """Whether the work file `key` can be cut from the outbox: it was merged there, and that outbox
        file is still the one merged (its ETag; looked up once a file)."""
        if key not in self._where:
            return False
        merged_key = self._where[key][0]
        if merged_key not in self._unchanged:
            found = s3io.head(self._s3, self._job.input.bucket, merged_key)
            self._unchanged[merged_key] = found is not None and found.etag == self._files[merged_key].etag
        return self._unchanged[merged_key]

    def restore(self, key: str) -> None:
        """The work file `key` again, copied inside S3 from its place in the outbox (SourceMissing if the
        outbox file was replaced meanwhile)."""
        merged_key, offset, size = self._where[key]
        logger.warning("a result file expired; it is cut from the job's merged file", extra={"key": key})
        s3io.copy_range(
            self._s3,
            self._job.input.bucket,
            merged_key,
            etag=self._files[merged_key].etag,
            start=offset,
            size=size,
            target_key=key,
        )

    def download(self, key: str, path: str) -> None:
        """The work file `key`'s bytes from its place in the outbox, to a local file."""
        merged_key, offset, size = self._where[key]
        logger.warning("a result file expired; it is read from the job's merged file", extra={"key": key})
        s3io.download_range(
            self._s3,
            self._job.input.bucket,
            merged_key,
            etag=self._files[merged_key].etag,
            start=offset,
            size=size,
            path=path,
        )
