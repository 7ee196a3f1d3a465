"""Validate-and-split: the line and byte limits of a batch, memory bounded, rejection keeps nothing, and
hostile input ends in a rejection with a clear problem: never a crash, a timeout or an out-of-memory."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from batchdrop.custom_ids import DigestIdSet
from batchdrop.flow.split import ShardFile, SplitLimits, validate_and_split


def line(n: int, size: int = 0, custom_id: str | None = None, **body_extra: object) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * size or f"q{n}"}]} | body_extra
    document = {"custom_id": custom_id or f"id-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(document).encode()


def limits(
    max_lines: int = 10,
    max_bytes: int = 10**9,
    *,
    max_input_bytes: int = 10**12,
    max_input_lines: int = 10**7,
    max_batches: int = 1000,
) -> SplitLimits:
    return SplitLimits(max_lines, max_bytes, max_input_bytes, max_input_lines, max_batches)


def split(data: bytes, tmp_path: Path, *, is_gzip: bool = False, **limit_overrides: int):  # type: ignore[no-untyped-def]
    stream = gzip.GzipFile(fileobj=io.BytesIO(data)) if is_gzip else io.BytesIO(data)
    return validate_and_split(stream, str(tmp_path), limits=limits(**limit_overrides), is_gzip=is_gzip)


def codes(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [problem.code.value for problem in result.problems]


def test_shards_respect_the_line_limit(tmp_path: Path) -> None:
    data = b"\n".join(line(n) for n in range(25)) + b"\n"
    result = split(data, tmp_path, max_lines=10)
    assert result.valid
    assert [shard.lines for shard in result.shards] == [10, 10, 5]
    assert [shard.first_line for shard in result.shards] == [1, 11, 21]
    assert b"".join(Path(shard.path).read_bytes() for shard in result.shards) == data


def test_shards_respect_the_byte_limit_and_never_split_a_line(tmp_path: Path) -> None:
    lines = [line(n, 1000) for n in range(10)]
    limit = 3 * (len(lines[0]) + 1) + 10
    result = split(b"\n".join(lines), tmp_path, max_lines=1000, max_bytes=limit)
    assert [shard.lines for shard in result.shards] == [3, 3, 3, 1]
    assert all(os.path.getsize(shard.path) <= limit for shard in result.shards)


def test_crlf_a_bom_and_blank_lines_are_normalised_away(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + line(1) + b"\r\n\r\n" + line(2) + b"\r\n"
    result = split(data, tmp_path)
    assert result.valid and result.lines == 2
    assert Path(result.shards[0].path).read_bytes() == line(1) + b"\n" + line(2) + b"\n"


def test_an_invalid_file_keeps_no_shard_files(tmp_path: Path) -> None:
    data = line(1) + b"\n" + line(1) + b"\n"
    result = split(data, tmp_path, max_lines=1)
    assert not result.valid
    assert result.shards == [] and os.listdir(tmp_path) == []


def test_memory_does_not_grow_with_line_size(tmp_path: Path) -> None:
    # Given a 30 MB file with one 25 MB line (over the 1 MiB limit) among valid lines
    data = line(1) + b"\n" + b"y" * 25_000_000 + b"\n" + line(2) + b"\n" + line(3, 4_000_000) + b"\n"

    tracemalloc.start()
    result = split(data, tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert [problem.line for problem in result.problems] == [2, 4]
    assert peak < 6_000_000, peak


def test_each_shard_is_handed_over_as_soon_as_it_is_complete(tmp_path: Path) -> None:
    handed: list[tuple[int, int, bool]] = []
    listed: list[list[str]] = []

    def take(shard: ShardFile) -> None:
        handed.append((shard.index, shard.lines, os.path.exists(shard.path)))
        with open(shard.ids_path, "rb") as ids:  # the shard's custom_ids beside it, one JSON string a line
            listed.append([json.loads(entry) for entry in ids])
        os.remove(shard.path)
        os.remove(shard.ids_path)

    data = b"\n".join(line(n) for n in range(7))
    result = validate_and_split(io.BytesIO(data), str(tmp_path), limits=limits(max_lines=3), on_shard=take)
    assert result.valid
    assert handed == [(0, 3, True), (1, 3, True), (2, 1, True)]
    assert [len(ids) for ids in listed] == [3, 3, 1] and listed[2] == [json.loads(line(6))["custom_id"]]
    assert os.listdir(tmp_path) == []


def test_a_file_that_turns_out_bad_hands_over_no_further_shard_and_leaves_no_file(tmp_path: Path) -> None:
    handed: list[int] = []
    data = b"\n".join([*(line(n) for n in range(4)), b"broken", line(9)])
    result = validate_and_split(
        io.BytesIO(data), str(tmp_path), limits=limits(max_lines=3), on_shard=lambda shard: handed.append(shard.index)
    )
    assert not result.valid
    assert handed == [0]
    assert os.listdir(tmp_path) == []


# -- corrupt and hostile files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: data[:20] + bytes(255 - b for b in data[20:40]) + data[40:],  # corrupt deflate
        lambda data: b"not gzip at all",
        lambda data: data[:-4] + b"\x00\x00\x00\x00",  # wrong length in the trailer
    ],
    ids=["truncated", "corrupt", "not-gzip", "bad-trailer"],
)
def test_a_corrupt_or_truncated_gzip_is_rejected_with_its_own_code(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    good = gzip.compress(b"\n".join(line(n, 200) for n in range(200)))
    result = split(damage(good), tmp_path, is_gzip=True)
    assert not result.valid
    assert codes(result) == ["invalid_gzip"]
    assert "gzip" in result.problems[0].message and ".jsonl" in result.problems[0].message
    assert os.listdir(tmp_path) == []


def test_a_read_error_of_the_stream_itself_is_not_mistaken_for_bad_input(tmp_path: Path) -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionResetError("the connection to S3 dropped")

    # A transient read failure must fail the invocation (retried), not reject the file for good.
    with pytest.raises(ConnectionResetError):
        validate_and_split(Broken(), str(tmp_path), limits=limits(), is_gzip=True)  # type: ignore[arg-type]


def test_a_gzip_bomb_of_blank_lines_is_stopped_at_the_line_bound(tmp_path: Path) -> None:
    # Given 256 MiB of newlines, gzipped to a few hundred KB
    bomb = gzip.compress(b"\n" * (256 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 400_000
    started = time.monotonic()
    result = split(bomb, tmp_path, is_gzip=True, max_input_lines=1_000_000)
    elapsed = time.monotonic() - started
    # Then it is rejected at the line bound, long before it is all read
    assert codes(result) == ["too_many_lines"]
    assert "1000000 lines (blank lines included)" in result.problems[0].message
    assert elapsed < 60, elapsed


def test_the_decompressed_size_is_bounded(tmp_path: Path) -> None:
    data = b"\n".join(line(n, 1000) for n in range(2000))
    result = split(gzip.compress(data), tmp_path, is_gzip=True, max_input_bytes=1_000_000)
    assert codes(result) == ["input_too_large"]
    assert "1000000 bytes once decompressed" in result.problems[0].message


def test_a_file_that_cannot_be_validated_in_time_is_rejected_not_left_to_time_out(tmp_path: Path) -> None:
    asked = []

    def time_left() -> bool:
        asked.append(1)
        return len(asked) < 3

    data = b"\n".join(line(n) for n in range(10_000))
    result = validate_and_split(io.BytesIO(data), str(tmp_path), limits=limits(), time_left=time_left)
    assert codes(result) == ["validation_timeout"]
    assert "split it into smaller files" in result.problems[0].message


def test_an_input_needing_more_batches_than_allowed_is_rejected(tmp_path: Path) -> None:
    data = b"\n".join(line(n) for n in range(50))
    result = split(data, tmp_path, max_lines=10, max_batches=4)
    assert codes(result) == ["too_many_batches"]
    assert os.listdir(tmp_path) == []


def test_reports_stay_small_whatever_the_custom_ids(tmp_path: Path) -> None:
    # Given 1,000 duplicate lines whose custom_id has 500,000 characters
    huge = "x" * 500_000
    data = b"\n".join(line(n, custom_id=huge) for n in range(1001))
    result = split(data, tmp_path)
    # Then every problem is reported, each message short
    assert result.problem_count == 1000
    assert all(len(problem.message) < 300 for problem in result.problems)
    assert sum(len(problem.message) for problem in result.problems) < 300_000


def test_duplicate_detection_memory_does_not_depend_on_the_ids_length(tmp_path: Path) -> None:
    # Given 1,000 distinct custom_ids of 1 MB each (about 1 GB of ids in all), then a duplicate of one
    def lines():  # type: ignore[no-untyped-def]
        for n in range(1000):
            yield line(n, custom_id=f"{n:04d}" + "y" * 1_000_000) + b"\n"
        yield line(0, custom_id="0007" + "y" * 1_000_000) + b"\n"

    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self._lines = lines()
            self._pending = b""

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            while len(self._pending) < size:
                chunk = next(self._lines, b"")
                if not chunk:
                    break
                self._pending += chunk
            out, self._pending = self._pending[:size], self._pending[size:]
            return out

    tracemalloc.start()
    result = validate_and_split(Stream(), str(tmp_path), limits=limits(max_lines=50_000))  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then the duplicate is found exactly, in memory far below the ids' size
    assert codes(result) == ["duplicate_custom_id"]
    assert result.problems[0].line == 1001
    assert peak < 32_000_000, peak  # a few 1 MB lines in flight (read chunks, a joined line), not 1 GB


def test_a_digest_collision_never_makes_a_false_duplicate(tmp_path: Path) -> None:
    # Given a set whose hash sends every id to the same tag
    ids = DigestIdSet(str(tmp_path), hasher=lambda key: 42)
    distinct = [f"id-{n}" for n in range(300)] + ["z" * 5000, "z" * 5001]
    # Then distinct ids are all new, and every repeat is found
    assert all(ids.add(custom_id) for custom_id in distinct)
    assert not any(ids.add(custom_id) for custom_id in distinct)
    ids.close()


def test_the_digest_set_grows_and_keeps_every_id(tmp_path: Path) -> None:
    ids = DigestIdSet(str(tmp_path))
    assert all(ids.add(f"request-{n}") for n in range(100_000))
    assert not any(ids.add(f"request-{n}") for n in range(0, 100_000, 7))
    assert ids.add("request-100000")
    assert ids.memory_bytes < 100_000 * 12  # 4-byte slots at most 3/4 full, doubled: ≤ 10.7 bytes an id
    ids.close()
    assert os.listdir(tmp_path) == []


def test_the_digest_set_grows_exactly_when_every_tag_matches(tmp_path: Path) -> None:
    # Given a hash whose tag bits are always the same (every occupied slot met is read back from disk)
    ids = DigestIdSet(str(tmp_path), hasher=lambda key: hash(key) & ~0xFF)
    distinct = [f"{n}-" + "x" * (n % 150) for n in range(20_000)]
    # Then through several growths every id is new once, and found again after
    assert all(ids.add(custom_id) for custom_id in distinct)
    assert not any(ids.add(custom_id) for custom_id in distinct[::97])
    assert len(ids) == len(distinct)
    ids.close()


UTF16 = (line(1) + b"\n" + line(2)).decode().encode("utf-16")


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (UTF16, "wrong_encoding", "UTF-16 or UTF-32"),
        ((line(1) + b"\n").decode().encode("utf-32"), "wrong_encoding", "UTF-16 or UTF-32"),
        (b"[\n" + line(1) + b",\n" + line(2) + b"\n]\n", "json_array", "JSON array, not JSON Lines"),
        (b"[" + line(1) + b", " + line(2) + b"]\n", "json_array", "JSON array, not JSON Lines"),
        (b"\n\n[\n  {\n", "json_array", "JSON array"),
        (b'{\n  "custom_id": "a",\n  "method": "POST"\n}\n', "not_json_lines", "spread over several lines"),
        (gzip.compress(line(1)), "gzip_not_declared", "rename it to .jsonl.gz"),
    ],
    ids=["utf16", "utf32", "pretty-array", "one-line-array", "array-after-blanks", "pretty-object", "gzip"],
)
def test_a_file_that_is_not_json_lines_gets_one_problem_that_says_so(
    tmp_path: Path, data: bytes, code: str, fragment: str
) -> None:
    result = split(data, tmp_path)
    assert codes(result) == [code]
    assert fragment in result.problems[0].message


def test_an_array_of_numbers_on_the_first_line_is_a_line_problem_not_a_file_one(tmp_path: Path) -> None:
    result = split(b"[1, 2, 3]\n" + line(1) + b"\n", tmp_path)
    assert codes(result) == ["not_an_object"]


def hostile(document: str) -> bytes:
    return document.encode("utf-8", "surrogatepass")


BODY = '"model": "m", "messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("bad", "code", "fragment"),
    [
        (b"\xff\xfe not utf-8 \xc3", "invalid_utf8", "not valid UTF-8 (byte 0xff at position 1)"),
        (hostile('{"custom_id": "\\ud800", "method": "POST", "url": "/v1/chat/completions", "body": {' + BODY + "}}"),
         "invalid_unicode", "lone surrogate"),
        (hostile('{"custom_id": "a\\udfff", "method": "POST", "url": "/v1/chat/completions", "body": {' + BODY + "}}"),
         "invalid_unicode", "lone surrogate"),
        ("x".encode("utf-16-le"), "wrong_encoding", "NUL bytes"),
        (line(9, stream="true"), "invalid_stream", 'not "true"'),
        (line(9, stream=1), "invalid_stream", "not 1"),
        (hostile('{"custom_id": "a", "custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {'
                 + BODY + "}}"), "duplicate_key", '"custom_id" twice'),
        (hostile('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {' + BODY
                 + ', "temperature": 1e400}}'), "number_out_of_range", "1e400"),
        (hostile('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {' + BODY
                 + ', "max_tokens": ' + "9" * 5000 + "}}"), "number_out_of_range", "out of range"),
        (b'{"custom_id": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nesting_too_deep", "too deeply"),
        (line(9, messages=[1]), "invalid_messages", "messages[0] must be an object"),
        (line(9, messages=[{"role": ["user"]}]), "invalid_messages", "messages[0].role must be one of"),
        (line(9, messages=[{"role": {"a": 1}}]), "invalid_messages", "messages[0].role must be one of"),
        (line(9, messages="hello"), "invalid_messages", "non-empty list"),
    ],
    ids=[
        "invalid-utf8", "lone-high-surrogate", "lone-low-surrogate", "utf16-line", "stream-string", "stream-number",
        "duplicate-key", "float-out-of-range", "5000-digit-integer", "deep-nesting", "message-not-object",
        "role-list", "role-object", "messages-string",
    ],
)  # fmt: skip
def test_values_the_api_cannot_take_are_refused_with_an_accurate_message(
    tmp_path: Path, bad: bytes, code: str, fragment: str
) -> None:
    result = split(line(1) + b"\n" + bad + b"\n" + line(2) + b"\n", tmp_path)
    assert codes(result) == [code]
    assert result.problems[0].line == 2
    assert fragment in result.problems[0].message, result.problems[0].message
    assert "Error" not in result.problems[0].message  # never a raw TypeError or AttributeError


def test_values_that_are_fine(tmp_path: Path) -> None:
    fine = [
        line(1, stream=False),
        line(2, max_tokens=10**300),  # large, but a double holds it
        line(3, temperature=1e-400),  # underflows to 0.0: a number a double holds
        hostile('{"custom_id": "\\ud83d\\ude00", "method": "post", "url": "/v1/chat/completions", "body": {'
                + BODY + "}}"),  # a surrogate pair is one emoji; the method check is case-insensitive
        line(5, messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
    ]  # fmt: skip
    result = split(b"\n".join(fine), tmp_path)
    assert result.valid, result.problems


def test_the_problem_codes_count_every_problem_whatever_the_cap(tmp_path: Path) -> None:
    data = b"\n".join(b"not json" for _ in range(1500))
    result = split(data, tmp_path)
    assert result.problem_count == 1500 and len(result.problems) == 1000
    assert result.problem_codes == {"invalid_json": 1500}


def test_a_first_line_nested_past_the_parsers_limit_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    result = split(b"[" * 100_000 + b"\n" + line(1) + b"\n", tmp_path)
    assert codes(result) == ["json_array"]


def test_a_lone_surrogate_deep_in_a_document_is_found_without_recursing(tmp_path: Path) -> None:
    depth = 900
    deep = b'{"custom_id": "d", "x": ' + b"[" * depth + b'"\\ud800"' + b"]" * depth + b"}"
    result = split(line(1) + b"\n" + deep + b"\n", tmp_path)
    assert codes(result) in (["invalid_unicode"], ["nesting_too_deep"])


@pytest.mark.parametrize("stray", [b"42", b"null", b"true", b"1.5", b'"text"', b"[1, 2]"])
def test_a_stray_value_that_is_not_an_object_is_a_problem_of_its_line_not_a_crash(tmp_path: Path, stray: bytes) -> None:
    result = validate_and_split(
        io.BytesIO(line(1) + b"\n" + stray + b"\n"), str(tmp_path), limits=limits(max_lines=50_000)
    )
    assert codes(result) == ["not_an_object"] and result.problems[0].line == 2


def test_a_repeated_key_inside_a_list_line_is_still_found(tmp_path: Path) -> None:
    body = line(1) + b'\n[{"a": 1, "a": 2}]\n'
    result = validate_and_split(io.BytesIO(body), str(tmp_path), limits=limits(max_lines=50_000))
    assert codes(result) == ["duplicate_key"]


def test_a_long_integer_is_quoted_as_written(tmp_path: Path) -> None:
    stream = json.loads(line(1))
    stream["body"]["stream"] = 18446744073709551616
    result = validate_and_split(
        io.BytesIO(json.dumps(stream).encode() + b"\n"), str(tmp_path), limits=limits(max_lines=50_000)
    )
    assert codes(result) == ["invalid_stream"]
    assert result.problems[0].message.endswith("not 18446744073709551616")
