"""Small S3 integrations: head, streamed reads, managed (multipart) uploads, merges inside S3."""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from aws_lambda_powertools.shared import user_agent
from aws_lambda_powertools.utilities.streaming import S3Object
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from batchdrop.models import ObjectRef
from batchdrop.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

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
    stream = S3Object(
        bucket=ref.bucket, key=ref.key, version_id=ref.version_id, boto3_client=s3, is_gzip=ref.is_gzip, **pinned
    )
    _tag_streaming_once(s3)
    # Else every S3Object adds one more user-agent hook to the (long-lived) client: a warm function's S3
    # calls would run one hook per object it ever opened (tests/integration/test_s3_streams.py holds this).
    stream.raw_stream._has_user_agent = True
    return stream


def _tag_streaming_once(s3: S3Client) -> None:
    """Powertools' `PT/streaming` user-agent tag, registered on a client once."""
    if not getattr(s3, "_batchdrop_streaming_tagged", False):
        user_agent.register_feature_to_client(client=s3, feature="streaming")  # type: ignore[no-untyped-call]
        s3._batchdrop_streaming_tagged = True  # type: ignore[attr-defined]


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


def presigned_links(uris: dict[str, str], s3: S3Client, *, hours: float) -> dict[str, str]:
    """HTTPS links that open these `s3://` objects for `hours` (none with 0: the URIs stand as they are).
    Signed here, with no call; a link signed with temporary credentials (a Lambda role's) works no longer
    than they do."""
    if not hours:
        return {}
    links = {}
    for name, uri in uris.items():
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        links[name] = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(hours * 3600)
        )
    return links


def put_json(s3: S3Client, bucket: str, key: str, document: Any) -> None:
    body = json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")


class SourceMissing(Exception):
    """A source of a merge does not exist (any more)."""


MIN_PART_BYTES = 5 * 1024 * 1024
"""S3's smallest multipart part (but the last)."""
MAX_COPY_PART_BYTES = 5 * 1024**3
"""S3's largest part, and so the largest range one UploadPartCopy takes."""


@dataclass(frozen=True, slots=True)
class Concatenated:
    """What a merge made: each source's size, in order (so where each one lies in it), and its ETag."""

    sizes: list[int]
    etag: str


def concatenate(s3: S3Client, bucket: str, source_keys: list[str], target_key: str) -> Concatenated:
    """The sources, in order, as one object, put together inside S3: a multipart upload whose parts are
    copied from the sources (UploadPartCopy); only sources or their ends too small to be a part of their
    own (under 5 MiB) pass through here, a part's worth at a time. So the time and memory this takes do
    not grow with the sources' size. SourceMissing if a source is gone."""
    try:
        if len(source_keys) == 1:
            s3.copy(
                {"Bucket": bucket, "Key": source_keys[0]},
                bucket,
                target_key,
                ExtraArgs={"ContentType": "application/jsonl", "MetadataDirective": "REPLACE"},
                Config=TRANSFER_CONFIG,
            )
            made = s3.head_object(Bucket=bucket, Key=target_key)
            return Concatenated([made["ContentLength"]], made["ETag"].strip('"'))
        sizes = [s3.head_object(Bucket=bucket, Key=key)["ContentLength"] for key in source_keys]
        if sum(sizes) < MIN_PART_BYTES:  # one small object: read through
            body = b"".join(s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in source_keys)
            reply = s3.put_object(Bucket=bucket, Key=target_key, Body=body, ContentType="application/jsonl")
            return Concatenated(sizes, reply["ETag"].strip('"'))
        etag = _concatenate_in_parts(s3, bucket, list(zip(source_keys, sizes, strict=True)), target_key)
        return Concatenated(sizes, etag)
    except ClientError as error:
        if is_missing(error):
            raise SourceMissing(str(error)) from None
        raise


def copy_range(
    s3: S3Client, bucket: str, source_key: str, *, etag: str, start: int, size: int, target_key: str
) -> None:
    """`size` bytes of the source from `start`, as an object of their own, copied inside S3 (the source
    pinned by its ETag). SourceMissing if the source is gone or was replaced."""
    try:
        if size < MIN_PART_BYTES:  # small: read through
            body = b""
            if size:
                body = s3.get_object(
                    Bucket=bucket, Key=source_key, IfMatch=f'"{etag}"', Range=f"bytes={start}-{start + size - 1}"
                )["Body"].read()
            s3.put_object(Bucket=bucket, Key=target_key, Body=body, ContentType="application/jsonl")
            return
        upload_id = s3.create_multipart_upload(Bucket=bucket, Key=target_key, ContentType="application/jsonl")[
            "UploadId"
        ]
        try:
            pieces = -(-size // MAX_COPY_PART_BYTES)
            step = -(-size // pieces)
            completed: list[CompletedPartTypeDef] = []
            for number, first in enumerate(range(start, start + size, step), start=1):
                last = min(first + step, start + size) - 1
                reply = s3.upload_part_copy(
                    Bucket=bucket,
                    Key=target_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": bucket, "Key": source_key},
                    CopySourceIfMatch=f'"{etag}"',
                    CopySourceRange=f"bytes={first}-{last}",
                )
                completed.append({"PartNumber": number, "ETag": reply["CopyPartResult"]["ETag"]})
            s3.complete_multipart_upload(
                Bucket=bucket, Key=target_key, UploadId=upload_id, MultipartUpload={"Parts": completed}
            )
        except BaseException:
            s3.abort_multipart_upload(Bucket=bucket, Key=target_key, UploadId=upload_id)
            raise
    except ClientError as error:
        if is_missing(error):
            raise SourceMissing(str(error)) from None
        raise


def download_range(s3: S3Client, bucket: str, key: str, *, etag: str, start: int, size: int, path: str) -> None:
    """`size` bytes of the object from `start` to a local file, streamed (the object pinned by its ETag).
    SourceMissing if it is gone or was replaced."""
    with open(path, "wb") as target:
        if not size:
            return
        try:
            body = s3.get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"', Range=f"bytes={start}-{start + size - 1}")
        except ClientError as error:
            if is_missing(error):
                raise SourceMissing(str(error)) from None
            raise
        shutil.copyfileobj(body["Body"], target, 1024 * 1024)


PART_COPIES_AT_ONCE = 8
"""Part copies in flight at once: S3 copies each part in its own time, so a merge of many shards takes
about (parts / 8) part copies, not one after the other (a job of 1,000 shards must merge in one invocation)."""


def _concatenate_in_parts(s3: S3Client, bucket: str, sources: list[tuple[str, int]], target_key: str) -> str:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=target_key, ContentType="application/jsonl")["UploadId"]
    parts: list[Future[str]] = []  # each part's ETag, in part order
    gathered = bytearray()  # small sources (or their starts) gathered into one part, at most ~10 MiB

    def send_gathered() -> None:
        """Here and now (the copies go on meanwhile): at most one gathered part is in memory."""
        reply = s3.upload_part(
            Bucket=bucket, Key=target_key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=bytes(gathered)
        )
        done: Future[str] = Future()
        done.set_result(reply["ETag"])
        parts.append(done)
        gathered.clear()

    def read_range(key: str, start: int, end: int) -> bytes:
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"].read()

    def copy_part(number: int, key: str, first: int, last: int) -> str:
        reply = s3.upload_part_copy(
            Bucket=bucket,
            Key=target_key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": bucket, "Key": key},
            CopySourceRange=f"bytes={first}-{last}",
        )
        return reply["CopyPartResult"]["ETag"]

    def copy_range(key: str, start: int, end: int) -> None:
        pieces = -(-(end - start) // MAX_COPY_PART_BYTES)  # even pieces: none is left under the minimum
        step = -(-(end - start) // pieces)
        for first in range(start, end, step):
            parts.append(copier.submit(copy_part, len(parts) + 1, key, first, min(first + step, end) - 1))

    copier = ThreadPoolExecutor(max_workers=PART_COPIES_AT_ONCE, thread_name_prefix="part-copy")
    try:
        for key, size in sources:
            offset = 0
            if gathered and size:  # top the gathered part up from this source's start
                wanted = MIN_PART_BYTES - len(gathered)
                offset = wanted if size - wanted >= MIN_PART_BYTES else size
                gathered += read_range(key, 0, offset)
                if len(gathered) >= MIN_PART_BYTES:
                    send_gathered()
            if offset < size:
                if not gathered and size - offset >= MIN_PART_BYTES:
                    copy_range(key, offset, size)
                else:
                    gathered += read_range(key, offset, size)
                    if len(gathered) >= MIN_PART_BYTES:
                        send_gathered()
        if gathered:
            send_gathered()  # the last part may be small
        completed: list[CompletedPartTypeDef] = [
            {"PartNumber": number, "ETag": part.result()} for number, part in enumerate(parts, start=1)
        ]
        reply = s3.complete_multipart_upload(
            Bucket=bucket, Key=target_key, UploadId=upload_id, MultipartUpload={"Parts": completed}
        )
        return reply["ETag"].strip('"')
    except BaseException:
        copier.shutdown(wait=True, cancel_futures=True)
        try:
            s3.abort_multipart_upload(Bucket=bucket, Key=target_key, UploadId=upload_id)
        except ClientError as error:  # the merge's own error is the one raised (the lifecycle ends the upload)
            logger.warning("a failed merge's upload could not be aborted", extra={"error": repr(error)})
        raise
    finally:
        copier.shutdown(wait=True)


class StreamedUpload(io.RawIOBase):
    """A write-only stream into one S3 object, sent in parts of WRITE_PART_BYTES as it fills (one part in
    memory at a time); an object that stays under one part is sent with one PutObject. Closing completes
    it; `abort()` (or an error inside `with`) drops it."""

    def __init__(self, s3: S3Client, bucket: str, key: str, *, content_type: str) -> None:
        super().__init__()
        self._s3, self._bucket, self._key, self._type = s3, bucket, key, content_type
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"s3://{self._bucket}/{self._key}: the upload is closed")
        self._buffer += data
        if len(self._buffer) >= WRITE_PART_BYTES:
            self._send_part()
        return len(data)

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._s3.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._type
            )["UploadId"]
        number = len(self._parts) + 1
        reply = self._s3.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        self._buffer.clear()

    def abort(self) -> None:
        if self.closed:
            return
        if self._upload_id is not None:
            try:
                self._s3.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            except ClientError as error:  # the lifecycle rule ends it if this fails
                logger.warning("a failed upload could not be aborted", extra={"error": repr(error)})
        super().close()

    def close(self) -> None:
        """Completes the object (call it, or leave `with` without an error: it is never done in `__del__`)."""
        if self.closed:
            return
        try:
            if self._upload_id is None:
                self._s3.put_object(
                    Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer), ContentType=self._type
                )
            else:
                if self._buffer:
                    self._send_part()
                self._s3.complete_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
                )
        except BaseException:
            self.abort()
            raise
        super().close()

    def __del__(self) -> None:
        if not self.closed:  # dropped without close(): what was written is not an object
            self.abort()

    def __exit__(self, *exc_info: Any) -> None:
        if exc_info[0] is not None:
            self.abort()
        else:
            self.close()


WRITE_PART_BYTES = 8 * 1024 * 1024
