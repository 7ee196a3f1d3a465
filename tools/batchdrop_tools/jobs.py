"""`batchdrop jobs`: the operator's view of jobs in the table, cancellation, and retry of failed lines.

    batchdrop jobs list   [--table T] [--limit N] [--days D]   newest first
    batchdrop jobs show   JOB_ID [--table T]
    batchdrop jobs cancel JOB_ID [--table T]
    batchdrop jobs retry  JOB_ID [--table T] [--codes CODE,...] [--all-failed]

The table defaults to $TABLE_NAME (the stack output `TableName`); `--endpoint-url` points at another
endpoint (e.g. `batchdrop local`'s). Cancelling marks the job; the next poll cancels its running batches,
shards not yet submitted never are, and the job ends `cancelled` with every result gathered so far.
Retrying sends a finished job's failed lines again as a new round (by default those another try can help;
`--all-failed` adds quota and API-key failures, after the account is fixed); its files, report.json and
`Batch Job Finished` are written again at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import boto3

from batchdrop.flow import redrive, watch
from batchdrop.integrations.store import JobStore
from batchdrop_tools.stack_outputs import StackNotFound, output, stack_outputs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "show", "cancel", "retry"))
    parser.add_argument("job_id", nargs="?")
    parser.add_argument("--table", default=os.environ.get("TABLE_NAME"), help="the jobs table (default $TABLE_NAME)")
    parser.add_argument("--stack-name", help="read the jobs table from this stack's outputs (instead of --table)")
    parser.add_argument("--endpoint-url", help="an AWS endpoint other than the default (e.g. batchdrop local)")
    parser.add_argument("--limit", type=int, default=50, help="most jobs to list (newest first)")
    parser.add_argument("--output", choices=("table", "json"), default="table", help="list: a table, or JSON")
    parser.add_argument("--days", type=int, default=31, help="how many days back to list (default 31)")
    parser.add_argument(
        "--codes",
        help="retry: the failure codes to send again, comma-separated (default: those another try can help)",
    )
    parser.add_argument(
        "--all-failed",
        action="store_true",
        help="retry: also the lines that failed for the account (insufficient_quota, authentication_error)",
    )


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{max(seconds, 0)} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def run(args: argparse.Namespace) -> int:
    if args.stack_name:
        try:
            outputs = stack_outputs(args.stack_name, endpoint_url=args.endpoint_url)
            args.table = output(outputs, "TableName", args.stack_name)
        except StackNotFound as error:
            print(f"batchdrop jobs: {error}", file=sys.stderr)
            return 2
    if not args.table:
        print(
            "batchdrop jobs: name the stack with --stack-name, or the table with --table or $TABLE_NAME",
            file=sys.stderr,
        )
        return 2
    if args.action in ("show", "cancel", "retry") and not args.job_id:
        print(f"batchdrop jobs {args.action}: a JOB_ID is needed", file=sys.stderr)
        return 2
    client = boto3.client("dynamodb", endpoint_url=args.endpoint_url)
    store = JobStore(client, args.table, clock=time.time)
    if args.action == "list":
        jobs = list(store.recent_jobs(limit=args.limit, days=args.days))
        if args.output == "json":
            print(json.dumps([job.model_dump(mode="json") for job in jobs], indent=2, ensure_ascii=False))
            return 0
        now = int(time.time())
        rows = [("JOB ID", "STATUS", "OUTCOME", "LINES", "BATCHES DONE", "AGE", "INPUT")]
        for job in jobs:
            batches = f"{len(job.collected_shards or ())}/{job.shard_count}" if job.shard_count else "-"
            rows.append(
                (
                    job.job_id,
                    job.status.value,
                    job.outcome.value if job.outcome else "-",
                    f"{job.input.lines:,}" if job.input.lines is not None else "-",
                    batches,
                    _age(now - job.received_at),
                    f"s3://{job.input.bucket}/{job.input.key}",
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
        if not jobs:
            print(f"(no job in the last {args.days} days)")
        return 0
    if args.action == "show":
        found = store.get_job(args.job_id)
        if found is None:
            print(f"batchdrop jobs: no job {args.job_id}", file=sys.stderr)
            return 1
        document: dict[str, Any] = found.model_dump(mode="json")
        shards = store.get_shards(args.job_id)
        document["shards"] = [shard.model_dump(mode="json") for shard in shards]
        now = int(time.time())
        document["warnings"] = [
            f"shard {shard.index}: {warning}" for shard in shards for warning in watch.warnings_of(shard, now)
        ]
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    if args.action == "retry":
        codes = [code.strip() for code in (args.codes or "").split(",") if code.strip()]
        try:
            s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
            job, lines = redrive.request_retry(
                store, args.job_id, now=int(time.time()), codes=codes, all_failed=args.all_failed, s3=s3
            )
        except redrive.RetryRefused as error:
            print(f"batchdrop jobs retry: {error}", file=sys.stderr)
            return 1
        print(
            f"retry requested for {args.job_id}: {lines} failed lines ({', '.join(job.retry_codes or [])}) go "
            "again as a new round; the job's files and report.json are rewritten at its end"
        )
        return 0
    cancelled = store.request_cancel(args.job_id)
    if cancelled is None:
        print(f"batchdrop jobs: job {args.job_id} is unknown or has ended", file=sys.stderr)
        return 1
    print(f"cancellation requested for {args.job_id}; the next poll cancels its batches")
    return 0
