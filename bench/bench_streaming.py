"""Figures for the streaming passes alone (no AWS, no API): throughput and memory against file size.

    make bench            # or: .venv/bin/python bench/bench_streaming.py [--sizes 20000,100000,200000]

Prints one row per input size for: validate-and-split of a dropped file (the submit function's pass),
and the sorting of a result file (the collect function's pass), on realistic lines (bench_stack.py's:
1-3 messages of 100-2,000 characters, some non-ASCII). The time is the best of two untraced runs, beside
references taken in the same run on the same file: the stdlib's `json.loads` and orjson's `loads` of every
line (what a pass that reads each line's JSON can at best approach). Memory is the growth of a separate
process's peak RSS over the pass (nothing traced). A last pass splits --memory-lines short lines (default
2 million): the one part of the split that grows with the number of lines is its custom_id set.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson
from bench_stack import realistic_lines

from batchdrop.flow.split import SplitLimits, validate_and_split
from batchdrop.integrations.zerogpu import parse_result_line
from batchdrop.validation import iter_physical_lines


def make_input(lines: int, path: str) -> int:
    with open(path, "wb") as handle:
        for _, line in zip(range(lines), realistic_lines(seed=lines), strict=False):
            handle.write(line + b"\n")
    return os.path.getsize(path)


def make_short_input(lines: int, path: str) -> int:
    """Many short requests: the most custom_ids per byte."""
    with open(path, "wb") as handle:
        for n in range(lines):
            handle.write(
                b'{"custom_id":"request-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m",'
                b'"messages":[{"role":"user","content":"Say %d"}]}}\n' % (n, n)
            )
    return os.path.getsize(path)


def make_output(lines: int, path: str) -> int:
    with open(path, "wb") as handle:
        for n in range(lines):
            completion = {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "model": "zgpu-small",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"answer {n} " * (5 + n % 90)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 40, "completion_tokens": 40, "total_tokens": 80},
            }
            line = {
                "id": f"batch_req_{n}",
                "custom_id": f"req-{n}",
                "response": {"status_code": 200, "request_id": f"req_{n}", "body": completion},
            }
            handle.write(json.dumps(line).encode() + b"\n")
    return os.path.getsize(path)


LIMITS = SplitLimits(
    max_lines=50_000, max_bytes=100_000_000, max_input_bytes=10 * 1024**3, max_input_lines=5_000_000, max_batches=1000
)


def best_of(action: Callable[[], Any], repeat: int = 2) -> float:
    """The best untraced time of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


_RSS_CHILD = r"""
import os, resource, sys, tempfile
sys.path.insert(0, sys.argv[1])
from bench_streaming import LIMITS, sort_results, split_quietly
warm = os.path.join(sys.argv[4], "warm.jsonl")
open(warm, "wb").write(open(sys.argv[3], "rb").readline())
run = (lambda path: split_quietly(path, sys.argv[4])) if sys.argv[2] == "split" else sort_results
run(warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run(sys.argv[3])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / 1e6)
"""


def rss_growth(kind: str, path: str) -> float:
    """The peak RSS growth (MB) of a fresh process over one pass, after the same pass on one line."""
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as directory:
        done = subprocess.run(
            [sys.executable, "-c", _RSS_CHILD, os.path.dirname(os.path.abspath(__file__)), kind, path, directory],
            capture_output=True,
            text=True,
            check=True,
        )
    return float(done.stdout.strip().splitlines()[-1])


def measure(action: Callable[[], Any], kind: str, path: str, repeat: int = 2) -> tuple[float, float]:
    """The best untraced time of `repeat` runs, and the RSS growth of a separate run."""
    return best_of(action, repeat), rss_growth(kind, path)


def json_loads_every_line(path: str) -> None:
    """The reference: the stdlib parser over every line of the same file, nothing else."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                json.loads(line)


def orjson_loads_every_line(path: str) -> None:
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                orjson.loads(line)


def reference_seconds(path: str, repeat: int = 2) -> tuple[float, float]:
    return best_of(lambda: json_loads_every_line(path), repeat), best_of(lambda: orjson_loads_every_line(path), repeat)


def split_quietly(source: str, directory: str) -> None:
    with open(source, "rb") as stream:
        result = validate_and_split(stream, directory, limits=LIMITS)
    assert result.valid, result.problems[:3]
    for name in os.listdir(directory):
        if name.startswith("shard-"):
            os.remove(os.path.join(directory, name))


def sort_results(path: str) -> None:
    succeeded = 0
    with open(path, "rb") as handle:
        for physical in iter_physical_lines(handle, max_line_bytes=64 * 1024 * 1024):
            if parse_result_line(physical.content).succeeded:
                succeeded += 1


def row(name: str, lines: int, size: int, seconds: float, peak: float, references: tuple[float, float]) -> None:
    megabytes = size / 1e6
    rate, stdlib_rate, orjson_rate = megabytes / seconds, megabytes / references[0], megabytes / references[1]
    print(
        f"{name:<22}{lines:>9}{megabytes:>9.1f}{seconds:>9.2f}{rate:>8.1f}{lines / seconds:>10.0f}{peak:>9.1f}"
        f"{stdlib_rate:>12.1f}{rate / stdlib_rate:>7.2f}x{orjson_rate:>9.1f}{rate / orjson_rate:>7.2f}x"
    )


def split(source: str, shards: str, lines: int) -> None:
    with open(source, "rb") as stream:
        result = validate_and_split(stream, shards, limits=LIMITS)
    assert result.valid and result.lines == lines
    for name in os.listdir(shards):
        os.remove(os.path.join(shards, name))


def custom_ids_read(source: str, directory: str) -> None:
    """What collect reads to learn a shard's custom_ids: the shard itself (before) or the list the split
    writes beside it (now); one batch's worth of lines."""
    with open(source, "rb") as stream:
        validate_and_split(stream, directory, limits=LIMITS)
    shard, ids = os.path.join(directory, "shard-00000.jsonl"), os.path.join(directory, "shard-00000.ids")

    def from_shard() -> None:
        with open(shard, "rb") as handle:
            {json.loads(physical.content)["custom_id"]: None for physical in iter_physical_lines(handle)}

    def from_list() -> None:
        with open(ids, "rb") as handle:
            {json.loads(line): None for line in handle}

    before, after = best_of(from_shard), best_of(from_list)
    shard_mb, ids_mb = os.path.getsize(shard) / 1e6, os.path.getsize(ids) / 1e6
    print(f"\n{'collect: custom_ids of one shard':<34}{'MB read':>9}{'seconds':>9}")
    print(f"{'  from the shard (before)':<34}{shard_mb:>9.1f}{before:>9.3f}")
    print(
        f"{'  from its custom_id list (now)':<34}{ids_mb:>9.2f}{after:>9.3f}   {before / after:.0f}x faster, "
        f"{shard_mb / ids_mb:.0f}x fewer bytes from S3"
    )
    for name in os.listdir(directory):
        os.remove(os.path.join(directory, name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="4000,40000", help="line counts, comma-separated (~2.5 KB a line)")
    parser.add_argument("--memory-lines", type=int, default=2_000_000, help="short lines for the memory pass")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(
        f"{'pass':<22}{'lines':>9}{'file MB':>9}{'seconds':>9}{'MB/s':>8}{'lines/s':>10}{'RSS +MB':>9}"
        f"{'json.loads':>12}{'ratio':>8}{'orjson':>9}{'ratio':>8}"
    )
    with tempfile.TemporaryDirectory() as directory:
        source, output = os.path.join(directory, "input.jsonl"), os.path.join(directory, "output.jsonl")
        shards = os.path.join(directory, "shards")
        os.makedirs(shards)
        for lines in sizes:
            size = make_input(lines, source)
            seconds, peak = measure(lambda: split(source, shards, lines), "split", source)  # noqa: B023
            row("validate+split", lines, size, seconds, peak, reference_seconds(source))
            size = make_output(lines, output)
            seconds, peak = measure(lambda: sort_results(output), "sort", output)
            row("collect: sort results", lines, size, seconds, peak, reference_seconds(output))
        custom_ids_read(source, shards)
        if args.memory_lines:
            short = os.path.join(directory, "short.jsonl")
            size = make_short_input(args.memory_lines, short)
            started = time.perf_counter()
            growth = rss_growth("split", short)
            print(
                f"\n{'memory: validate+split':<22}{args.memory_lines:>9}{size / 1e6:>9.1f}"
                f"{time.perf_counter() - started:>9.1f}s  RSS +{growth:.1f} MB  (short lines: the custom_id set "
                "is the part that grows)"
            )
    print("\nMB/s: best of two untraced runs; json.loads and orjson: each parser alone on every line of the same")
    print("file, same run. RSS +MB: a separate process's peak RSS growth over one pass, after a one-line warm-up.")


if __name__ == "__main__":
    main()
