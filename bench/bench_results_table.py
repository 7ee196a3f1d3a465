"""Figures for results.csv (results_table.py): time and memory against the job's size.

    make bench            # or: .venv/bin/python bench/bench_results_table.py [--sizes 20000,200000]

For each size, a job of that many answered lines (50,000 a shard, answers of 5-95 words, a quarter of
them reordered as the API may return them) is written into moto's S3 (in-process), then results.csv is
made from it. Beside it, in the same run: a raw pass over the same bytes through the same S3 (each output
file downloaded, then one object of the CSV's size uploaded): what any pass that reads the results and
writes a table must at least cost here. Memory: a separate process's resident memory during the pass (sampled
every 2 ms) less what it held just before, after a warm-up on a one-line job, with the objects on local
files (moto would hold them in the same process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import boto3
from moto import mock_aws

from batchdrop.flow.results_table import write_results_csv
from batchdrop.models import InputInfo, Job, JobStatus, Shard, ShardResult, ShardState

BUCKET = "bench"
PER_SHARD = 50_000


def output_line(n: int) -> bytes:
    body = {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "model": "gpt-oss-120b",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f'answer {n}, "quoted" ' * (5 + n % 90)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 5 + n % 90, "total_tokens": 45 + n % 90},
    }
    line = {"id": f"batch_req_{n}", "custom_id": f"req-{n}", "response": {"status_code": 200, "body": body}}
    return json.dumps(line).encode()


def _put_lines(s3: Any, key: str, lines: Any) -> int:
    """One object of these lines, sent in 8 MiB parts (the bench's own memory stays small)."""
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts, piece, size = [], bytearray(), 0
    for line in lines:
        piece += line + b"\n"
        if len(piece) >= 8 * 1024 * 1024:
            reply = s3.upload_part(
                Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=bytes(piece)
            )
            parts.append({"PartNumber": len(parts) + 1, "ETag": reply["ETag"]})
            size += len(piece)
            piece.clear()
    reply = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=bytes(piece))
    parts.append({"PartNumber": len(parts) + 1, "ETag": reply["ETag"]})
    size += len(piece)
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
    return size


def make_job(s3: Any, lines: int) -> tuple[Job, list[Shard], int]:
    """The job, its shards (every one collected) and the bytes of its output files."""
    job = Job(
        job_id="job-bench",
        status=JobStatus.SUBMITTING,
        input=InputInfo(bucket=BUCKET, key="inbox/bench.jsonl"),
        output_prefix="outbox/bench/",
        received_at=0,
    )
    shards, total = [], 0
    for index, start in enumerate(range(0, lines, PER_SHARD)):
        numbers = list(range(start, min(lines, start + PER_SHARD)))
        returned = numbers[: len(numbers) // 4][::-1] + numbers[len(numbers) // 4 :]  # the API's own order
        size = _put_lines(s3, f"work/job-bench/results/{index:05d}.output.jsonl", (output_line(n) for n in returned))
        _put_lines(s3, f"work/job-bench/shards/{index:05d}.ids", (json.dumps(f"req-{n}").encode() for n in numbers))
        total += size
        shards.append(
            Shard(
                job_id=job.job_id,
                index=index,
                state=ShardState.COLLECTED,
                work_key=f"work/job-bench/shards/{index:05d}.jsonl",
                ids_key=f"work/job-bench/shards/{index:05d}.ids",
                lines=len(numbers),
                bytes=size,
                first_line=start + 1,
                result=ShardResult(
                    succeeded=len(numbers),
                    output_key=f"work/job-bench/results/{index:05d}.output.jsonl",
                    errors_key="",
                ),
            )
        )
    return job, shards, total


class FileS3:
    """What results_table.py calls of S3, on local files: the memory pass measures the pass, not moto's
    own storage of the objects it holds in the same process."""

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, key: str) -> str:
        path = os.path.join(self.root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        with open(self._path(Key), "wb") as handle:
            handle.write(Body)
        return {}

    def download_file(self, bucket: str, key: str, path: str, **_: Any) -> None:
        import shutil

        shutil.copyfile(self._path(key), path)

    def create_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        open(self._path(Key) + ".parts", "wb").close()
        return {"UploadId": "u"}

    def upload_part(self, Bucket: str, Key: str, UploadId: str, PartNumber: int, Body: bytes) -> dict[str, Any]:
        with open(self._path(Key) + ".parts", "ab") as handle:
            handle.write(Body)
        return {"ETag": str(PartNumber)}

    def complete_multipart_upload(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        os.replace(self._path(Key) + ".parts", self._path(Key))
        return {}

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"ContentLength": os.path.getsize(self._path(Key))}


def services_for(s3: Any, workdir: str) -> Any:
    return SimpleNamespace(s3=s3, workdir=workdir, settings=SimpleNamespace())


def raw_pass(s3: Any, shards: list[Shard], csv_bytes: int, workdir: str) -> None:
    for shard in shards:
        assert shard.result is not None
        s3.download_file(BUCKET, shard.result.output_key, os.path.join(workdir, "raw"))
    with open(os.path.join(workdir, "raw"), "rb+") as handle:
        handle.truncate(csv_bytes)
    s3.upload_file(os.path.join(workdir, "raw"), BUCKET, "outbox/bench/raw.bin")


def one_run(lines: int) -> tuple[float, float, int, int]:
    """(seconds for results.csv, seconds for the raw pass, output bytes, CSV bytes) of a fresh job."""
    with mock_aws(), tempfile.TemporaryDirectory() as workdir:
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        job, shards, output_bytes = make_job(s3, lines)
        started = time.perf_counter()
        key = write_results_csv(job, shards, services_for(s3, workdir))
        table_seconds = time.perf_counter() - started
        csv_bytes = s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        started = time.perf_counter()
        raw_pass(s3, shards, csv_bytes, workdir)
        raw_seconds = time.perf_counter() - started
    return table_seconds, raw_seconds, output_bytes, csv_bytes


_RSS_CHILD = r"""
import os, sys, tempfile, threading, time
sys.path.insert(0, sys.argv[1])
from bench_results_table import FileS3, make_job, services_for
from batchdrop.flow.results_table import write_results_csv

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as workdir:
    s3 = FileS3(root)
    job, shards, _ = make_job(s3, 1)
    write_results_csv(job, shards, services_for(s3, workdir))
    job, shards, _ = make_job(s3, int(sys.argv[2]))
    before, peak, done = rss(), [0], threading.Event()
    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)
    sampler = threading.Thread(target=sample)
    sampler.start()
    write_results_csv(job, shards, services_for(s3, workdir))
    done.set()
    sampler.join()
    print((peak[0] - before) / 1e6)
"""


def rss_growth(lines: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, os.path.dirname(os.path.abspath(__file__)), str(lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000", help="job sizes in lines, comma-separated")
    args = parser.parse_args()
    print(
        f"{'results.csv':<14}{'lines':>9}{'output MB':>11}{'CSV MB':>8}{'seconds':>9}{'MB/s':>8}"
        f"{'raw pass s':>12}{'ratio':>7}{'RSS +MB':>9}"
    )
    for lines in (int(size) for size in args.sizes.split(",")):
        table, raw, output_bytes, csv_bytes = one_run(lines)
        print(
            f"{'':<14}{lines:>9,}{output_bytes / 1e6:>11.1f}{csv_bytes / 1e6:>8.1f}{table:>9.2f}"
            f"{output_bytes / 1e6 / table:>8.1f}{raw:>12.2f}{raw / table:>6.2f}x{rss_growth(lines):>9.1f}"
        )
    print()
    print("MB/s: output bytes read per second of the results.csv pass; raw pass: the same output downloaded")
    print("and a CSV-sized object uploaded through the same in-process moto S3 in the same run (ratio = raw / pass).")
    print("RSS +MB: a separate process's resident memory during the pass (sampled) less just before it; its")
    print("S3 objects on local files, as moto would hold them in the same process.")


if __name__ == "__main__":
    main()
