"""Upload a JSONL file of requests under the stack's input prefix (multipart for big files, as `aws s3 cp`
does) and print its job id, known before the pipeline has seen the file: it is derived from the object's
identity. With --wait, follow the job to its end and exit by its outcome.

examples:
  batchdrop submit requests.jsonl --wait
  batchdrop submit requests.jsonl --stack-name batchdrop-prod --name 2026-12/requests.jsonl
  batchdrop status requests            (by name, S3 URI or job id)

exit codes (with --wait): 0 succeeded; 1 partial, failed, rejected or cancelled; 2 the command could not do
its work (a usage, file or connection error)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from batchdrop.integrations import s3io
from batchdrop.models import INPUT_SUFFIXES
from batchdrop_tools import follow, target

PICKUP_TIMEOUT_SECONDS = 300.0
"""How long --wait waits for the pipeline to record a job for the uploaded file."""
DEFAULT_WAIT_SECONDS = 3 * 86400.0
"""--wait's bound: the stack's default job deadline (JobDeadlineHours, 72)."""


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the JSONL file of requests (.jsonl or .jsonl.gz)")
    parser.add_argument(
        "--name",
        help="its key under the stack's input prefix (default: the file's name); folders are kept",
    )
    parser.add_argument("--wait", action="store_true", help="follow the job to its end; exit by its outcome")
    add_wait_arguments(parser)
    target.add_arguments(parser)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job", help="the job: its id (job-…), its input's s3:// URI, or its name under the input prefix"
    )
    parser.add_argument("--output", choices=("table", "json"), default="table", help="readable, or the record as JSON")
    target.add_arguments(parser)


def add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_WAIT_SECONDS, help="seconds to follow the job at most (default 3 days)"
    )
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between looks at the job (default 2)")


def run_submit(args: argparse.Namespace) -> int:
    path = args.file
    if not os.path.isfile(path):
        print(f"batchdrop submit: no file {path}: name a JSONL file of requests", file=sys.stderr)
        return 2
    if args.name is not None:
        parts = args.name.split("/")
        if args.name.startswith("/") or any(part in ("", ".", "..") for part in parts):
            print(
                f"batchdrop submit: --name {args.name!r} is not a key: give folders and a name, as in "
                "2026-12/requests.jsonl (no leading /, no empty, . or .. parts)",
                file=sys.stderr,
            )
            return 2
    where = target.resolve(args)
    bucket = where.need_bucket()
    store = follow.store_of(where) if args.wait else None
    key = follow.input_key(where, args.name or os.path.basename(path))
    if not key.lower().endswith(INPUT_SUFFIXES):
        name = key.rsplit("/", 1)[-1]
        print(
            f"batchdrop submit: {name} would not be processed: the pipeline takes names ending in .jsonl or "
            f".jsonl.gz (any case); rename the file, or give it one with --name {name.rsplit('.', 1)[0]}.jsonl",
            file=sys.stderr,
        )
        return 2
    s3 = where.client("s3")
    _upload(s3, path, bucket, key)
    ref = s3io.head(s3, bucket, key)
    if ref is None:
        print(f"batchdrop submit: s3://{bucket}/{key} is not there after its upload: try again", file=sys.stderr)
        return 2
    print(f"submitted s3://{bucket}/{key} as {ref.job_id}", flush=True)
    if store is None:
        print(f"follow it with: batchdrop jobs watch {ref.job_id}{_target_flags(args)}", file=sys.stderr)
        return 0
    job = follow.wait_for_job(
        store, ref.job_id, timeout=PICKUP_TIMEOUT_SECONDS, interval=args.interval, what=f"s3://{bucket}/{key}"
    )
    job = follow.follow(where, store, job, interval=args.interval, timeout=args.timeout)
    for line in follow.the_end(job, where):
        print(line)
    return follow.exit_code(job)


def run_status(args: argparse.Namespace) -> int:
    where = target.resolve(args)
    store = follow.store_of(where)
    try:
        job = follow.find_job(where, store, args.job)
    except follow.JobNotFound as error:  # found nothing, as `batchdrop jobs show` says too
        print(f"batchdrop status: {error}", file=sys.stderr)
        return 1
    batches = follow.live_batches(store, job)
    now = int(time.time())
    if args.output == "json":
        import json

        from batchdrop.flow import progress

        document = job.model_dump(mode="json") | {"progress": progress.view(job, now, batches).model_dump()}
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    for line in follow.describe(job, store.get_shards(job.job_id), now, batches) + follow.problems_of(job, where):
        print(line)
    return 0


def _target_flags(args: argparse.Namespace) -> str:
    if args.stack_name:
        return f" --stack-name {args.stack_name}"
    return " --local" if args.local else ""


def _upload(s3: Any, path: str, bucket: str, key: str) -> None:
    size = os.path.getsize(path)
    console = Console(stderr=True)
    if not console.is_terminal or size < 8 * 1024 * 1024:
        s3io.upload_file(s3, path, bucket, key)
        return
    lock = threading.Lock()
    columns = (TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("", total=size)

        def sent(count: int) -> None:
            with lock:
                bar.advance(task, count)

        s3.upload_file(path, bucket, key, Callback=sent, ExtraArgs={"ContentType": "application/jsonl"})
