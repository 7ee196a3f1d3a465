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
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from batchdrop.custom_ids import DigestIdSet
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
) -> SplitResult:
    """Reads `stream` once; shard files are written under `directory`.

    `on_shard` is called with each shard as soon as it is complete, while the file is still valid (it may
    upload the shard and delete the local file, so local disk holds one shard at a time); shard files still
    on disk are removed if the file turns out invalid. `time_left` is asked as the lines go by: once it
    says no, the file is rejected as too slow to validate rather than left to the function's timeout.
    """
    result = SplitResult()
    ids = DigestIdSet(directory)
    validator = LineValidator(max_lines=None, strict=True, custom_ids=ids)
    reader = _CountingReader(stream, limits.max_input_bytes)
    current: ShardFile | None = None
    handle: IO[bytes] | None = None
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
            size = len(checked.content) + 1
            if current is None or current.lines >= limits.max_lines or current.bytes + size > limits.max_bytes:
                if handle is not None:
                    handle.close()
                    handle = None
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
            handle.write(checked.content)
            handle.write(b"\n")
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
        validator.close()
    result.lines = validator.lines
    if result.valid and (final := validator.finish()) is not None:
        result.note(final)
    if result.valid and on_shard is not None and current is not None:
        on_shard(current)
    if not result.valid:
        for shard in result.shards:
            if os.path.exists(shard.path):
                os.remove(shard.path)
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
