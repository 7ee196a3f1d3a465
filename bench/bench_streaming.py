"""Figures for the streaming paths: throughput and peak memory against file size.

    make bench            # or: .venv/bin/python bench/bench_streaming.py [--sizes 20000,100000,200000]

Prints one row per input size for: validate-and-split of a dropped file (the submit function's pass),
and the sorting of a result file (the collect function's pass). The time is the best of two untraced runs,
beside a reference taken in the same run on the same file: the stdlib's `json.loads` of every line (what
the pass can at best approach without a faster parser). Peak memory is measured in a third run, under
tracemalloc (Python allocations; tracing slows Python code several times, so it is never timed); if memory
were proportional to the file, the peak column would grow with the size column.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from batchdrop.flow.split import SplitLimits, validate_and_split
from batchdrop.integrations.zerogpu import parse_result_line
from batchdrop.validation import iter_physical_lines


def make_input(lines: int, path: str) -> int:
    with open(path, "wb") as handle:
        for n in range(lines):
            body = {
                "model": "zgpu-small",
                "messages": [{"role": "user", "content": f"Question number {n}: " + "lorem ipsum " * 30}],
            }
            handle.write(
                json.dumps(
                    {"custom_id": f"req-{n}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                ).encode()
                + b"\n"
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
                    {"index": 0, "message": {"role": "assistant", "content": "answer " * 40}, "finish_reason": "stop"}
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


def measure(action: Callable[[], Any], repeat: int = 2) -> tuple[float, float]:
    """The best untraced time of `repeat` runs, and the peak of Python allocations of one traced run."""
    best = best_of(action, repeat)
    tracemalloc.start()
    action()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak / 1e6


def json_loads_every_line(path: str) -> None:
    """The reference: the stdlib parser over every line of the same file, nothing else."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                json.loads(line)


def reference_seconds(path: str, repeat: int = 2) -> float:
    return best_of(lambda: json_loads_every_line(path), repeat)


def sort_results(path: str) -> None:
    succeeded = 0
    with open(path, "rb") as handle:
        for physical in iter_physical_lines(handle, max_line_bytes=64 * 1024 * 1024):
            if parse_result_line(physical.content).succeeded:
                succeeded += 1


def row(name: str, lines: int, size: int, seconds: float, peak: float, reference: float) -> None:
    megabytes = size / 1e6
    rate, reference_rate = megabytes / seconds, megabytes / reference
    print(
        f"{name:<22}{lines:>9}{megabytes:>9.1f}{seconds:>9.2f}{rate:>8.1f}{lines / seconds:>10.0f}{peak:>9.1f}"
        f"{reference_rate:>12.1f}{rate / reference_rate:>9.2f}x"
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


def cold_imports() -> None:
    """Import time of each handler in a fresh interpreter (the import part of a Lambda cold start)."""
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    print(f"\n{'handler import':<22}{'best of 5 (s)':>14}")
    for function, module in (("submit", "submit_handler"), ("poll", "poll_handler"), ("collect", "collect_handler")):
        script = (
            f"import sys, time; sys.path.insert(0, 'functions/{function}'); started = time.perf_counter(); "
            f"import {module}; print(time.perf_counter() - started)"
        )
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, check=True
                ).stdout
            )
            for _ in range(5)
        ]
        print(f"{module:<22}{min(runs):>14.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="20000,100000,200000", help="line counts, comma-separated")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print(
        f"{'pass':<22}{'lines':>9}{'file MB':>9}{'seconds':>9}{'MB/s':>8}{'lines/s':>10}{'peak MB':>9}"
        f"{'json.loads':>12}{'ratio':>10}"
    )
    with tempfile.TemporaryDirectory() as directory:
        source, output = os.path.join(directory, "input.jsonl"), os.path.join(directory, "output.jsonl")
        shards = os.path.join(directory, "shards")
        os.makedirs(shards)
        for lines in sizes:
            size = make_input(lines, source)
            seconds, peak = measure(lambda: split(source, shards, lines))  # noqa: B023 - called at once
            row("validate+split", lines, size, seconds, peak, reference_seconds(source))
            size = make_output(lines, output)
            seconds, peak = measure(lambda: sort_results(output))
            row("collect: sort results", lines, size, seconds, peak, reference_seconds(output))
        custom_ids_read(source, shards)
    print("\nMB/s: best of two untraced runs; json.loads: the stdlib parser alone on the same file, same run.")
    print("peak MB is tracemalloc's peak of Python allocations during a third run; the custom_id set of")
    print("validate+split is the one part that grows with the number of lines (duplicates across the file).")
    cold_imports()


if __name__ == "__main__":
    main()
