"""Figures for one poll run over many running batches: time against the API floor, DynamoDB calls per shard.

    .venv/bin/python bench/bench_poll.py [--batches 1000,10000] [--latency-ms 50] [--shards-per-job 1]
                                         [--concurrency N]

For each size, a fresh stack: DynamoDB is moto in-process (the table exactly as template.yaml defines
it), the API is the in-process emulator, with N jobs whose shards are SUBMITTED and due, each with a
real batch at the emulator (`in_progress`, some lines done since the last poll, so every poll records
new counts). One `poll_once` is timed, under the poll function's own time budget (its Timeout in
template.yaml); every retrieve (GET /v1/batches/{id}) waits `--latency-ms` first (the emulator's slow
fault). The same run at 0 ms latency is printed beside it, as the reference for the poller's own cost.

The API floor is N x latency / the poller's concurrency (POLL_CONCURRENCY in template.yaml): what the
retrieves alone take when every thread is always waiting on one. DynamoDB calls are counted on the
store's client (queries, reads and writes alike). For the largest size the question is whether every
batch was polled within one schedule period (PollRateMinutes in template.yaml): in one run, before the
run's time budget stops it starting new work.

Two things are the bench's own, not the poller's: moto is not safe for concurrent requests, so its
calls take turns through one lock (as in the tests; DynamoDB itself serves them in parallel); and the
emulator's catch-up on every request (it moves every running batch on to the clock's time, O(N) per
request) is turned off during the timed run, since the manual clock stands still then anyway.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from batchdrop.flow.polling import PollSummary, poll_once
from batchdrop.integrations.notifier import Notifier
from batchdrop.integrations.store import _SLOTS_KEY, JobStore, _serialize, _shard_item
from batchdrop.integrations.zerogpu import RetryPolicy, ZeroGPUClient
from batchdrop.models import InputInfo, Job, JobStatus, Shard, ShardState
from batchdrop.services import DEADLINE_MARGIN_SECONDS, Services
from batchdrop.settings import Settings
from batchdrop_tools.emulator import Emulator, EmulatorSettings, Fault, ManualClock
from batchdrop_tools.local.moto_fixes import install as install_moto_fixes
from batchdrop_tools.local.template import derive_local_resources, find_template, load_template

REGION = "us-east-1"
TABLE = "batchdrop-jobs"
BUCKET = "batchdrop-bench"
API_KEY = "zgpu-bench-key"
START = 1_767_225_600.0
LINES_PER_BATCH = 100
LINES_PER_SECOND = 0.01  # a line every 100 s: the batches stay in_progress, their counts move slowly
SINCE_LAST_POLL = 300.0  # seconds the clock moves between the setup's batches and the poll run


@dataclass(frozen=True)
class Stack:
    """What the bench reads from template.yaml: the poller's settings and its schedule."""

    environment: dict[str, str]
    poll_timeout_seconds: int
    schedule_minutes: int

    @property
    def concurrency(self) -> int:
        return int(self.environment["POLL_CONCURRENCY"])


def read_stack() -> Stack:
    template = load_template(find_template())
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    environment = {name: value for name, value in variables.items() if isinstance(value, str)}
    poll = next(
        resource["Properties"]
        for resource in template["Resources"].values()
        if str(resource.get("Properties", {}).get("Handler", "")).startswith("poll_handler")
    )
    return Stack(environment, int(poll["Timeout"]), int(template["Parameters"]["PollRateMinutes"]["Default"]))


@dataclass
class Figures:
    batches: int
    latency_ms: float
    concurrency: int
    seconds: float
    cpu_seconds: float
    dynamodb_calls: collections.Counter[str]
    dynamodb_busy_seconds: float
    api_retrieves: int
    summary: PollSummary

    @property
    def floor(self) -> float:
        return self.batches * self.latency_ms / 1000 / self.concurrency

    @property
    def calls(self) -> int:
        return sum(self.dynamodb_calls.values())


class CountedTurns:
    """Wraps a boto3 client: its calls take turns through one lock (moto is not thread-safe), are counted
    by operation, and the time they hold the lock is added up (botocore's and moto's work in this process,
    which real DynamoDB does elsewhere, in parallel)."""

    def __init__(self, client: Any) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.busy_seconds = 0.0
        self._lock = threading.Lock()
        call = client._make_api_call

        def counted(operation: str, params: Any) -> Any:
            with self._lock:
                started = time.perf_counter()
                try:
                    return call(operation, params)
                finally:
                    self.calls[operation] += 1
                    self.busy_seconds += time.perf_counter() - started

        client._make_api_call = counted


def create_table(dynamodb: Any) -> None:
    table = derive_local_resources(load_template(find_template()), bucket_name=BUCKET).table
    dynamodb.create_table(**(table.create_table_kwargs | {"TableName": TABLE}))


def write_items(dynamodb: Any, items: Iterator[dict[str, Any]]) -> None:
    """BatchWriteItem, 25 at a time (the setup; not counted)."""
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append({"PutRequest": {"Item": item}})
        if len(chunk) == 25:
            dynamodb.batch_write_item(RequestItems={TABLE: chunk})
            chunk = []
    if chunk:
        dynamodb.batch_write_item(RequestItems={TABLE: chunk})


def create_batches(emulator: Emulator, count: int, workdir: Path) -> list[str]:
    """`count` real batches at the emulator, all from one uploaded file of LINES_PER_BATCH lines."""
    upload = workdir / "upload.jsonl"
    upload.write_bytes(
        b"".join(
            json.dumps(
                {"custom_id": f"c-{n}", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}
            ).encode()
            + b"\n"
            for n in range(LINES_PER_BATCH)
        )
    )
    size = upload.stat().st_size
    file_id = emulator.engine.add_upload(upload, "upload.jsonl", size)["id"]
    return [
        emulator.engine.create_batch(
            {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        )["id"]
        for _ in range(count)
    ]


def jobs_and_shards(batch_ids: list[str], shards_per_job: int, now: int) -> Iterator[dict[str, Any]]:
    """The stored items: jobs (SUBMITTING, every shard started) and their shards (SUBMITTED, holding a
    slot, last polled before the batch moved on, due now)."""
    for first in range(0, len(batch_ids), shards_per_job):
        job_id = f"{first // shards_per_job:032x}"
        batches = batch_ids[first : first + shards_per_job]
        job = Job(
            job_id=job_id,
            status=JobStatus.SUBMITTING,
            input=InputInfo(bucket=BUCKET, key=f"inbox/{job_id}.jsonl", lines=LINES_PER_BATCH * len(batches)),
            output_prefix=f"outbox/{job_id}/",
            received_at=now - 900,
            shard_count=len(batches),
            started_shards=set(range(len(batches))),
            submitted_at=now - 600,
        )
        yield _serialize(
            job.model_dump(mode="json", exclude_none=True)
            | {"pk": f"JOB#{job_id}", "sk": "JOB", "listed_day": time.strftime("%Y-%m-%d", time.gmtime(now))}
        )
        for index, batch_id in enumerate(batches):
            shard = Shard(
                job_id=job_id,
                index=index,
                state=ShardState.SUBMITTED,
                work_key=f"work/{job_id}/shards/{index:05d}.jsonl",
                lines=LINES_PER_BATCH,
                bytes=1000,
                first_line=index * LINES_PER_BATCH + 1,
                of=len(batches),
                input_file_id="file-x",
                create_started_at=now - 600,
                first_attempt_at=now - 600,
                batch_id=batch_id,
                batch_status="in_progress",
                holds_slot=True,
                next_poll_at=now - 1,
            )
            yield _shard_item(shard)


def nothing_to_catch_up(*, blocking: bool = True) -> bool:
    """The emulator's processing while the manual clock stands still: nothing to move on."""
    return True


@contextmanager
def stack_of(count: int, shards_per_job: int, latency_ms: float, stack: Stack) -> Iterator[tuple[Services, Any]]:
    """A fresh moto and emulator with `count` due running batches; yields the poller's services and the
    counted DynamoDB client."""
    with mock_aws(), tempfile.TemporaryDirectory() as workdir:
        clock = ManualClock(start=START)
        emulator = Emulator(
            EmulatorSettings(api_key=API_KEY, lines_per_second=LINES_PER_SECOND, storage_dir=Path(workdir) / "emu"),
            clock=clock,
        )
        try:
            batch_ids = create_batches(emulator, count, Path(workdir))
            clock.advance(SINCE_LAST_POLL)
            emulator.process()  # the lines done since the last poll
            emulator.engine.process = nothing_to_catch_up  # type: ignore[method-assign]  # see the docstring
            emulator.faults.add(Fault.slow(latency_ms / 1000, method="GET", path="/v1/batches/*", times=None))

            dynamodb = boto3.client("dynamodb", region_name=REGION)
            sqs = boto3.client("sqs", region_name=REGION)
            create_table(dynamodb)
            now = int(clock.now())
            write_items(dynamodb, jobs_and_shards(batch_ids, shards_per_job, now))
            dynamodb.put_item(TableName=TABLE, Item=_SLOTS_KEY | _serialize({"in_use": count}))
            queues = {name: sqs.create_queue(QueueName=name)["QueueUrl"] for name in ("collect", "ingest")}
            settings = Settings.from_environ(
                stack.environment
                | {
                    "TABLE_NAME": TABLE,
                    "SECRET_ID": "unused",
                    "BUCKET_NAME": BUCKET,
                    "INPUT_PREFIX": "inbox/",
                    "OUTPUT_PREFIX": "outbox/",
                    "WORK_PREFIX": "work/",
                    "COLLECT_QUEUE_URL": queues["collect"],
                    "INGEST_QUEUE_URL": queues["ingest"],
                    "MAX_BATCHES_IN_FLIGHT": str(count),
                }
            )
            counted = CountedTurns(dynamodb)

            def api_factory() -> ZeroGPUClient:
                return ZeroGPUClient(
                    API_KEY,
                    None,
                    "http://zerogpu.test",
                    transport=emulator.transport(),
                    retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0),
                )

            services = Services(
                settings=settings,
                s3=None,
                sqs=sqs,
                store=JobStore(dynamodb, TABLE, clock=clock.now),
                notifier=Notifier(
                    events=boto3.client("events", region_name=REGION),
                    sns=boto3.client("sns", region_name=REGION),
                    bus_name="default",
                    topic_arn="unused",
                ),
                api_factory=api_factory,
                workdir=workdir,
                owner="bench",
                clock=clock.now,
            )
            services.api  # noqa: B018 - created before the clock starts, as the handler's first use would be
            yield services, (counted, emulator)
            services.close()
        finally:
            emulator.close()


def lambda_budget(timeout_seconds: int) -> Callable[[], float]:
    """The seconds left of an invocation that starts now, as Lambda's context reports them."""
    started = time.monotonic()
    return lambda: timeout_seconds - (time.monotonic() - started)


def measure(count: int, latency_ms: float, shards_per_job: int, stack: Stack) -> Figures:
    with stack_of(count, shards_per_job, latency_ms, stack) as (services, (counted, emulator)):
        retrieves_before = len(emulator.calls)
        services.remaining_time = lambda_budget(stack.poll_timeout_seconds)
        started, cpu_started = time.perf_counter(), time.process_time()
        summary = poll_once(services)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        retrieves = sum(1 for call in emulator.calls[retrieves_before:] if call.method == "GET")
        busy = counted.busy_seconds
        return Figures(
            count, latency_ms, stack.concurrency, seconds, cpu_seconds, counted.calls, busy, retrieves, summary
        )


def header() -> None:
    print(
        f"{'batches':>8}{'latency':>9}{'seconds':>9}{'cpu s':>7}{'floor':>8}{'ratio':>8}{'ddb calls':>11}"
        f"{'per shard':>11}"
        f"{'API calls':>11}{'polled':>8}{'in moto s':>11}  DynamoDB calls by operation"
    )


def row(figures: Figures) -> None:
    cut_off = figures.summary.polled < figures.batches
    ratio = "cut off" if cut_off else f"{figures.seconds / figures.floor:.2f}x" if figures.floor else "-"
    operations = ", ".join(f"{name} {n}" for name, n in sorted(figures.dynamodb_calls.items()))
    print(
        f"{figures.batches:>8}{figures.latency_ms:>7.0f}ms{figures.seconds:>9.2f}{figures.cpu_seconds:>7.2f}"
        f"{figures.floor:>8.2f}{ratio:>8}"
        f"{figures.calls:>11}{figures.calls / max(1, figures.summary.polled):>11.3f}{figures.api_retrieves:>11}"
        f"{figures.summary.polled:>8}{figures.dynamodb_busy_seconds:>11.2f}  {operations}"
    )


def verdict(figures: Figures, stack: Stack) -> None:
    period = stack.schedule_minutes * 60
    usable = stack.poll_timeout_seconds - DEADLINE_MARGIN_SECONDS
    polled_all = figures.summary.polled == figures.batches and not figures.summary.out_of_time
    print(
        f"  {figures.batches} batches at {figures.latency_ms:.0f} ms: {figures.summary.polled} polled in "
        f"{figures.seconds:.1f} s; all polled within one schedule period ({period} s; a run starts new work "
        f"for {usable:.0f} s of its {stack.poll_timeout_seconds} s Timeout): {'yes' if polled_all else 'NO'}"
    )
    if not polled_all:
        print(
            f"  (the floor alone is {figures.floor:.1f} s at {figures.concurrency} threads: "
            f"{figures.batches} batches in {usable:.0f} s need >= "
            f"{figures.batches * figures.latency_ms / 1000 / usable:.1f} threads)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1000,10000", help="running batches per run, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="latency of each batch retrieve")
    parser.add_argument("--shards-per-job", type=int, default=1, help="1: every shard's job is its own")
    parser.add_argument("--concurrency", type=int, help="in place of the template's POLL_CONCURRENCY")
    args = parser.parse_args()
    install_moto_fixes()
    stack = read_stack()
    if args.concurrency:
        stack.environment["POLL_CONCURRENCY"] = str(args.concurrency)
    sizes = [int(size) for size in args.batches.split(",")]
    print(
        f"POLL_CONCURRENCY {stack.concurrency}, poll Timeout {stack.poll_timeout_seconds} s, schedule every "
        f"{stack.schedule_minutes} min; {args.shards_per_job} shard(s) per job\n"
    )
    header()
    results = []
    for count in sizes:
        for latency in (args.latency_ms, 0.0):
            figures = measure(count, latency, args.shards_per_job, stack)
            row(figures)
            results.append(figures)
    print()
    largest = max(sizes)
    for figures in results:
        if figures.batches == largest and figures.latency_ms == args.latency_ms:
            verdict(figures, stack)
    print(
        "\ncpu s: this process's CPU time during the run (the machine's other load changes the seconds more than "
        "this);\nfloor: batches x latency / POLL_CONCURRENCY; ratio: seconds / floor (cut off: the run's time budget "
        "stopped it first);\nper shard: DynamoDB calls of the run / shards polled; in moto s: the time DynamoDB "
        "calls held moto's lock\n(botocore and moto at work in this process, one call at a time). The emulator's "
        "per-request catch-up is off\nduring the run (see the docstring)."
    )


if __name__ == "__main__":
    main()
