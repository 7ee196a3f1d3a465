"""Validate a whole input file and split it into shards, in one streamed pass.

Every line is checked against ZeroGPU's rules; if any line is bad the file is rejected and no shard is
kept. Valid lines go to local shard files, each under the line and byte limits of one batch.

Bounded whatever the input: lines are read in chunks and written straight out; duplicate custom_ids are
found with a fixed-size digest per id (see custom_ids.py); the decompressed size, the number of lines
(blank ones included) and the number of batches are capped; the caller's time budget is checked as the
lines go by. A file that passes a bound, or that is not JSON Lines at all (a JSON array, a corrupt gzip
stream, UTF-16), gets one problem that says so instead of one per line.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from batchdrop.custom_ids import DigestIdSet
from batchdrop.estimate import TokenEstimate
from batchdrop.integrations import s3io
from batchdrop.models import Job, JobStatus, ObjectRef, Shard, ShardState
from batchdrop.observability import Metric, count, logger
from batchdrop.pricing import PriceTable
from batchdrop.services import Services
from batchdrop.settings import Settings
from batchdrop.validation import LineValidator, PhysicalLine, Problem, ProblemCode, ValidLine, iter_physical_lines

MAX_REPORTED_PROBLEMS = 1000
MAX_MESSAGE_CHARS = 500
_TIME_CHECK_EVERY = 1024  # lines (blank ones too) between two looks at the time left
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class SplitLimits:
    """What one input may be: the batch limits, and the bounds that keep validation finite."""

    max_lines: int
    """Lines per shard (one batch)."""
    max_bytes: int
    """Bytes per shard."""
    max_input_bytes: int
    """Decompressed bytes per input."""
    max_input_lines: int
    """Lines per input, blank ones included."""
    max_batches: int
    """Shards per input."""


@dataclass(slots=True)
class ShardFile:
    index: int
    path: str
    lines: int = 0
    bytes: int = 0
    first_line: int = 0

    @property
    def ids_path(self) -> str:
        """Beside the shard: its custom_ids, one JSON string a line, in order (collect reads these
        instead of the whole shard)."""
        return ids_beside(self.path)


def ids_beside(shard_name: str) -> str:
    """Where a shard's custom_id list lives beside it: a local path, or an S3 key under the work prefix."""
    return shard_name.removesuffix(".jsonl") + ".ids"


@dataclass(slots=True)
class SplitResult:
    lines: int = 0
    shards: list[ShardFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    problem_codes: dict[str, int] = field(default_factory=dict)
    """Every problem counted by code, also those past the reported list."""

    @property
    def valid(self) -> bool:
        return self.problem_count == 0

    def note(self, problem: Problem) -> None:
        self.problem_count += 1
        self.problem_codes[problem.code.value] = self.problem_codes.get(problem.code.value, 0) + 1
        if len(self.problems) < MAX_REPORTED_PROBLEMS:
            if len(problem.message) > MAX_MESSAGE_CHARS:
                problem = Problem(problem.code, problem.message[: MAX_MESSAGE_CHARS - 1] + "…", problem.line)
            self.problems.append(problem)


class SplitRetryLater(Exception):
    """The split cannot be decided in this attempt; the message's redelivery tries again."""


class SplitConflict(Exception):
    """An earlier attempt split the input with other limits: the limits must be restored, or the file
    uploaded again (the message is retried, then dead-lettered, where an operator sees it)."""


class _InputTooLarge(Exception):
    pass


class _CountingReader:
    """Counts the (decompressed) bytes read and stops past the limit."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self.read_bytes += len(chunk)
        if self.read_bytes > self._limit:
            raise _InputTooLarge()
        return chunk


class _Stop(Exception):
    """The file has a problem that makes reading on pointless (it is noted already)."""


def validate_and_split(
    stream: IO[bytes],
    directory: str,
    *,
    limits: SplitLimits,
    is_gzip: bool = False,
    time_left: Callable[[], bool] = lambda: True,
    on_shard: Callable[[ShardFile], None] | None = None,
    keep_ids: bool = True,
    estimate: TokenEstimate | None = None,
) -> SplitResult:
    """Reads `stream` once; shard files are written under `directory`.

    `on_shard` is called with each shard as soon as it is complete, while the file is still valid (it may
    upload the shard and delete the local file, so local disk holds one shard at a time); shard files still
    on disk are removed if the file turns out invalid. With `keep_ids`, each shard's custom_ids are also
    written beside it (ShardFile.ids_path), so that collect need not read the whole shard to learn them.
    `time_left` is asked as the lines go by: once it
    says no, the file is rejected as too slow to validate rather than left to the function's timeout.
    """
    result = SplitResult()
    ids = DigestIdSet(directory)
    validator = LineValidator(max_lines=None, strict=True, custom_ids=ids)
    reader = _CountingReader(stream, limits.max_input_bytes)
    current: ShardFile | None = None
    handle: IO[bytes] | None = None
    ids_file: IO[bytes] | None = None
    first_line_seen = False

    def whole_file(problem: Problem) -> _Stop:
        result.note(problem)
        return _Stop()

    try:
        for physical in iter_physical_lines(reader):
            if physical.number > limits.max_input_lines:
                raise whole_file(
                    Problem(
                        ProblemCode.TOO_MANY_LINES,
                        f"Input file has more than {limits.max_input_lines} lines (blank lines included), "
                        "the most one input may have (MaxInputLines): split it into smaller files",
                    )
                )
            if physical.number % _TIME_CHECK_EVERY == 0 and not time_left():
                raise whole_file(
                    Problem(
                        ProblemCode.VALIDATION_TIMEOUT,
                        f"Input file could not be validated in the submit function's time limit (stopped at line "
                        f"{physical.number}): split it into smaller files",
                    )
                )
            if not first_line_seen and (physical.too_long or physical.content.strip()):
                first_line_seen = True
                if problem := _whole_file_problem(physical, is_gzip=is_gzip):
                    raise whole_file(problem)
            checked = validator.check(physical)
            if checked is None:
                continue
            if isinstance(checked, Problem):
                result.note(checked)
                continue
            if result.problem_count:
                continue  # already rejected: keep checking, stop writing
            assert isinstance(checked, ValidLine)
            if estimate is not None and checked.body is not None:
                estimate.add(checked.body)
            size = len(checked.content) + 1
            if current is None or current.lines >= limits.max_lines or current.bytes + size > limits.max_bytes:
                if handle is not None:
                    handle.close()
                    handle = None
                    if ids_file is not None:
                        ids_file.close()
                        ids_file = None
                    if on_shard is not None and current is not None:
                        on_shard(current)
                if len(result.shards) >= limits.max_batches:
                    raise whole_file(
                        Problem(
                            ProblemCode.TOO_MANY_BATCHES,
                            f"Input file needs more than {limits.max_batches} batches (MaxBatchesPerInput) at "
                            f"{limits.max_lines} lines and {limits.max_bytes} bytes per batch: split it into "
                            "smaller files",
                        )
                    )
                current = ShardFile(
                    len(result.shards), os.path.join(directory, f"shard-{len(result.shards):05d}.jsonl")
                )
                current.first_line = checked.line
                result.shards.append(current)
                handle = open(current.path, "wb")  # noqa: SIM115 - closed on rollover and in finally
                ids_file = open(current.ids_path, "wb") if keep_ids else None  # noqa: SIM115 - as the handle
            assert handle is not None  # opened with the shard above
            handle.write(checked.content)
            handle.write(b"\n")
            if ids_file is not None:
                ids_file.write(orjson.dumps(checked.custom_id) + b"\n")  # one JSON string a line
            current.lines += 1
            current.bytes += size
    except _Stop:
        pass
    except _InputTooLarge:
        result.note(
            Problem(
                ProblemCode.INPUT_TOO_LARGE,
                f"Input file is larger than {limits.max_input_bytes} bytes"
                f"{' once decompressed' if is_gzip else ''}, the most one input may have (MaxInputBytes): "
                "split it into smaller files",
            )
        )
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        if not is_gzip:
            raise
        result.note(
            Problem(
                ProblemCode.INVALID_GZIP,
                f"Input file is not a complete gzip stream ({type(error).__name__}: {error}): "
                "compress it again, or upload it uncompressed as .jsonl",
            )
        )
    finally:
        if handle is not None:
            handle.close()
        if ids_file is not None:
            ids_file.close()
        validator.close()
    result.lines = validator.lines
    if result.valid and (final := validator.finish()) is not None:
        result.note(final)
    if result.valid and on_shard is not None and current is not None:
        on_shard(current)
    if not result.valid:
        for shard in result.shards:
            for path in (shard.path, shard.ids_path):
                if os.path.exists(path):
                    os.remove(path)
        result.shards.clear()
    return result


def _whole_file_problem(first: PhysicalLine, *, is_gzip: bool) -> Problem | None:
    """Looks at the first line that is not blank: is the file JSON Lines at all?"""
    content = first.content
    if first.number == 1 and content.startswith(_UTF16_32_BOMS):
        return Problem(
            ProblemCode.WRONG_ENCODING,
            "Input file is UTF-16 or UTF-32 encoded (it starts with a byte order mark): save it as UTF-8",
        )
    if first.number == 1 and not is_gzip and content.startswith(_GZIP_MAGIC):
        return Problem(
            ProblemCode.GZIP_NOT_DECLARED,
            "Input file is gzip-compressed but its key does not end in .jsonl.gz: rename it to .jsonl.gz",
        )
    stripped = content.strip()
    if stripped == b"{":
        return Problem(
            ProblemCode.NOT_JSON_LINES,
            f"Input file is one JSON document spread over several lines (line {first.number} is a lone '{{'), "
            "not JSON Lines: write each request object on a line of its own",
        )
    if stripped.startswith(b"["):
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            value = None
        if value is None or (isinstance(value, list) and all(isinstance(item, dict) for item in value)):
            return Problem(
                ProblemCode.JSON_ARRAY,
                "Input file is a JSON array, not JSON Lines: write one request object per line, "
                "without the surrounding [ ] and the commas between requests",
            )
    return None


def _put_work_copy(services: Services, bucket: str, work_key: str, path: str, ids_path: str, keep_local: bool) -> None:
    """The shard's durable copy and its custom_id list, under the work prefix (in the split's background)."""
    s3io.upload_file(services.s3, path, bucket, work_key)
    s3io.upload_file(services.s3, ids_path, bucket, ids_beside(work_key), content_type="text/plain")
    os.remove(ids_path)
    if not keep_local:  # no room on local disk for every shard: the upload reads this one back from S3
        services.local_shards.drop(work_key)  # (once this copy is done)


_DISK_RESERVE_BYTES = 64 * 1024 * 1024

VALIDATION_MARGIN_SECONDS = 60.0
"""Validation stops (and rejects the input as too slow) with this much of the invocation left: enough to
write the report and announce it."""


def split_input(
    job: Job, ref: ObjectRef, services: Services, *, first_attempt: bool = False
) -> tuple[Job, SplitResult, list[Shard]]:
    """Validates every line and, if all are valid, records the shards and moves the job to SUBMITTING,
    and returns the shards as recorded. An input with a bad line comes back as it was, with the problems
    in the split and no shards (no API call at all). `first_attempt`: this delivery created the job's
    record, so no earlier attempt can have recorded shards of its own (nothing to read back).

    Each byte of the input is read from S3 once. A complete shard's durable copy goes to the work prefix
    in the background while the next shard is validated, and the shard file itself stays on local disk
    (services.local_shards) for this invocation's upload to the API, as long as the disk has room."""
    settings = services.settings
    now = services.now()
    shards: list[Shard] = []
    # Room kept free: the shard being written, the two that may wait for their copy, the split's own files.
    reserve = 3 * settings.max_bytes_per_batch + _DISK_RESERVE_BYTES

    def store_shard(shard_file: ShardFile) -> None:
        work_key = f"{settings.work_prefix}{job.job_id}/shards/{shard_file.index:05d}.jsonl"
        keep_local = shutil.disk_usage(services.workdir).free > reserve
        path = services.local_shards.keep(work_key, shard_file.path)
        ids_path = ids_beside(path)  # moved beside it: the split's own directory goes before the copy is done
        os.replace(shard_file.ids_path, ids_path)
        services.local_shards.copy_in_background(
            work_key, lambda: _put_work_copy(services, ref.bucket, work_key, path, ids_path, keep_local)
        )
        shards.append(
            Shard(
                job_id=job.job_id,
                index=shard_file.index,
                state=ShardState.PENDING,
                work_key=work_key,
                ids_key=ids_beside(work_key),
                lines=shard_file.lines,
                bytes=shard_file.bytes,
                first_line=shard_file.first_line,
                waiting_since=now,
                next_poll_at=now,
            )
        )

    limits = SplitLimits(
        max_lines=settings.max_lines_per_batch,
        max_bytes=settings.max_bytes_per_batch,
        max_input_bytes=settings.max_input_bytes,
        max_input_lines=settings.max_input_lines,
        max_batches=settings.max_batches_per_input,
    )
    estimate = TokenEstimate()
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory, s3io.open_object(services.s3, ref) as stream:
        try:
            split = validate_and_split(
                stream,
                directory,
                limits=limits,
                is_gzip=ref.is_gzip,
                time_left=lambda: services.remaining_time() > VALIDATION_MARGIN_SECONDS,
                on_shard=store_shard,
                estimate=estimate,
            )
        except BaseException:
            services.local_shards.cancel_copies()
            raise
        estimated = split.valid  # every line was read: the estimate is whole
        if estimated and (over := _over_budget(estimate, settings, services.prices)):
            split.note(over)
        if not split.valid:
            services.local_shards.cancel_copies()  # the shards before a bad line need no copy
    # The shards are recorded while their last copies are still being written: a shard whose copy never
    # lands (a crash, an S3 failure) is rebuilt from the input when it is needed, as after the expiry.
    job_input = job.input.model_copy(update={"lines": split.lines})
    job = job.model_copy(update={"estimate": estimate if estimated else None})
    timed_out = set(split.problem_codes) == {ProblemCode.VALIDATION_TIMEOUT.value}
    if not split.valid and timed_out and not first_attempt and services.store.get_shards(job.job_id):
        # An earlier attempt validated the file and recorded some shards: too slow now is no reason to
        # reject it (its shards may run); the redelivery tries again.
        raise SplitRetryLater(f"job {job.job_id}: validation ran out of time on a retry; it is retried")
    if not split.valid:
        # Shards stored before a later line turned out bad are left to the work prefix's expiry.
        for shard in shards:
            services.local_shards.drop(shard.work_key)
        logger.info("input rejected", extra={"problems": split.problem_count, "lines": split.lines})
        count(Metric.JOBS_REJECTED)
        return job.model_copy(update={"input": job_input}), split, []
    shards = [shard.model_copy(update={"of": len(shards)}) for shard in shards]
    services.store.put_shards(shards)
    recorded = shards if first_attempt else services.store.get_shards(job.job_id)
    if [(s.first_line, s.lines, s.bytes) for s in recorded] != [(s.first_line, s.lines, s.bytes) for s in shards]:
        # An earlier attempt recorded other shards (the limits changed in between): never mix the two.
        raise SplitConflict(
            f"job {job.job_id} was split with other limits by an earlier attempt: restore "
            "MAX_LINES_PER_BATCH / MAX_BYTES_PER_BATCH, or upload the file again"
        )
    accepted: dict[str, Any] = {
        "status": JobStatus.SUBMITTING,
        "shard_count": len(shards),
        "input": job_input,
        "estimate": estimate,
    }
    # A cancel may come in meanwhile: the change is then decided again on the fresh record.
    job = (
        services.store.modify_job(
            job.job_id, lambda fresh: accepted if fresh.status == JobStatus.RECEIVED else None, current=job
        )
        or job
    )
    logger.info("input accepted", extra={"lines": split.lines, "shards": len(shards)})
    count(Metric.JOBS_ACCEPTED)
    return job, split, recorded


def _over_budget(estimate: TokenEstimate, settings: Settings, prices: PriceTable) -> Problem | None:
    """The MAX_ESTIMATED_COST_PER_JOB guardrail: the input's problem if its estimate is above the limit."""
    limit = settings.max_estimated_cost_per_job
    if not limit:
        return None
    total, _ = estimate.cost(prices)
    if total is None or total <= limit:
        return None
    tokens = estimate.total()
    unbounded = (
        f"; {tokens.lines_without_max_tokens:,} lines set no max_tokens, so their output is not counted"
        if tokens.lines_without_max_tokens
        else ""
    )
    return Problem(
        ProblemCode.ESTIMATED_COST_TOO_HIGH,
        f"The job's estimated cost, up to {total:.2f} {prices.currency} ({tokens.input_tokens:,} input tokens "
        f"and up to {tokens.max_output_tokens:,} output tokens{unbounded}), is over MaxEstimatedCostPerJob "
        f"({limit:g} {prices.currency}): split the file, lower max_tokens, or raise the limit",
    )


def adopt_recorded_split(job: Job, services: Services) -> Job | None:
    """The job moved on to SUBMITTING with the shards an earlier attempt recorded, if it recorded all
    of them; else None (the input is split again: re-validating could reject a file whose shards may
    already be running)."""
    shards = services.store.get_shards(job.job_id)
    if not shards or shards[0].of is None or len(shards) != shards[0].of:
        return None
    lines = sum(shard.lines for shard in shards)
    accepted = {
        "status": JobStatus.SUBMITTING,
        "shard_count": len(shards),
        "input": job.input.model_copy(update={"lines": lines}),
    }
    logger.info("an earlier attempt split this input: its shards are taken over", extra={"shards": len(shards)})
    return services.store.modify_job(job.job_id, lambda fresh: accepted if fresh.status == JobStatus.RECEIVED else None)
