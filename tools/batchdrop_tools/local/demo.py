"""`batchdrop demo [FILE]`: one end-to-end run on the local stack, printing `custom_id: answer` per line."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import boto3

from batchdrop.integrations import s3io
from batchdrop.models import Job
from batchdrop_tools import follow
from batchdrop_tools.local.stack import REGION, LocalStack, LocalStackConfig, announce, quiet_logs
from batchdrop_tools.target import Target, withdraw_local

FAILED_OUTCOMES = ("failed", "rejected")


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _sample() -> tuple[str, bytes]:
    return "demo.jsonl", resources.files("batchdrop_tools").joinpath("samples/demo.jsonl").read_bytes()


def _answer(line: dict[str, Any]) -> str:
    try:
        return str(line["response"]["body"]["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return "(no answer in the response)"


def run_demo(args: Any) -> int:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            print(f"batchdrop demo: no such file: {path}", file=sys.stderr)
            return 2
        name, body = path.name, path.read_bytes()
    else:
        name, body = _sample()
    # Dropped under its own name: a file the pipeline does not take (not .jsonl) gets the pipeline's own
    # rejection, as it would in the bucket.
    api_key, project_id = os.environ.get("ZGPU_API_KEY"), os.environ.get("ZGPU_PROJECT_ID")
    if args.api_url and not api_key:
        print(
            "batchdrop demo: --api-url needs ZGPU_API_KEY (and ZGPU_PROJECT_ID) in the environment",
            file=sys.stderr,
        )
        return 2
    quiet_logs()
    host = "127.0.0.1"
    config = LocalStackConfig(
        host=host,
        aws_port=_free_port(host),
        emulator_port=_free_port(host),
        poll_seconds=0.5,
        api_url=args.api_url,
        api_key=api_key if args.api_url else None,
        project_id=project_id if args.api_url else None,
        log_level="WARNING",
        lines_per_second=getattr(args, "lines_per_second", None),
    )
    with LocalStack(config) as stack:
        s3 = stack.client("s3")
        key = f"inbox/{name}"
        print(f"Dropping {len(body.splitlines())} request(s) at s3://{config.bucket}/{key}", flush=True)
        s3.put_object(Bucket=config.bucket, Key=key, Body=body)
        where = Target(
            session=boto3.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=REGION),
            endpoint_url=stack.endpoint_url,
            where=f"batchdrop local at {stack.endpoint_url}",
            table=stack.table_name,
            bucket=config.bucket,
            local=True,
        )
        job = _follow(where, s3, config.bucket, key, args.timeout)
        if job is None:
            print(f"batchdrop demo: the job had not ended after {args.timeout:.0f} s (--timeout)", file=sys.stderr)
            return 1
        report = json.loads(s3.get_object(Bucket=config.bucket, Key=f"{job.output_prefix}report.json")["Body"].read())
        _print_results(s3, config.bucket, job.output_prefix, report)
        if getattr(args, "keep", False):
            announce(stack, config.bucket)
            try:
                print()
                print("The stack keeps running (--keep); Ctrl-C stops it. batchdrop's commands find it meanwhile:")
                print(f"  batchdrop status {job.job_id}")
                print("  batchdrop jobs list")
                print("  batchdrop submit another.jsonl --wait")
                print(f"  aws --endpoint-url {stack.endpoint_url} s3 ls s3://{config.bucket}/{job.output_prefix}")
                print(f"  (or export AWS_ENDPOINT_URL={stack.endpoint_url} for the AWS CLI)", flush=True)
                _wait_for_interrupt()
            finally:
                withdraw_local()
        else:
            print()
            print("The local stack stops now: these s3:// URIs are gone with it (--keep leaves it running).")
    return 1 if report["outcome"] in FAILED_OUTCOMES else 0


def _follow(where: Target, s3: Any, bucket: str, key: str, timeout: float) -> Job | None:
    """The job of the dropped file, followed with the CLI's progress display until it has ended."""
    ref = s3io.head(s3, bucket, key)
    if ref is None:
        return None
    store = follow.store_of(where)
    try:
        job = follow.wait_for_job(
            store, ref.job_id, timeout=min(timeout, 60), interval=0.25, what=f"s3://{bucket}/{key}"
        )
        return follow.follow(where, store, job, interval=0.5, timeout=timeout)
    except follow.WaitTimedOut:
        return None


def _wait_for_interrupt() -> None:
    """Until Ctrl-C, or a SIGTERM (the same, so that the stack is stopped and withdrawn either way)."""
    import signal

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def _print_results(s3: Any, bucket: str, prefix: str, report: dict[str, Any]) -> None:
    def lines(key: str) -> list[dict[str, Any]]:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return []
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    print()
    for line in lines(f"{prefix}output.jsonl"):
        print(f"{line['custom_id']}: {_answer(line)}")
    for line in lines(f"{prefix}errors.jsonl"):
        error = line.get("error") or {}
        print(f"{line['custom_id']}: ERROR {error.get('code')}: {error.get('message')}")
    for problem in report.get("validation_errors", []):
        where = f"line {problem['line']}" if problem.get("line") else "file"
        fix = f" → {problem['fix']}" if problem.get("fix") else ""
        print(f"{where}: {problem['code']}: {problem['message']}{fix}")
    counts = report["counts"]
    print()
    print(
        f"Outcome: {report['outcome']} ({counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['total']} total)"
    )
    for text in follow.usage_and_files(report):
        print(text)
