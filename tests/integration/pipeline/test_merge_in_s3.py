"""The job's results are put together inside S3 (UploadPartCopy): what passes through the function is only
what is too small to be a part of its own, so the merge does not grow with the job's output."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from batchdrop.integrations import s3io

MiB = 1024 * 1024
BUCKET = "merge-test"


@pytest.fixture
def s3() -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _sources(s3: Any, sizes: list[int]) -> tuple[list[str], bytes]:
    rng = random.Random(len(sizes))
    keys, whole = [], b""
    for n, size in enumerate(sizes):
        body = rng.randbytes(size)
        s3.put_object(Bucket=BUCKET, Key=f"part-{n}", Body=body)
        keys.append(f"part-{n}")
        whole += body
    return keys, whole


def _bytes_read_through(s3: Any) -> list[int]:
    read: list[int] = []
    get_object = s3.get_object

    def recording(**kwargs: Any) -> Any:
        reply = get_object(**kwargs)
        read.append(reply["ContentLength"])
        return reply

    s3.get_object = recording
    return read


@pytest.mark.parametrize(
    "sizes",
    [
        [6 * MiB, 7 * MiB, 5 * MiB],  # every source a part of its own
        [3 * MiB, 7 * MiB, 1024, 6 * MiB, 2 * MiB],  # small ones gathered, large ones topped up then copied
        [1024, 0, 2 * MiB, 3 * MiB + 17],  # small ones only, over one part in all
        [0, 12 * MiB, 0],  # empty sources
        [100, 200],  # under one part in all
    ],
)
def test_the_merge_is_the_sources_in_order(s3: Any, sizes: list[int]) -> None:
    # Given result files of these sizes
    keys, whole = _sources(s3, sizes)
    read = _bytes_read_through(s3)

    # When they are merged
    made = s3io.concatenate(s3, BUCKET, keys, "merged")
    read_through = sum(read)

    # Then the object is exactly their bytes in order, typed as JSON Lines
    merged = s3.get_object(Bucket=BUCKET, Key="merged")
    assert merged["Body"].read() == whole
    assert merged["ContentType"] == "application/jsonl"
    # and the merge says where each source lies in it, and what it made
    assert made.sizes == sizes and made.etag == merged["ETag"].strip('"')
    # and what passed through the function is the small sources and, of each large one, less than two parts
    small, large = [size for size in sizes if size < 5 * MiB], [size for size in sizes if size >= 5 * MiB]
    assert read_through <= sum(small) + 10 * MiB * len(large)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_large_sources_never_pass_through_the_function(s3: Any) -> None:
    keys, whole = _sources(s3, [6 * MiB, 9 * MiB, 5 * MiB, 8 * MiB])
    read = _bytes_read_through(s3)
    s3io.concatenate(s3, BUCKET, keys, "merged")
    assert sum(read) == 0  # copied inside S3, part by part
    assert s3.get_object(Bucket=BUCKET, Key="merged")["Body"].read() == whole


def test_a_missing_source_is_reported_and_leaves_no_upload_behind(s3: Any) -> None:
    keys, _ = _sources(s3, [6 * MiB, 6 * MiB])
    s3.delete_object(Bucket=BUCKET, Key=keys[1])
    with pytest.raises(s3io.SourceMissing):
        s3io.concatenate(s3, BUCKET, keys, "merged")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_one_source_merged_is_its_copy_with_its_size(s3: Any) -> None:
    keys, whole = _sources(s3, [3 * MiB])
    made = s3io.concatenate(s3, BUCKET, keys, "merged")
    merged = s3.get_object(Bucket=BUCKET, Key="merged")
    assert merged["Body"].read() == whole
    assert made.sizes == [len(whole)] and made.etag == merged["ETag"].strip('"')


@pytest.mark.parametrize(("start", "size"), [(0, 0), (1000, 2000), (3 * MiB, 7 * MiB), (12 * MiB - 5, 5)])
def test_a_range_of_a_merged_file_is_given_back_byte_for_byte(s3: Any, tmp_path: Path, start: int, size: int) -> None:
    # Given a merged file
    keys, whole = _sources(s3, [6 * MiB, 6 * MiB])
    made = s3io.concatenate(s3, BUCKET, keys, "merged")

    # When a range of it is copied to an object of its own and downloaded to a file
    s3io.copy_range(s3, BUCKET, "merged", etag=made.etag, start=start, size=size, target_key="cut")
    s3io.download_range(s3, BUCKET, "merged", etag=made.etag, start=start, size=size, path=str(tmp_path / "cut"))

    # Then both are exactly those bytes, and no upload is left behind
    assert s3.get_object(Bucket=BUCKET, Key="cut")["Body"].read() == whole[start : start + size]
    with open(tmp_path / "cut", "rb") as downloaded:
        assert downloaded.read() == whole[start : start + size]
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_a_replaced_merged_file_is_never_read_as_the_job_s(s3: Any, tmp_path: Path) -> None:
    keys, _ = _sources(s3, [100, 200])
    made = s3io.concatenate(s3, BUCKET, keys, "merged")
    s3.put_object(Bucket=BUCKET, Key="merged", Body=b"edited by hand")
    with pytest.raises(s3io.SourceMissing):
        s3io.download_range(s3, BUCKET, "merged", etag=made.etag, start=0, size=10, path=str(tmp_path / "cut"))
    with pytest.raises(s3io.SourceMissing):
        s3io.copy_range(s3, BUCKET, "merged", etag=made.etag, start=0, size=10, target_key="cut")
