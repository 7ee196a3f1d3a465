"""Validate-and-split: the line and byte limits of a batch, memory bounded, rejection keeps nothing."""

from __future__ import annotations

import gzip
import io
import json
import os
import tracemalloc
from pathlib import Path

from batchdrop.pipeline.sharding import validate_and_split


def line(n: int, size: int = 0) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * size or f"q{n}"}]}
    return json.dumps({"custom_id": f"id-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}).encode()


def test_shards_respect_the_line_limit(tmp_path: Path) -> None:
    data = b"\n".join(line(n) for n in range(25)) + b"\n"
    result = validate_and_split(io.BytesIO(data), str(tmp_path), max_lines=10, max_bytes=10**9)
    assert result.valid
    assert [shard.lines for shard in result.shards] == [10, 10, 5]
    assert [shard.first_line for shard in result.shards] == [1, 11, 21]
    assert b"".join(Path(shard.path).read_bytes() for shard in result.shards) == data


def test_shards_respect_the_byte_limit_and_never_split_a_line(tmp_path: Path) -> None:
    lines = [line(n, 1000) for n in range(10)]
    limit = 3 * (len(lines[0]) + 1) + 10
    result = validate_and_split(io.BytesIO(b"\n".join(lines)), str(tmp_path), max_lines=1000, max_bytes=limit)
    assert [shard.lines for shard in result.shards] == [3, 3, 3, 1]
    assert all(os.path.getsize(shard.path) <= limit for shard in result.shards)


def test_crlf_a_bom_and_blank_lines_are_normalised_away(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + line(1) + b"\r\n\r\n" + line(2) + b"\r\n"
    result = validate_and_split(io.BytesIO(data), str(tmp_path), max_lines=10, max_bytes=10**9)
    assert result.valid and result.lines == 2
    assert Path(result.shards[0].path).read_bytes() == line(1) + b"\n" + line(2) + b"\n"


def test_an_invalid_file_keeps_no_shard_files(tmp_path: Path) -> None:
    data = line(1) + b"\n" + line(1) + b"\n"
    result = validate_and_split(io.BytesIO(data), str(tmp_path), max_lines=1, max_bytes=10**9)
    assert not result.valid
    assert result.shards == [] and os.listdir(tmp_path) == []


def test_a_corrupt_gzip_stream_is_a_rejection_not_a_crash(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise gzip.BadGzipFile("Not a gzipped file (b'no')")

    result = validate_and_split(Broken(), str(tmp_path), max_lines=10, max_bytes=10**9)  # type: ignore[arg-type]
    assert not result.valid
    assert "cannot be read" in result.problems[0].message


def test_memory_does_not_grow_with_line_size(tmp_path: Path) -> None:
    # Given a 30 MB file with one 25 MB line (over the 1 MiB limit) among valid lines
    data = io.BytesIO(line(1) + b"\n" + b"y" * 25_000_000 + b"\n" + line(2) + b"\n" + line(3, 4_000_000) + b"\n")

    tracemalloc.start()
    result = validate_and_split(data, str(tmp_path), max_lines=10, max_bytes=10**9)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert [problem.line for problem in result.problems] == [2, 4]
    assert peak < 6_000_000, peak


def test_each_shard_is_handed_over_as_soon_as_it_is_complete(tmp_path: Path) -> None:
    handed: list[tuple[int, int, bool]] = []

    def take(shard: object) -> None:
        handed.append((shard.index, shard.lines, os.path.exists(shard.path)))  # type: ignore[attr-defined]
        os.remove(shard.path)  # type: ignore[attr-defined]

    data = b"\n".join(line(n) for n in range(7))
    result = validate_and_split(io.BytesIO(data), str(tmp_path), max_lines=3, max_bytes=10**9, on_shard=take)
    assert result.valid
    assert handed == [(0, 3, True), (1, 3, True), (2, 1, True)]
    assert os.listdir(tmp_path) == []


def test_a_file_that_turns_out_bad_hands_over_no_further_shard_and_leaves_no_file(tmp_path: Path) -> None:
    handed: list[int] = []
    data = b"\n".join([*(line(n) for n in range(4)), b"broken", line(9)])
    result = validate_and_split(
        io.BytesIO(data), str(tmp_path), max_lines=3, max_bytes=10**9, on_shard=lambda shard: handed.append(shard.index)
    )
    assert not result.valid
    assert handed == [0]
    assert os.listdir(tmp_path) == []
