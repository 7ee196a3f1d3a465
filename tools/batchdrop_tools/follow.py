"""A job as a person follows it: found by job id, S3 URI or name; shown once (`batchdrop status`,
`batchdrop jobs show`) or live until it ends (`batchdrop jobs watch`, `batchdrop submit --wait`), with a
progress bar on a terminal and a line per change elsewhere; and at the end its outcome, counts, usage,
cost and where the files are.

Exit codes of a followed job: 0 succeeded; 1 partial, failed, rejected or cancelled; 2 the command could not
do its work (arguments, connection, a job that never appeared, a wait that ran out). A job looked up by
`batchdrop status` or `batchdrop jobs show|cancel|retry` that is not there: 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from batchdrop.flow import progress, watch
from batchdrop.integrations import s3io
from batchdrop.integrations.store import JobStore
from batchdrop.models import BatchProgress, Job, JobProgress, JobStatus, ObjectRef, Outcome, RequestCounts, Shard
from batchdrop_tools.target import Target, TargetError

EXIT_BY_OUTCOME = {Outcome.SUCCEEDED: 0}
"""Every other outcome exits 1."""
MAX_PROBLEMS_SHOWN = 20
READ_FAILURES_TOLERATED = 5
"""Reads of a followed job that may fail in a row (throttling, a dropped connection) before the wait
gives up: at the default interval of 2 s, about 10 s of trouble."""
_PASSING_CODES = frozenset({"ProvisionedThroughputExceededException", "RequestLimitExceeded", "InternalServerError"})


class JobNotFound(TargetError):
    """No job for what was named (yet)."""


class WaitTimedOut(TargetError):
    """The job did not end (or appear) within the wait's bound."""


def exit_code(job: Job) -> int:
    if job.status == JobStatus.REJECTED:
        return 1
    return EXIT_BY_OUTCOME.get(job.outcome or Outcome.FAILED, 1)


def store_of(target: Target) -> JobStore:
    return JobStore(target.client("dynamodb"), target.need_table(), clock=time.time)


def input_key(target: Target, name: str) -> str:
    """The key a name stands for: as given if under the input prefix, else under it; `.jsonl` added if the
    name has no suffix at all (`sample` is `inbox/sample.jsonl`; `x.json` stays `inbox/x.json`)."""
    key = name if name.startswith(target.input_prefix) else target.input_prefix + name
    return key if "." in key.rsplit("/", 1)[-1] else key + ".jsonl"


def find_job(target: Target, store: JobStore, reference: str) -> Job:
    """The job named by its id (`job-…`), by its input's S3 URI, or by its input's name or key."""
    if reference.startswith("job-"):
        job = store.get_job(reference)
        if job is None:
            raise JobNotFound(
                f"no job {reference} in {target.need_table()}: check the id (`batchdrop jobs list` shows them)"
            )
        return job
    if reference.startswith("s3://"):
        bucket, _, key = reference.removeprefix("s3://").partition("/")
    else:
        bucket, key = target.need_bucket(), input_key(target, reference)
    ref = s3io.head(target.client("s3"), bucket, key)
    if ref is None and not reference.startswith("s3://") and "." not in reference.rsplit("/", 1)[-1]:
        ref = _other_spelling(target, bucket, key.removesuffix(".jsonl"))
    if ref is None:
        raise JobNotFound(f"no object s3://{bucket}/{key}: check the name (inputs go under {target.input_prefix})")
    job = store.get_job(ref.job_id)
    if job is None and not key.startswith(target.input_prefix):
        raise JobNotFound(
            f"s3://{bucket}/{key} has no job, and only files under {target.input_prefix} run when dropped "
            f"(the prefix is case-sensitive): copy it to s3://{bucket}/{target.input_prefix}"
            f"{key.rsplit('/', 1)[-1]}, or send a `Submit Batch Job` event naming it"
        )
    if job is None:
        raise JobNotFound(
            f"s3://{bucket}/{key} has no job (yet): a file just dropped takes seconds to be picked up; "
            "if it stays so, `batchdrop dlq list` shows events that failed"
        )
    return job


def _other_spelling(target: Target, bucket: str, stem: str) -> ObjectRef | None:
    """The input a bare name stands for when it is not `<name>.jsonl`: `<name>.JSONL`, `<name>.jsonl.gz`
    (the pipeline takes the suffix in any case), if exactly one such object is there."""
    s3 = target.client("s3")
    found = s3.list_objects_v2(Bucket=bucket, Prefix=stem + ".", MaxKeys=20).get("Contents", [])
    inputs = [item["Key"] for item in found if item["Key"][len(stem) :].lower() in (".jsonl", ".jsonl.gz")]
    return s3io.head(s3, bucket, inputs[0]) if len(inputs) == 1 else None


def wait_for_job(store: JobStore, job_id: str, *, timeout: float, interval: float, what: str) -> Job:
    """The job's record once the pipeline has made it (a file just uploaded takes a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)
        if job is not None:
            return job
        if time.monotonic() >= deadline:
            raise WaitTimedOut(
                f"no job for {what} after {timeout:g} s: is the stack's ingest running? "
                "`batchdrop dlq list` shows events that failed"
            )
        time.sleep(interval)


# the view


def _when(epoch: int | None, now: int) -> str:
    if epoch is None:
        return "-"
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({duration(now - epoch)} ago)"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _size(count: int | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


@dataclass(frozen=True)
class Glance:
    """The few figures a person follows: lines done of the current round's, batches, time left; at the
    end, how the lines ended."""

    status: str
    done: int
    of: int
    batches_ended: int
    batches: int
    eta_seconds: int | None
    round: int
    succeeded: int | None = None
    """At the end: the lines that succeeded (the rest failed, or never ran: a cancel, an expiry)."""
    next_round_in: int | None = None
    """Waiting for the next round of the failed lines: the seconds until it may start."""

    def line(self) -> str:
        if self.status == "rejected":
            return "rejected: the file has problems (they follow, or `batchdrop jobs show` lists them)"
        if self.next_round_in is not None:
            when = f"in {duration(self.next_round_in)}" if self.next_round_in > 0 else "now"
            return f"{self.status} · round {self.round + 1} of the failed lines starts {when}"
        if self.succeeded is not None:
            failed = self.of - self.succeeded
            parts = [self.status, f"{self.succeeded:,} succeeded, {failed:,} failed of {self.of:,} lines"]
        else:
            parts = [self.status, f"{self.done:,} of {self.of:,} lines done"]
        parts.append(f"{self.batches_ended} of {self.batches} batches ended")
        if self.round:
            parts.insert(1, f"round {self.round}")
        if self.status in progress.LIVE_STATUSES and self.eta_seconds is not None:
            parts.append(f"about {duration(self.eta_seconds)} left" if self.eta_seconds else "ending")
        return " · ".join(parts)

    def cell(self) -> str:
        """The LINES column of `jobs list`: done of the round's while running, succeeded at the end."""
        if self.status == "rejected":
            return "-"
        if self.succeeded is not None:
            return f"{self.succeeded:,}/{self.of:,} ok"
        return f"{self.done:,}/{self.of:,} done" if self.of else "-"


def glance(job: Job, now: int, batches: Mapping[str, BatchProgress]) -> Glance:
    """The job at a glance, from its record and its batches as the poller last saw them."""
    seen = progress.view(job, now, batches)
    current = [batch for batch in batches.values() if batch.round == job.round]
    done = sum(batch.completed + batch.failed for batch in current)
    batches_ended, batch_count = seen.batches_ended, seen.batches
    if job.round == 0:
        of = job.input.lines or sum(batch.total for batch in current)
    else:
        of = job.round_lines if job.round_lines is not None else sum(batch.total for batch in current)
        if job.round_first_shard is not None and job.status != JobStatus.FINISHED:
            batch_count = (job.shard_count or 0) - job.round_first_shard
            batches_ended = sum(1 for batch in current if batch.status in progress.ENDED)
    succeeded = None
    if job.counts is not None and job.status == JobStatus.FINISHED:
        of, done, succeeded = job.counts.total, job.counts.total, job.counts.succeeded
    waiting = job.redrive_due_at is not None and job.status != JobStatus.FINISHED
    return Glance(
        status=seen.status,
        done=min(done, of) if of else done,
        of=of,
        batches_ended=batches_ended,
        batches=batch_count,
        eta_seconds=seen.eta_seconds,
        round=job.round,
        succeeded=succeeded,
        next_round_in=max(0, (job.redrive_due_at or 0) - now) if waiting else None,
    )


def live_batches(store: JobStore, job: Job) -> dict[str, BatchProgress]:
    """What glance and describe need beside the record (nothing more for a job that has ended)."""
    return {} if job.status == JobStatus.REJECTED else store.get_live_batches(job)


def describe(job: Job, shards: list[Shard], now: int, batches: Mapping[str, BatchProgress]) -> list[str]:
    """`batchdrop jobs show` / `batchdrop status`: the job as a person reads it."""
    seen: JobProgress = progress.view(job, now, batches)
    look = glance(job, now, batches)
    input_lines = f"{job.input.lines:,}" if job.input.lines is not None else "?"
    lines = [
        f"{job.job_id}   s3://{job.input.bucket}/{job.input.key}",
        f"  status     {look.line()}",
        f"  input      {input_lines} lines, {_size(job.input.bytes)}",
        f"  received   {_when(job.received_at, now)}",
    ]
    if job.submitted_at:
        lines.append(f"  submitted  {_when(job.submitted_at, now)}")
    if job.finished_at:
        lines.append(f"  finished   {_when(job.finished_at, now)} after {duration(job.finished_at - job.received_at)}")
    if job.counts is not None:
        so_far = "" if job.status == JobStatus.FINISHED else " as at its last end (a retry is running)"
        lines.append(
            f"  lines      {job.counts.succeeded:,} succeeded, {job.counts.failed:,} failed of {job.counts.total:,}"
            + so_far
        )
    counts = seen.request_counts
    if shards:  # each batch's own latest counts, where the poller's looks may lag a batch's last ones
        reported = [shard.request_counts for shard in shards if shard.request_counts is not None]
        counts = RequestCounts(
            total=sum(c.total for c in reported),
            completed=sum(c.completed for c in reported),
            failed=sum(c.failed for c in reported),
        )
    if counts.total:
        api = f"{counts.completed:,} completed, {counts.failed:,} failed of {counts.total:,}"
        lines.append(f"  requests   {api} (the API's counts, every round)")
    if job.cancel_requested_at:
        lines.append(f"  cancel     requested {_when(job.cancel_requested_at, now)}")
    if job.errors_by_code:
        top = ", ".join(
            f"{code} {n:,}" for code, n in sorted(job.errors_by_code.items(), key=lambda item: -item[1])[:5]
        )
        lines.append(f"  problems   {job.validation_error_count or 0:,}: {top}")
    lines.append(f"  report     s3://{job.input.bucket}/{job.output_prefix}report.json")
    if shards:
        lines.append("  batches")
        width = max(len(shard.batch_id or "-") for shard in shards)
        for shard in shards[:50]:
            done = (
                f"{(shard.request_counts.completed + shard.request_counts.failed):,}/{shard.request_counts.total:,}"
                if shard.request_counts
                else "-"
            )
            label = f"round {shard.round} " if shard.round else ""
            status = shard.batch_status or shard.state.value
            failure = f"  {shard.failure_code}" if shard.failure_code else ""
            batch = (shard.batch_id or "-").ljust(width)
            lines.append(
                f"    {shard.index:>5}  {label}{batch}  {status:<11} {done:>13}  {shard.lines:,} lines{failure}"
            )
        if len(shards) > 50:
            lines.append(f"    ... and {len(shards) - 50} more (--output json lists every one)")
    warnings = [f"shard {shard.index}: {warning}" for shard in shards for warning in watch.warnings_of(shard, now)]
    if warnings:
        lines.append("  warnings")
        lines.extend(f"    {warning}" for warning in warnings)
    return lines


def problems_of(job: Job, target: Target) -> list[str]:
    """A rejected job's problems as report.json names them, each with its fix (nothing for other jobs)."""
    if job.status != JobStatus.REJECTED:
        return []
    return ["  " + line for line in the_end(job, target)]


def the_end(job: Job, target: Target) -> list[str]:
    """What a person wants to know when the job ends, from report.json: outcome, counts, usage, files."""
    report = _report(job, target)
    if report is None:
        where = f"s3://{job.input.bucket}/{job.output_prefix}report.json"
        return [f"{job.outcome or job.status}: report.json not readable at {where}"]
    counts = report.get("counts", {})
    took = ""
    if job.finished_at:
        took = f" in {duration(job.finished_at - job.received_at)}"
    succeeded, total, failed = counts.get("succeeded", 0), counts.get("total", 0), counts.get("failed", 0)
    problems = report.get("validation_errors") or []
    if report["outcome"] == "rejected":
        total = report.get("validation_error_count") or len(problems)
        lines = [f"rejected: {total:,} problem{'s' if total != 1 else ''} in the file; nothing was sent to the API"]
        if not problems:
            lines.append("  fix the file and upload it again (`batchdrop validate FILE` checks it offline)")
    else:
        lines = [f"{report['outcome']}: {succeeded:,} of {total:,} lines succeeded, {failed:,} failed{took}"]
    if problems:
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            where = f"line {problem['line']}" if problem.get("line") else "file"
            fix = f" → {problem['fix']}" if problem.get("fix") else ""
            lines.append(f"  {where}: {problem['message']} [{problem['code']}]{fix}")
        if total > min(len(problems), MAX_PROBLEMS_SHOWN):
            more = total - min(len(problems), MAX_PROBLEMS_SHOWN)
            lines.append(f"  ... and {more:,} more (report.json lists up to {len(problems)})")
        lines.append("fix them and upload the file again; `batchdrop validate FILE` checks it offline first")
    if report.get("errors_by_code") and not problems:
        lines.append("errors: " + ", ".join(f"{code} {n:,}" for code, n in report["errors_by_code"].items()))
    return lines + usage_and_files(report)


def usage_and_files(report: dict[str, Any]) -> list[str]:
    """The end's tokens, cost and files from report.json, as `submit --wait`, `jobs watch` and `demo` say them."""
    lines = []
    usage = (report.get("usage") or {}).get("total")
    if usage and usage.get("total_tokens"):
        parts = f"{usage.get('prompt_tokens', 0):,} prompt, {usage.get('completion_tokens', 0):,} completion"
        lines.append(f"tokens:      {usage.get('total_tokens', 0):,} ({parts})")
    cost = report.get("cost")
    if cost and cost.get("total") is not None:
        as_of = str(cost.get("prices_as_of", "?")).split(" (", 1)[0]
        lines.append(f"cost:        {cost['total']:.6f} {cost.get('currency', 'USD')} (list prices as of {as_of})")
    elif cost:
        lines.append("cost:        not known (no model of this file is priced)")
    for name, uri in (report.get("outputs") or {}).items():
        lines.append(f"{name + ':':<12} {uri}")
    return lines


def _report(job: Job, target: Target) -> dict[str, Any] | None:
    try:
        body = (
            target.client("s3")
            .get_object(Bucket=job.input.bucket, Key=f"{job.output_prefix}report.json")["Body"]
            .read()
        )
        document: dict[str, Any] = json.loads(body)
        return document
    except Exception:  # the job record still says how it ended
        return None


def follow(
    target: Target,
    store: JobStore,
    job: Job,
    *,
    interval: float,
    timeout: float,
    console: Console | None = None,
) -> Job:
    """Shows the job's progress until it ends (a bar on a terminal, a line per change elsewhere); the job
    as it ended. WaitTimedOut past `timeout` seconds."""
    console = console or Console(stderr=True)
    reader = _Reader(store, deadline=time.monotonic() + timeout, interval=interval, timeout=timeout)
    batches = live_batches(store, job)
    if console.is_terminal:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lines"),
            TextColumn("{task.fields[batches]}"),
            TextColumn("{task.fields[left]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("", total=None, batches="", left="")
            while True:
                look = glance(job, int(time.time()), batches)
                bar.update(
                    task,
                    description=f"{look.status}{f' (round {look.round})' if look.round else ''}",
                    total=look.of or None,
                    completed=look.done,
                    batches=f"{look.batches_ended}/{look.batches} batches",
                    left=f"~{duration(look.eta_seconds)} left" if look.eta_seconds else "",
                )
                if _ended(job):
                    return job
                job, batches = reader.next(job, batches)
    last: Glance | None = None
    while True:
        look = glance(job, int(time.time()), batches)
        # a line when something moved: a time left that only counts down is not news in a log
        moved = dataclasses.replace(look, eta_seconds=None, next_round_in=None if look.next_round_in is None else 0)
        if moved != last:
            print(look.line(), file=sys.stderr, flush=True)
            last = moved
        if _ended(job):
            return job
        job, batches = reader.next(job, batches)


def _ended(job: Job) -> bool:
    """Ended and announced: its files and report.json are written."""
    if job.notify_abandoned_at is not None:
        return True
    return job.status in (JobStatus.FINISHED, JobStatus.REJECTED) and job.notified_at is not None


class _Reader:
    """The job's next look, every `interval` seconds until the deadline. A read that fails for a reason
    that passes (throttling, a dropped connection, a 5xx) keeps the last look and is tried again at the
    next interval, up to READ_FAILURES_TOLERATED in a row; any other error ends the wait at once."""

    def __init__(self, store: JobStore, *, deadline: float, interval: float, timeout: float) -> None:
        self._store = store
        self._deadline = deadline
        self._interval = interval
        self._timeout = timeout
        self._failures = 0

    def next(self, job: Job, batches: dict[str, BatchProgress]) -> tuple[Job, dict[str, BatchProgress]]:
        if time.monotonic() >= self._deadline:
            raise WaitTimedOut(
                f"job {job.job_id} had not ended after {self._timeout:g} s (--timeout); it goes on: "
                f"`batchdrop jobs watch {job.job_id}` follows it again"
            )
        time.sleep(self._interval)
        try:
            fresh = self._store.get_job(job.job_id) or job
            looks = live_batches(self._store, fresh)
        except (BotoCoreError, ClientError) as error:
            if not _passes(error):
                raise
            self._failures += 1
            if self._failures > READ_FAILURES_TOLERATED:
                raise
            print(f"(could not read the job, trying again: {_short(error)})", file=sys.stderr, flush=True)
            return job, batches
        self._failures = 0
        return fresh, looks


def _passes(error: Exception) -> bool:
    """Throttling, a server error or a connection that failed: worth another read."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return status >= 500 or "Throttl" in code or code in _PASSING_CODES
    return isinstance(error, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError, ConnectTimeoutError))


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:200]
