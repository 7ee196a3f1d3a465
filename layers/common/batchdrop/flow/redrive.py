"""Re-drive: once every shard of a job's round has been collected, the failed lines another try may help
are sent again, unchanged, as the job's next round.

Which lines, by their code (`category_of`):
- transient (`rate_limit_exceeded`, `internal_error`, `model_error`, an HTTP 429 or 5xx) and never ran
  (`batch_expired`, a batch the API failed, lines a finished batch left out, a batch past its deadline,
  a shard that never got a slot): re-driven;
- operational (`insufficient_quota`, `authentication_error`): not re-driven (another try burns attempts
  until the account is fixed); they stay errors, counted by `LinesAwaitingAccountFix` (an alarm);
- permanent (the line itself is wrong), and outcomes we cannot know (a batch the API lost, results that
  could not be fetched: the line may have run and been billed): final.
A cancelled job is never re-driven.

Bounds (settings): `MAX_REDRIVE_ROUNDS` rounds after the first; the wait before round r is
`REDRIVE_BACKOFF_SECONDS * 2**(r-1)`; no round starts past `JOB_DEADLINE_HOURS` after the job arrived;
`REDRIVE_ENABLED` switches it off. A round's batches have the bounds of any batch.

A round, step by step; a re-run after a crash at any step makes the same round again, because the round is
a function of stored results only (the same lines, cut the same way, into shards of the same indices), and
nothing counts until the job commits it:
1. due: the job records when the next round may start (`redrive_due_at`) and waits in the sweep;
2. claimed: the finalize the sweep asks for takes the job's round lease (`round_claimed_at`);
3. cut: each source shard's error lines are read; those to retry are taken, unchanged, from the shard's
   work copy, and cut into new shard files under the batch limits (stored under the work prefix with their
   custom_id lists); each source shard records the error lines it keeps (`kept_errors_key`);
4. committed: the new shards are recorded (PENDING, indices after the job's last), then the job's round
   and shard count in one conditional write. Submit refuses a shard its job has not committed.
5. submitted: the poller hands the new shards to the submit function as slots free, like any waiting shard
   (the same checkpoints; the batch's metadata also carries the round, for adoption).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson
from botocore.exceptions import ClientError

from batchdrop.flow.results import export_results
from batchdrop.flow.split import ids_beside
from batchdrop.integrations import s3io
from batchdrop.integrations.shard_copies import ShardSourceMissing, local_shard_copy
from batchdrop.integrations.zerogpu import LineCategory, category_for_code, parse_result_line
from batchdrop.integrations.zerogpu.lines import CODE_CATEGORIES
from batchdrop.models import FailureCode, Job, Shard, ShardResult, ShardState, add_count
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services
from batchdrop.timing import NOTIFY_LEASE_SECONDS
from batchdrop.validation import iter_physical_lines

REDRIVEN_CATEGORIES = frozenset({LineCategory.TRANSIENT, LineCategory.NEVER_RAN})

_OWN_CODES: dict[str, LineCategory] = {
    FailureCode.BATCH_FAILED: LineCategory.NEVER_RAN,
    FailureCode.MISSING_RESULT: LineCategory.NEVER_RAN,
    FailureCode.BATCH_TIMED_OUT: LineCategory.NEVER_RAN,
    FailureCode.WAIT_TIMED_OUT: LineCategory.NEVER_RAN,
    FailureCode.BATCH_CANCELLED: LineCategory.NEVER_RAN,
    # the submission was tried for SUBMIT_RETRY_LIMIT_HOURS already, or the API refused the file
    FailureCode.BATCH_CREATE_FAILED: LineCategory.PERMANENT,
    # the line may have run (and been billed): another try could answer it twice
    FailureCode.BATCH_NOT_FOUND: LineCategory.PERMANENT,
    FailureCode.RESULTS_UNAVAILABLE: LineCategory.PERMANENT,
    FailureCode.COLLECT_FAILED: LineCategory.PERMANENT,
    FailureCode.INPUT_MISSING: LineCategory.PERMANENT,
}
_HTTP_CODE = re.compile(r"http_(\d{3})")
ROUND_LEASE_SECONDS = NOTIFY_LEASE_SECONDS
"""Who cuts a round holds the job this long (longer than a collect invocation can run)."""
_MAX_ERROR_LINE_BYTES = 64 * 1024 * 1024


def category_of(code: str) -> LineCategory:
    """What another try can do for a line that failed with `code` (ours or the API's)."""
    if code in _OWN_CODES:
        return _OWN_CODES[code]
    if code in CODE_CATEGORIES:
        return CODE_CATEGORIES[code]
    if match := _HTTP_CODE.fullmatch(code):
        return category_for_code(None, int(match.group(1)))
    return category_for_code(code)


def is_redriven(code: str) -> bool:
    return category_of(code) in REDRIVEN_CATEGORIES


@dataclass(frozen=True, slots=True)
class NextRound:
    number: int
    due_at: int
    lines: int
    """Failed lines of the last round that it would send again."""


def next_round(job: Job, shards: list[Shard], services: Services) -> NextRound | None:
    """The job's next round, if one is due or will be (None: the job ends now). `shards` are the job's
    committed shards, every one collected."""
    settings = services.settings
    if not settings.redrive_enabled or job.cancel_requested_at is not None:
        return None
    if job.round >= settings.max_redrive_rounds:
        return None
    lines = sum(
        n
        for shard in shards
        if shard.round == job.round and shard.result is not None
        for code, n in shard.result.errors_by_code.items()
        if is_redriven(code)
    )
    if lines == 0:
        return None
    number = job.round + 1
    due_at = job.redrive_due_at or services.now() + settings.redrive_backoff_seconds * 2 ** (number - 1)
    if due_at > job.received_at + settings.job_deadline_hours * 3600:
        logger.info("no re-drive: the next round would start past the job's deadline (JOB_DEADLINE_HOURS)")
        return None
    return NextRound(number, due_at, lines)


def awaiting_account_fix(codes: dict[str, int]) -> int:
    """Of a job's final failures by code, the lines that wait for the account (quota, key) to be fixed."""
    return sum(n for code, n in codes.items() if category_of(code) is LineCategory.OPERATIONAL)


def start_round(job: Job, shards: list[Shard], planned: NextRound, services: Services) -> Job | None:
    """Cuts and commits the round (see the module's docstring); None if another invocation holds the
    job's round lease or has committed the round already. The job as committed otherwise."""
    store = services.store
    now = services.now()
    claimed = store.claim_job(
        job, "round_claimed_at", lease_seconds=ROUND_LEASE_SECONDS, also={"sweep_at": now + ROUND_LEASE_SECONDS}
    )
    if claimed is None or claimed.round != planned.number - 1:
        return None
    base = claimed.shard_count or 0
    sources = [
        shard
        for shard in sorted(shards, key=lambda shard: shard.index)
        if shard.round == claimed.round
        and shard.result is not None
        and any(is_redriven(code) for code in shard.result.errors_by_code)
    ]
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        cutter = _RoundCutter(claimed, planned.number, base, directory, services)
        kept = [
            _take_lines_to_retry(source, claimed, planned.number, directory, cutter, services) for source in sources
        ]
        new_shards = cutter.finish()
    for source, (kept_key, kept_codes, redriven) in zip(sources, kept, strict=True):
        assert source.result is not None
        result = source.result.model_copy(
            update={
                "redriven": redriven,
                "redriven_round": planned.number,
                "kept_errors_key": kept_key,
                "kept_errors_by_code": kept_codes,
            }
        )
        store.modify_shard(source.job_id, source.index, _result_set_to(result), current=source)
    store.put_shards(new_shards)
    sent = sum(shard.lines for shard in new_shards)
    committed = store.modify_job(
        claimed.job_id,
        lambda fresh: (
            None
            if fresh.round != claimed.round or fresh.cancel_requested_at is not None
            else {
                "round": planned.number,
                "shard_count": base + len(new_shards),
                "redrive_due_at": None,
                "round_claimed_at": None,
                # with no line found to send, the job is finished by the finalize that follows
                "sweep_at": None if new_shards else services.now(),
            }
        ),
        current=claimed,
    )
    if committed is None or committed.round != planned.number:
        return None
    count(Metric.ROUNDS_STARTED)
    count(Metric.LINES_REDRIVEN, sent)
    logger.info(
        "re-drive round started",
        extra={"round": planned.number, "lines": sent, "shards": len(new_shards), "sources": len(sources)},
    )
    return committed


def _result_set_to(result: ShardResult) -> Callable[[Shard], dict[str, Any] | None]:
    return lambda fresh: None if fresh.result == result else {"result": result}


def _take_lines_to_retry(
    source: Shard, job: Job, round_number: int, directory: str, cutter: _RoundCutter, services: Services
) -> tuple[str, dict[str, int], int]:
    """Sends the source shard's re-drivable failed lines to `cutter`; returns the key of the error lines
    it keeps (the rest), their count by code, and how many lines went to the round."""
    assert source.result is not None
    bucket = job.input.bucket
    errors_path = os.path.join(directory, "errors.jsonl")
    _download_errors(source, job, errors_path, services)
    kept_path = os.path.join(directory, "kept-errors.jsonl")
    kept_codes: dict[str, int] = {}
    retry: dict[str, tuple[bytes, str]] = {}  # custom_id -> its error line and code, until it is found
    with open(errors_path, "rb") as errors, open(kept_path, "wb") as kept:
        for physical in iter_physical_lines(errors, max_line_bytes=_MAX_ERROR_LINE_BYTES):
            if physical.too_long or not physical.content.strip():
                continue
            line = parse_result_line(physical.content)
            code = line.code or "unknown_error"
            if line.custom_id is not None and is_redriven(code):
                retry[line.custom_id] = (physical.content, code)
            else:
                _keep(kept, physical.content, code, kept_codes)
        redriven = 0
        if retry:
            try:
                redriven = _send_found_lines(source, job, directory, retry, cutter, services)
            except ShardSourceMissing as error:
                logger.error("the shard's lines are gone: its failed lines stay errors", extra={"error": str(error)})
        for content, code in retry.values():  # not in the shard's lines (any more): they stay errors
            _keep(kept, content, code, kept_codes)
    kept_key = f"{services.settings.work_prefix}{job.job_id}/results/{source.index:05d}.kept-{round_number:02d}.jsonl"
    s3io.upload_file(services.s3, kept_path, bucket, kept_key)
    for path in (errors_path, kept_path):
        os.remove(path)
    return kept_key, dict(sorted(kept_codes.items())), redriven


def _keep(kept: IO[bytes], content: bytes, code: str, codes: dict[str, int]) -> None:
    kept.write(content)
    kept.write(b"\n")
    add_count(codes, code)


def _download_errors(source: Shard, job: Job, path: str, services: Services) -> None:
    """The source shard's sorted error lines; exported again from the API if they expired meanwhile."""
    assert source.result is not None
    for attempt in range(2):
        try:
            s3io.download_file(services.s3, job.input.bucket, source.result.errors_key, path)
            return
        except ClientError as error:
            if not s3io.is_missing(error) or attempt:
                raise
        logger.warning("the shard's error lines expired; exporting them again", extra={"shard": source.index})
        export_results(source, job, services, skip_unavailable=True)


def _send_found_lines(
    source: Shard,
    job: Job,
    directory: str,
    retry: dict[str, tuple[bytes, str]],
    cutter: _RoundCutter,
    services: Services,
) -> int:
    """The shard's lines whose custom_id is in `retry`, in the shard's order, to the cutter (each found one
    leaves `retry`)."""
    path = local_shard_copy(source, job, directory, services.s3)
    sent = 0
    try:
        with open(path, "rb") as lines:
            for physical in iter_physical_lines(lines):
                custom_id = orjson.loads(physical.content)["custom_id"]  # validated by the split
                if custom_id in retry:
                    del retry[custom_id]
                    cutter.add(custom_id, physical.content, source.first_line)
                    sent += 1
                    if not retry:
                        break
    finally:
        os.remove(path)
    return sent


class _RoundCutter:
    """Cuts a round's lines into shard files under the batch limits; each full one goes to the work prefix
    (with its custom_id list) at once, so local disk holds one shard at a time."""

    def __init__(self, job: Job, round_number: int, base_index: int, directory: str, services: Services) -> None:
        self._job, self._round, self._directory, self._services = job, round_number, directory, services
        self._next_index = base_index
        self._shards: list[Shard] = []
        self._handle: IO[bytes] | None = None
        self._ids: IO[bytes] | None = None
        self._lines = 0
        self._bytes = 0
        self._first_line = 0

    def add(self, custom_id: str, content: bytes, first_line: int) -> None:
        settings = self._services.settings
        size = len(content) + 1
        if self._handle is not None and (
            self._lines >= settings.max_lines_per_batch or self._bytes + size > settings.max_bytes_per_batch
        ):
            self._close()
        if self._handle is None:
            self._handle = open(os.path.join(self._directory, "round-shard.jsonl"), "wb")  # noqa: SIM115 - _close
            self._ids = open(os.path.join(self._directory, "round-shard.ids"), "wb")  # noqa: SIM115 - _close
            self._lines, self._bytes, self._first_line = 0, 0, first_line
        assert self._ids is not None
        self._handle.write(content)
        self._handle.write(b"\n")
        self._ids.write(orjson.dumps(custom_id) + b"\n")
        self._lines += 1
        self._bytes += size

    def finish(self) -> list[Shard]:
        if self._handle is not None:
            self._close()
        return self._shards

    def _close(self) -> None:
        assert self._handle is not None and self._ids is not None
        self._handle.close()
        self._ids.close()
        self._handle = self._ids = None
        job, services = self._job, self._services
        index = self._next_index
        self._next_index += 1
        work_key = f"{services.settings.work_prefix}{job.job_id}/shards/{index:05d}.jsonl"
        path = os.path.join(self._directory, "round-shard.jsonl")
        s3io.upload_file(services.s3, path, job.input.bucket, work_key)
        s3io.upload_file(
            services.s3, ids_beside(path), job.input.bucket, ids_beside(work_key), content_type="text/plain"
        )
        now = services.now()
        self._shards.append(
            Shard(
                job_id=job.job_id,
                index=index,
                state=ShardState.PENDING,
                work_key=work_key,
                ids_key=ids_beside(work_key),
                lines=self._lines,
                bytes=self._bytes,
                first_line=self._first_line,
                round=self._round,
                waiting_since=now,
                next_poll_at=now,
            )
        )
