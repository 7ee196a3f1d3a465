"""Small S3 integrations: head, streamed reads, managed (multipart) uploads, streamed merges."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

from aws_lambda_powertools.utilities.streaming import S3Object
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from batchdrop.models import ObjectRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Parts of 8 MiB, at most 4 in memory at once: an upload's memory does not grow with the object.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=4
)


def is_missing(error: ClientError) -> bool:
    """Gone, or replaced since (a failed IfMatch): either way, not the object asked for."""
    code = error.response.get("Error", {}).get("Code")
    return code in ("404", "NoSuchKey", "NoSuchVersion", "412", "PreconditionFailed")


def head(s3: S3Client, bucket: str, key: str, version_id: str | None = None) -> ObjectRef | None:
    """The object's current identity, or None if it does not exist (any more)."""
    try:
        if version_id:
            reply = s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
        else:
            reply = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchVersion", "400"):
            return None
        raise
    return ObjectRef(
        bucket=bucket,
        key=key,
        version_id=reply.get("VersionId") if reply.get("VersionId") not in (None, "null") else None,
        etag=(reply.get("ETag") or "").strip('"') or None,
        size=reply.get("ContentLength"),
    )


def open_object(s3: S3Client, ref: ObjectRef) -> IO[bytes]:
    """A streamed, read-only view of exactly this object (gunzipped for `.gz` keys): with its ETag known,
    a replaced object fails the read (412) instead of being read in its place, also in unversioned buckets."""
    pinned: dict[str, Any] = {"IfMatch": f'"{ref.etag}"'} if ref.etag else {}
    return S3Object(
        bucket=ref.bucket, key=ref.key, version_id=ref.version_id, boto3_client=s3, is_gzip=ref.is_gzip, **pinned
    )


def upload_file(s3: S3Client, path: str, bucket: str, key: str, *, content_type: str = "application/jsonl") -> None:
    s3.upload_file(path, bucket, key, ExtraArgs={"ContentType": content_type}, Config=TRANSFER_CONFIG)


def download_file(s3: S3Client, bucket: str, key: str, path: str, *, size: int | None = None) -> None:
    """To a local file: one streamed GET when the object is known to be small, else the managed transfer
    (ranged parts in parallel)."""
    if size is not None and size < TRANSFER_CONFIG.multipart_threshold:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with open(path, "wb") as target:
            shutil.copyfileobj(body, target, 1024 * 1024)
        return
    s3.download_file(bucket, key, path, Config=TRANSFER_CONFIG)


def put_json(s3: S3Client, bucket: str, key: str, document: Any) -> None:
    body = json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


class Stream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class ChainedReader:
    """Reads several streams one after the other, opening each only when it is reached."""

    def __init__(self, openers: Iterable[Callable[[], Stream]]) -> None:
        self._openers = iter(openers)
        self._current: Stream | None = None

    def read(self, size: int = -1) -> bytes:
        """Returns exactly `size` bytes unless the end is reached: boto3 makes each read one multipart
        part, and S3 refuses parts under 5 MiB but the last."""
        wanted = size if size is not None and size > 0 else 8 * 1024 * 1024
        pieces: list[bytes] = []
        while wanted > 0:
            if self._current is None:
                opener = next(self._openers, None)
                if opener is None:
                    break
                self._current = opener()
            chunk = self._current.read(wanted)
            if not chunk:
                self._current.close()
                self._current = None
                continue
            pieces.append(chunk)
            wanted -= len(chunk)
        return b"".join(pieces)


class SourceMissing(Exception):
    """A source of a merge does not exist (any more)."""


def concatenate(s3: S3Client, bucket: str, source_keys: list[str], target_key: str) -> None:
    """The sources, in order, as one object: one source is copied inside S3; several are streamed
    (multipart when large), memory staying bounded. SourceMissing if a source is gone."""
    try:
        if len(source_keys) == 1:
            s3.copy(
                {"Bucket": bucket, "Key": source_keys[0]},
                bucket,
                target_key,
                ExtraArgs={"ContentType": "application/jsonl", "MetadataDirective": "REPLACE"},
                Config=TRANSFER_CONFIG,
            )
            return

        def opener(key: str) -> Callable[[], Stream]:
            return lambda: s3.get_object(Bucket=bucket, Key=key)["Body"]

        s3.upload_fileobj(
            cast(IO[bytes], ChainedReader(opener(key) for key in source_keys)),  # reads are all boto3 does
            bucket,
            target_key,
            ExtraArgs={"ContentType": "application/jsonl"},
            Config=TRANSFER_CONFIG,
        )
    except ClientError as error:
        if is_missing(error):
            raise SourceMissing(str(error)) from None
        raise
