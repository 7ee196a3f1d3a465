"""A shard's input lines on local disk: its work copy, or, if that has expired, rebuilt from the input.

Shards can wait under the work prefix for a long time (held back by the in-flight limit, or deferred by
API failures), longer than the work prefix's lifecycle expiry. The input object itself is kept (it is
versioned), and a shard is a run of the input's lines: `lines` non-blank lines from physical line
`first_line` on, normalised the same way the split did. So a lost work copy is rebuilt, not lost.
"""

from __future__ import annotations

import os
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


def local_shard_copy(shard: Shard, job: Job, directory: str, s3: S3Client) -> str:
    """The path of a local file holding exactly the shard's lines."""
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
