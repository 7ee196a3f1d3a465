"""`outbox/<name>/results.csv`: one row per input line, in input order, for people and spreadsheets.

The API returns lines in any order, and a re-driven line's answer comes from a later round, so the rows
are put in order by custom_id: every final result line (each shard's output, and its errors that stayed
final) goes into an SQLite table on local disk, then each first-round shard's custom_ids (the list the
split wrote, in input order) are looked up in turn and written as CSV (RFC 4180: quoted where needed,
CRLF line ends, UTF-8), streamed to S3 in parts. Memory holds one shard's custom_ids and one upload part,
whatever the job's size; local disk, the table (about the size of the answers).
"""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from batchdrop.flow.results import MAX_RESULT_LINE_BYTES, shard_custom_ids
from batchdrop.integrations import s3io
from batchdrop.integrations.zerogpu import parse_result_line
from batchdrop.models import Job, Shard
from batchdrop.observability import logger
from batchdrop.services import Services
from batchdrop.validation import iter_physical_lines

RESULTS_CSV = "results.csv"
COLUMNS = (
    "custom_id",
    "status",
    "answer",
    "finish_reason",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "error_code",
    "error_message",
)
_ROWS_AT_ONCE = 1000


def row_of(content: bytes) -> tuple[Any, ...] | None:
    """The CSV row of one result line (None for a line without a custom_id)."""
    line = parse_result_line(content)
    if line.custom_id is None:
        return None
    body = line.body or {}
    model = body.get("model")
    usage = _object(body.get("usage"))
    tokens = [_count(usage.get(name)) for name in ("prompt_tokens", "completion_tokens")]
    if not line.succeeded:
        return (line.custom_id, "failed", None, None, model, *tokens, line.code or "unknown_error", line.message)
    choices = body.get("choices")
    first = _object(choices[0]) if isinstance(choices, list) and choices else {}
    answer = _object(first.get("message")).get("content")
    return (
        line.custom_id,
        "succeeded",
        answer if isinstance(answer, str) else None,
        first.get("finish_reason"),
        model,
        *tokens,
        None,
        None,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def write_results_csv(job: Job, shards: Sequence[Shard], services: Services) -> str:
    """Writes the job's results.csv (its shards are the committed ones, every one collected); returns its key."""
    key = f"{job.output_prefix}{RESULTS_CSV}"
    missing = 0
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        table = sqlite3.connect(os.path.join(directory, "rows.sqlite"))
        try:
            table.executescript(
                "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                "CREATE TABLE rows (custom_id TEXT PRIMARY KEY, status, answer, finish_reason, model,"
                " prompt_tokens, completion_tokens, error_code, error_message) WITHOUT ROWID;"
            )
            for shard in shards:
                for result_key in _final_result_keys(shard, job):
                    _load(table, result_key, job, directory, services)
            table.commit()
            rows = io.StringIO()
            writer = csv.writer(rows)  # RFC 4180: minimal quoting, CRLF
            writer.writerow(COLUMNS)
            with s3io.StreamedUpload(
                services.s3, job.input.bucket, key, content_type="text/csv; charset=utf-8"
            ) as sink:
                for custom_id in _input_order(shards, job, directory, services):
                    row = table.execute("SELECT * FROM rows WHERE custom_id = ?", (custom_id,)).fetchone()
                    if row is None:
                        missing += 1
                        row = (custom_id, "failed", None, None, None, None, None, "missing_result", "no result line")
                    writer.writerow(row)
                    if rows.tell() >= _TEXT_PIECE:
                        sink.write(rows.getvalue().encode("utf-8"))
                        rows.seek(0)
                        rows.truncate()
                sink.write(rows.getvalue().encode("utf-8"))
        finally:
            table.close()
    if missing:
        logger.warning("results.csv: input lines without a result line", extra={"lines": missing})
    return key


_TEXT_PIECE = 1024 * 1024


def _final_result_keys(shard: Shard, job: Job) -> list[str]:
    if shard.result is None:
        return []
    _, _, errors_key = shard.result.final(job.round)
    return [key for key in (shard.result.output_key, errors_key) if key]


def _load(table: sqlite3.Connection, key: str, job: Job, directory: str, services: Services) -> None:
    path = os.path.join(directory, "results.jsonl")
    try:
        s3io.download_file(services.s3, job.input.bucket, key, path)
    except ClientError as error:
        if not s3io.is_missing(error):
            raise
        logger.warning("results.csv: a result file is gone", extra={"key": key})
        return
    try:
        with open(path, "rb") as lines:
            rows = []
            for physical in iter_physical_lines(lines, max_line_bytes=MAX_RESULT_LINE_BYTES):
                if physical.too_long or not physical.content.strip():
                    continue
                row = row_of(physical.content)
                if row is not None:
                    rows.append(row)
                if len(rows) >= _ROWS_AT_ONCE:
                    table.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                    rows.clear()
            table.executemany("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    finally:
        os.remove(path)


def _input_order(shards: Sequence[Shard], job: Job, directory: str, services: Services) -> Iterator[str]:
    """Every input line's custom_id in input order: the first round's shards, one after the other (a shard
    read back from its lines leaves no copy behind)."""
    for shard in sorted((s for s in shards if s.round == 0), key=lambda s: s.index):
        with tempfile.TemporaryDirectory(dir=directory) as own:
            ids = shard_custom_ids(shard, job, own, services)
        yield from ids
