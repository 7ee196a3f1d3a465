"""`batchdrop validate FILE...`: the pipeline's own validation, offline (no AWS, no API).

Each file is read as the submit function reads it (the same rules, limits and messages; `.gz` unzipped),
and its problems are printed with their line numbers; the estimate of what it would use is printed too.
Exit code: 0 when every file would be accepted, 1 when one would be rejected, 2 when one cannot be read.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from typing import IO, cast

from batchdrop.estimate import TokenEstimate
from batchdrop.flow.split import SplitLimits, validate_and_split
from batchdrop.pricing import DEFAULT_PRICES
from batchdrop.settings import Settings

_SHOWN = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="JSONL files of requests (.jsonl or .jsonl.gz)")
    parser.add_argument("--all", action="store_true", help=f"print every problem (default: the first {_SHOWN})")


def run(args: argparse.Namespace) -> int:
    worst = 0
    for path in args.files:
        worst = max(worst, _validate(path, show_all=args.all))
    return worst


def _limits() -> SplitLimits:
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    return SplitLimits(
        max_lines=defaults["max_lines_per_batch"],
        max_bytes=defaults["max_bytes_per_batch"],
        max_input_bytes=defaults["max_input_bytes"],
        max_input_lines=defaults["max_input_lines"],
        max_batches=defaults["max_batches_per_input"],
    )


def _validate(path: str, *, show_all: bool) -> int:
    zipped = path.lower().endswith(".gz")
    try:
        # As the pipeline reads a .gz key: unzipped on the way (a corrupt one is `invalid_gzip`).
        stream = cast(IO[bytes], gzip.open(path, "rb") if zipped else open(path, "rb"))  # noqa: SIM115
        if not zipped:
            stream.read(0)  # a directory, say, fails here
    except OSError as error:
        print(f"{path}: cannot be read: {error.strerror or error}", file=sys.stderr)
        return 2
    estimate = TokenEstimate()
    with stream, tempfile.TemporaryDirectory() as directory:
        split = validate_and_split(
            stream, directory, limits=_limits(), is_gzip=zipped, keep_ids=False, estimate=estimate
        )
    if not path.lower().endswith((".jsonl", ".jsonl.gz")):
        print(f"{path}: note: only .jsonl and .jsonl.gz keys are run when dropped (the extension in any case)")
    if split.valid:
        total = estimate.total()
        cost, _ = estimate.cost(DEFAULT_PRICES)
        priced = f", up to {cost:.6f} USD at list prices" if cost is not None else ""
        print(
            f"{path}: valid: {_count(split.lines, 'line')} in {_count(len(split.shards), 'batch')}; "
            f"about {total.input_tokens:,} input tokens and up to {total.max_output_tokens:,} output tokens{priced}"
        )
        return 0
    shown = split.problems if show_all else split.problems[:_SHOWN]
    for problem in shown:
        where = f"line {problem.line}" if problem.line is not None else "file"
        fix = f" → {problem.fix}" if problem.fix else ""
        print(f"{path}: {where}: {problem.code.value}: {problem.message}{fix}")
    more = split.problem_count - len(shown)
    if more > 0:
        hint = "" if show_all else " (--all prints them all, up to the first 1,000)"
        print(f"{path}: ... and {_count(more, 'more problem')}{hint}")
    print(
        f"{path}: rejected: {_count(split.problem_count, 'problem')} in {_count(split.lines, 'line')}; "
        "nothing would be sent to the API"
    )
    return 1


def _count(n: int, thing: str) -> str:
    return f"{n:,} {thing}{'' if n == 1 else 'es' if thing.endswith('ch') else 's'}"
