"""Validate a whole input file and split it into shards, in one streamed pass.

Every line is checked against ZeroGPU's rules; if any line is bad the file is rejected and no shard is
kept. Valid lines go to local shard files, each under the line and byte limits of one batch. Memory
stays bounded: lines are read in chunks and written straight out; only the set of custom_ids seen (to
find duplicates across the whole file) grows with the number of lines.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from batchdrop.validation import LineValidator, Problem, ProblemCode, ValidLine, iter_physical_lines

MAX_REPORTED_PROBLEMS = 1000


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


def validate_and_split(
    stream: IO[bytes],
    directory: str,
    *,
    max_lines: int,
    max_bytes: int,
    on_shard: Callable[[ShardFile], None] | None = None,
) -> SplitResult:
    """Reads `stream` once; shard files are written under `directory`.

    `on_shard` is called with each shard as soon as it is complete, while the file is still valid (it may
    upload the shard and delete the local file, so local disk holds one shard at a time); shard files still
    on disk are removed if the file turns out invalid.
    """
    result = SplitResult()
    validator = LineValidator(max_lines=None, strict_body=True)
    current: ShardFile | None = None
    handle: IO[bytes] | None = None

    def note(problem: Problem) -> None:
        result.problem_count += 1
        result.problem_codes[problem.code.value] = result.problem_codes.get(problem.code.value, 0) + 1
        if len(result.problems) < MAX_REPORTED_PROBLEMS:
            result.problems.append(problem)

    try:
        for physical in iter_physical_lines(stream):
            checked = validator.check(physical)
            if checked is None:
                continue
            if isinstance(checked, Problem):
                note(checked)
                continue
            if result.problem_count:
                continue  # already rejected: keep checking, stop writing
            assert isinstance(checked, ValidLine)
            size = len(checked.content) + 1
            if current is None or current.lines >= max_lines or current.bytes + size > max_bytes:
                if handle is not None:
                    handle.close()
                    handle = None
                    if on_shard is not None and current is not None:
                        on_shard(current)
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
    except (OSError, EOFError) as error:
        # A corrupt gzip stream, for instance: the file is unreadable as a whole.
        note(Problem(ProblemCode.INVALID_JSON, f"Input file cannot be read: {error}"))
    finally:
        if handle is not None:
            handle.close()
    result.lines = validator.lines
    if (final := validator.finish()) is not None:
        note(final)
    if result.valid and on_shard is not None and current is not None:
        on_shard(current)
    if not result.valid:
        for shard in result.shards:
            if os.path.exists(shard.path):
                os.remove(shard.path)
        result.shards.clear()
    return result
