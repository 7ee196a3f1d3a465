"""`batchdrop jobs`: the jobs in the table, followed, cancelled, or their failed lines retried.

    batchdrop jobs list   [--limit N] [--days D] [--output table|json]     newest first
    batchdrop jobs show   JOB [--output table|json]
    batchdrop jobs watch  JOB [--timeout S]                               live, until it ends
    batchdrop jobs cancel JOB
    batchdrop jobs retry  JOB [--codes CODE,...] [--all-failed]

JOB is a job id (job-…), the input's s3:// URI, or its name under the input prefix. The stack is named as
everywhere (`--stack-name`, `--local`, `--table`; see batchdrop_tools/target.py). Cancelling marks the
job; the next poll cancels its running batches, shards not yet submitted never are, and the job ends
`cancelled` with every result gathered so far. Retrying sends a finished job's failed lines again as a new
round (by default those another try can help; `--all-failed` adds quota and API-key failures, after the
account is fixed); its files, report.json and `Batch Job Finished` are written again at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from batchdrop.flow import progress, redrive, watch
from batchdrop.models import Job
from batchdrop_tools import follow, submit, target

EXAMPLES = """examples:
  batchdrop jobs list --local                                   newest first: status, lines, batches, age
  batchdrop jobs list --output json --stack-name batchdrop-prod | jq '.[0].job_id'
  batchdrop jobs show requests --stack-name batchdrop-prod      a job by its name, s3:// URI or id
  batchdrop jobs watch s3://my-bucket/inbox/requests.jsonl --stack-name batchdrop-prod
  batchdrop jobs cancel requests --local                        the next poll cancels its batches
  batchdrop jobs retry requests --local                         failed lines another try can help go again
  batchdrop jobs retry job-0123456789abcdef0123456789abcdef --all-failed --local   (after a quota top-up)
exit codes: 0 done (watch: the job succeeded), 1 no such job, refused, or (watch) it did not succeed, 2 usage or
connection errors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("action", choices=("list", "show", "watch", "cancel", "retry"))
    parser.add_argument("job", nargs="?", help="show/watch/cancel/retry: a job id, the input's s3:// URI, or its name")
    parser.add_argument("--limit", type=_at_least_one, default=50, help="list: most jobs to list (newest first)")
    parser.add_argument("--output", choices=("table", "json"), default="table", help="list, show: readable, or JSON")
    parser.add_argument("--days", type=_at_least_one, default=31, help="list: how many days back (default 31)")
    parser.add_argument(
        "--codes",
        help="retry: the failure codes to send again, comma-separated (default: those another try can help)",
    )
    parser.add_argument(
        "--all-failed",
        action="store_true",
        help="retry: also the lines that failed for the account (insufficient_quota, authentication_error)",
    )
    submit.add_wait_arguments(parser)
    target.add_arguments(parser)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{max(seconds, 0)} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def run(args: argparse.Namespace) -> int:
    if args.action == "list" and args.job:
        print(
            f"batchdrop jobs list: lists every job and takes no name (got {args.job!r}): "
            f"`batchdrop jobs show {args.job}` shows one",
            file=sys.stderr,
        )
        return 2
    if args.action != "list" and not args.job:
        print(
            f"batchdrop jobs {args.action}: name the job (its id, its input's s3:// URI, or its name)", file=sys.stderr
        )
        return 2
    try:
        where = target.resolve(args)
        store = follow.store_of(where)
        if args.action == "list":
            return _list(store, args)
        job = follow.find_job(where, store, args.job)
    except target.TargetError as error:
        print(f"batchdrop jobs: {error}", file=sys.stderr)
        return 1 if isinstance(error, follow.JobNotFound) else 2
    if args.action == "show":
        return _show(store, job, args, where)
    if args.action == "watch":
        try:
            ended = follow.follow(where, store, job, interval=args.interval, timeout=args.timeout)
        except follow.WaitTimedOut as error:
            print(f"batchdrop jobs watch: {error}", file=sys.stderr)
            return 2
        for line in follow.the_end(ended, where):
            print(line)
        return follow.exit_code(ended)
    if args.action == "retry":
        codes = [code.strip() for code in (args.codes or "").split(",") if code.strip()]
        try:
            retried, lines = redrive.request_retry(
                store, job.job_id, now=int(time.time()), codes=codes, all_failed=args.all_failed, s3=where.client("s3")
            )
        except redrive.RetryRefused as error:
            print(f"batchdrop jobs retry: {error}", file=sys.stderr)
            return 1
        print(
            f"retry requested for {job.job_id}: {lines} failed lines ({', '.join(retried.retry_codes or [])}) go "
            "again as a new round; the job's files and report.json are rewritten at its end"
        )
        return 0
    cancelled = store.request_cancel(job.job_id)
    if cancelled is None:
        print(f"batchdrop jobs: job {job.job_id} has ended: nothing to cancel", file=sys.stderr)
        return 1
    print(f"cancellation requested for {job.job_id}; the next poll cancels its batches")
    return 0


def _list(store: Any, args: argparse.Namespace) -> int:
    jobs = list(store.recent_jobs(limit=args.limit, days=args.days))
    now = int(time.time())
    # the running jobs' batches, read together (an ended job has its counts on its record)
    seen = store.get_live_batches_of([job for job in jobs if job.finished_at is None])
    if args.output == "json":  # each record, with its progress as `jobs show` gives it (`status` there is live)
        documents = [
            job.model_dump(mode="json") | {"progress": progress.view(job, now, seen.get(job.job_id, {})).model_dump()}
            for job in jobs
        ]
        print(json.dumps(documents, indent=2, ensure_ascii=False))
        return 0
    rows = [("JOB ID", "STATUS", "LINES", "BATCHES DONE", "AGE", "INPUT")]
    for job in jobs:
        look = follow.glance(job, now, seen.get(job.job_id, {}))
        batches = f"{len(job.collected_shards or ())}/{job.shard_count}" if job.shard_count else "-"
        rows.append(
            (
                job.job_id,
                look.status,
                look.cell(),
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


def _show(store: Any, job: Job, args: argparse.Namespace, where: Any) -> int:
    shards = store.get_shards(job.job_id)
    now = int(time.time())
    batches = follow.live_batches(store, job)
    if args.output == "table":
        for line in follow.describe(job, shards, now, batches) + follow.problems_of(job, where):
            print(line)
        return 0
    document: dict[str, Any] = job.model_dump(mode="json")
    document["progress"] = progress.view(job, now, batches).model_dump()
    document["shards"] = [shard.model_dump(mode="json") for shard in shards]
    document["warnings"] = [
        f"shard {shard.index}: {warning}" for shard in shards for warning in watch.warnings_of(shard, now)
    ]
    print(json.dumps(document, indent=2, ensure_ascii=False))
    return 0
