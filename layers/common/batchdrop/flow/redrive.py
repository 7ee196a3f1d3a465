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
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import IO, Any

import orjson
from botocore.exceptions import ClientError

from batchdrop import contracts
from batchdrop.flow.merged_results import MergedResults
from batchdrop.flow.results import export_results
from batchdrop.flow.split import ids_beside
from batchdrop.integrations import s3io
from batchdrop.integrations.shard_copies import ShardSourceMissing, local_shard_copy
from batchdrop.integrations.store import JobStore
from batchdrop.integrations.zerogpu import LineCategory, category_for_code, parse_result_line
from batchdrop.integrations.zerogpu.lines import CODE_CATEGORIES
from batchdrop.models import (
    FailureCode,
    Job,
    JobStatus,
    KeptErrors,
    ObjectRef,
    Shard,
    ShardResult,
    ShardState,
    add_count,
)
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
    """Failed lines it would send again."""
    codes: frozenset[str] | None = None
    """A retry asked for by hand: the codes whose final failures it sends, from any round (None: the
    automatic rules, on the last round's failures)."""

    def takes(self, code: str) -> bool:
        return code in self.codes if self.codes is not None else is_redriven(code)


def next_round(job: Job, shards: list[Shard], services: Services) -> NextRound | None:
    """The job's next round, if one is due or will be (None: the job ends now). `shards` are the job's
    committed shards, every one collected."""
    settings = services.settings
    if job.cancel_requested_at is not None:
        return None
    if job.retry_codes is not None:
        codes = frozenset(job.retry_codes)
        wanted = sum(
            n
            for shard in shards
            if shard.result
            for code, n in shard.result.final(job.round)[1].items()
            if code in codes
        )
        return NextRound(job.round + 1, job.redrive_due_at or services.now(), wanted, codes) if wanted else None
    if not settings.redrive_enabled:
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


class RetryRefused(Exception):
    """A retry asked for by hand that cannot be taken; the message says why and what to do."""


def request_retry(
    store: JobStore,
    job_id: str,
    *,
    now: int,
    codes: Collection[str] = (),
    all_failed: bool = False,
    s3: Any = None,
) -> tuple[Job, int]:
    """Sets a finished job up for one more round of its failed lines with `codes` (by default those
    another try can help; with `all_failed` also the account's: quota, key), from any of its rounds; the
    poller's sweep starts it at once. Returns the job and the lines it will send again. With `s3`, a job
    whose working files have expired is taken only if its merged files can give them back
    (`merged_results`)."""
    job = store.get_job(job_id)
    if job is None:
        raise RetryRefused(f"no job {job_id} in the table: check the id (`batchdrop jobs list` lists them)")
    if job.status == JobStatus.REJECTED:
        raise RetryRefused(
            f"job {job_id} was rejected, so nothing was sent: fix the file (its report.json names each bad line) "
            "and upload it again"
        )
    if job.status != JobStatus.FINISHED or (job.notified_at is None and job.notify_abandoned_at is None):
        raise RetryRefused(f"job {job_id} has not finished yet: retry it once it has (`batchdrop jobs show {job_id}`)")
    if job.cancel_requested_at is not None:
        raise RetryRefused(f"job {job_id} was cancelled: upload the file again to run it")
    failures: dict[str, int] = {}
    committed = [s for s in store.get_shards(job_id) if s.result is not None and s.index < (job.shard_count or 0)]
    for shard in committed:
        assert shard.result is not None
        for code, n in shard.result.final(job.round)[1].items():
            add_count(failures, code, n)
    if s3 is not None:
        _working_files_kept(job, committed, store, s3)
    categories = REDRIVEN_CATEGORIES | ({LineCategory.OPERATIONAL} if all_failed else frozenset())
    wanted = set(codes) if codes else {code for code in failures if category_of(code) in categories}
    lines = sum(n for code, n in failures.items() if code in wanted)
    if not lines:
        found = ", ".join(f"{code} ({n})" for code, n in sorted(failures.items())) or "none"
        operational = any(category_of(code) == LineCategory.OPERATIONAL for code in failures)
        hint = (
            "; --all-failed also takes quota and API-key failures" if operational and not (all_failed or codes) else ""
        )
        asked = f"with {', '.join(sorted(codes))}" if codes else "that another try can help"
        raise RetryRefused(f"job {job_id} has no failed lines {asked} (its failures: {found}){hint}")
    changes: dict[str, Any] = {
        "status": JobStatus.SUBMITTING,
        "retry_codes": sorted(wanted),
        "retries": job.retries + 1,
        "redrive_due_at": now,
        "outcome": None,
        "finished_at": None,
        "expires_at": None,
        "notify_claimed_at": None,
        "finished_event_sent_at": None,
        "finished_message_sent_at": None,
        "notified_at": None,
        "sweep_at": now,  # the poller's sweep starts the round
    }
    retried = store.modify_job(job_id, lambda fresh: changes if fresh.version == job.version else None, current=job)
    if retried is None or retried.retry_codes is None:
        raise RetryRefused(f"job {job_id} changed while the retry was asked for: ask again")
    return retried, lines


def _working_files_kept(job: Job, shards: list[Shard], store: JobStore, s3: Any) -> None:
    """Raises RetryRefused if a file the retry's merge reads (each shard's results under the work prefix)
    has expired and cannot be cut from the job's merged files again (they were replaced since, or the job
    ended before they recorded where each file lies): listed a thousand keys a call, not looked up one by one."""
    needed: set[str] = set()
    for shard in shards:
        assert shard.result is not None
        needed.update(key for key in (shard.result.output_key, shard.result.final(job.round)[2]) if key)
    prefixes = {key.rsplit("/", 1)[0] + "/" for key in needed}
    present: set[str] = set()
    for prefix in prefixes:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=job.input.bucket, Prefix=prefix):
            present.update(item["Key"] for item in page.get("Contents", []))
    gone = needed - present
    if not gone:
        return
    merged = MergedResults.load(job, store, s3)
    lost = {key for key in gone if merged is None or not merged.covers(key)}
    if lost:
        raise RetryRefused(
            f"job {job.job_id}'s working files have expired ({len(lost)} of its result files under the work "
            "prefix, kept WorkRetentionDays) and cannot be cut from its output.jsonl and errors.jsonl either "
            "(they changed since it ended, or it ended before batchdrop recorded where each file lies in them): "
            f"upload the input again to run it (its failed lines are listed in {job.output_prefix}errors.jsonl)"
        )
    logger.info(
        "the job's working files expired; the retry cuts them from its merged files", extra={"files": len(gone)}
    )


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
        if shard.result is not None
        and (planned.codes is not None or shard.round == claimed.round)
        and any(planned.takes(code) for code in shard.result.final(claimed.round)[1])
    ]
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        cutter = _RoundCutter(claimed, planned.number, base, directory, services)
        merged = MergedResults.load(claimed, store, services.s3) if planned.codes is not None else None
        kept = [
            _take_lines_to_retry(source, claimed, planned, directory, cutter, services, merged) for source in sources
        ]
        new_shards = cutter.finish()
    for source, entry in zip(sources, kept, strict=True):
        assert source.result is not None
        result = source.result.model_copy(
            update={"kept": [old for old in source.result.kept if old.round < planned.number] + [entry]}
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
                "round_lines": sent,
                "round_first_shard": base,
                "redrive_due_at": None,
                "round_claimed_at": None,
                "retry_codes": None,
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
    if new_shards:
        _announce_round(claimed, shards, sent, len(new_shards), services)
    logger.info(
        "re-drive round started",
        extra={"round": planned.number, "lines": sent, "shards": len(new_shards), "sources": len(sources)},
    )
    return committed


def _announce_round(job: Job, shards: list[Shard], sent: int, batches: int, services: Services) -> None:
    """`Batch Job Round Finished`, once the next round is committed. Best effort: the job's end is
    announced by `Batch Job Finished` whatever happens to this one."""
    detail = contracts.round_finished_detail(job, shards, lines=sent, batches=batches, now=services.now())
    try:
        services.notifier.round_finished(detail.document())
    except Exception as error:  # informational; the round goes on
        logger.warning("could not announce the round's end", extra={"round": job.round, "error": repr(error)})


def _result_set_to(result: ShardResult) -> Callable[[Shard], dict[str, Any] | None]:
    return lambda fresh: None if fresh.result == result else {"result": result}


def _take_lines_to_retry(
    source: Shard,
    job: Job,
    planned: NextRound,
    directory: str,
    cutter: _RoundCutter,
    services: Services,
    merged: MergedResults | None,
) -> KeptErrors:
    """Sends the source shard's failed lines that the round takes to `cutter`; returns the error lines it
    keeps (the rest), with their count by code and how many of its lines have gone again so far."""
    assert source.result is not None
    bucket = job.input.bucket
    failed, _, errors_key = source.result.final(job.round)
    errors_path = os.path.join(directory, "errors.jsonl")
    _download_errors(source, job, errors_key, errors_path, services, merged)
    kept_path = os.path.join(directory, "kept-errors.jsonl")
    kept_codes: dict[str, int] = {}
    retry: dict[str, tuple[bytes, str]] = {}  # custom_id -> its error line and code, until it is found
    with open(errors_path, "rb") as errors, open(kept_path, "wb") as kept:
        for physical in iter_physical_lines(errors, max_line_bytes=_MAX_ERROR_LINE_BYTES):
            if physical.too_long or not physical.content.strip():
                continue
            line = parse_result_line(physical.content)
            code = line.code or "unknown_error"
            if line.custom_id is not None and planned.takes(code):
                retry[line.custom_id] = (physical.content, code)
            else:
                _keep(kept, physical.content, code, kept_codes)
        sent = 0
        if retry:
            try:
                sent = _send_found_lines(source, job, directory, retry, cutter, services)
            except ShardSourceMissing as error:
                logger.error("the shard's lines are gone: its failed lines stay errors", extra={"error": str(error)})
        for content, code in retry.values():  # not in the shard's lines (any more): they stay errors
            _keep(kept, content, code, kept_codes)
    kept_key = f"{services.settings.work_prefix}{job.job_id}/results/{source.index:05d}.kept-{planned.number:02d}.jsonl"
    s3io.upload_file(services.s3, kept_path, bucket, kept_key)
    for path in (errors_path, kept_path):
        os.remove(path)
    already = source.result.failed - failed
    return KeptErrors(
        round=planned.number,
        redriven=already + sent,
        errors_key=kept_key,
        errors_by_code=dict(sorted(kept_codes.items())),
    )


def _keep(kept: IO[bytes], content: bytes, code: str, codes: dict[str, int]) -> None:
    kept.write(content)
    kept.write(b"\n")
    add_count(codes, code)


def _download_errors(
    source: Shard, job: Job, key: str, path: str, services: Services, merged: MergedResults | None
) -> None:
    """The source shard's error lines; if they expired meanwhile, cut from the job's merged errors.jsonl
    where its last end put them, else exported again from the API."""
    assert source.result is not None
    try:
        s3io.download_file(services.s3, job.input.bucket, key, path)
        return
    except ClientError as error:
        if not s3io.is_missing(error):
            raise
        if merged is not None and merged.covers(key):
            merged.download(key, path)
            return
        if key != source.result.errors_key:
            raise
    logger.warning("the shard's error lines expired; exporting them again", extra={"shard": source.index})
    export_results(source, job, services, skip_unavailable=True)
    s3io.download_file(services.s3, job.input.bucket, key, path)


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
    try:
        path = local_shard_copy(source, job, directory, services.s3)
    except ShardSourceMissing:
        if not source.round:
            raise  # the input itself is gone or changed: nothing to take the lines from
        path = _lines_from_input(source, job, directory, set(retry), services)
    sent = 0
    try:
        with open(path, "rb") as lines:
            for physical in iter_physical_lines(lines):
                custom_id = orjson.loads(physical.content)["custom_id"]  # validated by the split
                if custom_id in retry:
                    del retry[custom_id]
                    cutter.add(custom_id, physical.content, source.first_line, source.attempt + 1)
                    sent += 1
                    if not retry:
                        break
    finally:
        os.remove(path)
    return sent


def _lines_from_input(source: Shard, job: Job, directory: str, wanted: set[str], services: Services) -> str:
    """A round shard whose work copy expired: the lines of the input with the wanted custom_ids (a round's
    lines are input lines, byte for byte), in a local file. Raises ShardSourceMissing if the input is gone or
    was replaced (its ETag is pinned)."""
    logger.warning(
        "a re-drive shard's work copy expired; its lines are taken from the input",
        extra={"shard": source.index, "lines": len(wanted)},
    )
    count(Metric.SHARDS_REBUILT)
    path = os.path.join(directory, f"from-input-{source.index:05d}.jsonl")
    ref = ObjectRef(job.input.bucket, job.input.key, job.input.version_id, job.input.etag)
    left = set(wanted)
    try:
        with s3io.open_object(services.s3, ref) as stream, open(path, "wb") as found:
            for physical in iter_physical_lines(stream):
                if not physical.content.strip():
                    continue
                custom_id = orjson.loads(physical.content)["custom_id"]  # validated by the split
                if custom_id in left:
                    left.discard(custom_id)
                    found.write(physical.content + b"\n")
                    if not left:
                        break
    except ClientError as error:
        if s3io.is_missing(error):
            raise ShardSourceMissing(f"shard {source.index} of {job.job_id}: the input object is gone too") from None
        raise
    return path


class _RoundCutter:
    """Cuts a round's lines into shard files under the batch limits, one open shard per attempt number
    (every line of a shard is on the same attempt); each full one goes to the work prefix with its
    custom_id list at once, so local disk holds at most one shard per attempt number."""

    def __init__(self, job: Job, round_number: int, base_index: int, directory: str, services: Services) -> None:
        self._job, self._round, self._directory, self._services = job, round_number, directory, services
        self._next_index = base_index
        self._shards: list[Shard] = []
        self._open: dict[int, _OpenShard] = {}

    def add(self, custom_id: str, content: bytes, first_line: int, attempt: int) -> None:
        settings = self._services.settings
        size = len(content) + 1
        shard = self._open.get(attempt)
        if shard is not None and (
            shard.lines >= settings.max_lines_per_batch or shard.bytes + size > settings.max_bytes_per_batch
        ):
            self._close(attempt)
            shard = None
        if shard is None:
            path = os.path.join(self._directory, f"round-shard-{attempt}.jsonl")
            shard = self._open[attempt] = _OpenShard(path, first_line)
        shard.add(custom_id, content)

    def finish(self) -> list[Shard]:
        for attempt in sorted(self._open):
            self._close(attempt)
        return self._shards

    def _close(self, attempt: int) -> None:
        shard = self._open.pop(attempt)
        shard.close()
        job, services = self._job, self._services
        index = self._next_index
        self._next_index += 1
        work_key = f"{services.settings.work_prefix}{job.job_id}/shards/{index:05d}.jsonl"
        s3io.upload_file(services.s3, shard.path, job.input.bucket, work_key)
        s3io.upload_file(
            services.s3, ids_beside(shard.path), job.input.bucket, ids_beside(work_key), content_type="text/plain"
        )
        for path in (shard.path, ids_beside(shard.path)):
            os.remove(path)
        now = services.now()
        self._shards.append(
            Shard(
                job_id=job.job_id,
                index=index,
                state=ShardState.PENDING,
                work_key=work_key,
                ids_key=ids_beside(work_key),
                lines=shard.lines,
                bytes=shard.bytes,
                first_line=shard.first_line,
                round=self._round,
                attempt=attempt,
                waiting_since=now,
                next_poll_at=now,
            )
        )


class _OpenShard:
    """A round shard being written: its lines and, beside it, its custom_ids."""

    def __init__(self, path: str, first_line: int) -> None:
        self.path, self.first_line = path, first_line
        self.lines = self.bytes = 0
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._ids = open(ids_beside(path), "wb")  # noqa: SIM115 - closed by close()

    def add(self, custom_id: str, content: bytes) -> None:
        self._handle.write(content)
        self._handle.write(b"\n")
        self._ids.write(orjson.dumps(custom_id) + b"\n")
        self.lines += 1
        self.bytes += len(content) + 1

    def close(self) -> None:
        self._handle.close()
        self._ids.close()
