"""results.csv: one row per input line, in input order, whichever round answered it, that Python's csv
module and pandas read back with every answer intact (commas, quotes, newlines, non-ASCII)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pandas
from pipeline_harness import Pipeline, chat_line, jsonl

from batchdrop.flow.results_table import COLUMNS

QUESTIONS = [
    'a, b and "c"',
    "line one\nline two\r\nline three",
    "naïve café — 東京 🚀",
    "plain",
    "",
    "trailing comma,",
    '"quoted"',
]


def questions(n: int) -> list[dict[str, Any]]:
    return [chat_line(f"q-{i:03d}", f"{QUESTIONS[i % len(QUESTIONS)]} #{i}") for i in range(n)]


def test_one_row_per_input_line_in_input_order_across_rounds(make_pipeline: Any) -> None:
    # Given 30 lines in shards of 4, one failing for good, five answered only on their second attempt
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=4)
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"q-007"})
    pipeline.emulator.faults.line_errors(
        "rate_limit_exceeded", custom_ids={f"q-{i:03d}" for i in (1, 5, 12, 13, 29)}, times_per_line=1
    )
    pipeline.drop("inbox/table.jsonl", jsonl(questions(30)))
    pipeline.run()
    report = pipeline.report("table")
    assert len(report["rounds"]) == 2
    assert report["outputs"]["results_csv"].endswith("/outbox/table/results.csv")

    # When the table is read as a person's tools read it
    raw = pipeline.read("outbox/table/results.csv")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    frame = pandas.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False)

    # Then there is a row per input line, in input order, each answer exactly as output.jsonl has it
    assert raw.startswith(",".join(COLUMNS).encode() + b"\r\n")
    assert [row["custom_id"] for row in rows] == [f"q-{i:03d}" for i in range(30)]
    answers = {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
        for line in pipeline.lines("outbox/table/output.jsonl")
    }
    for i, row in enumerate(rows):
        if row["custom_id"] == "q-007":
            assert (row["status"], row["error_code"]) == ("failed", "invalid_request_error")
            assert row["answer"] == "" and row["error_message"]
            continue
        assert row["status"] == "succeeded" and row["answer"] == answers[row["custom_id"]]
        assert QUESTIONS[i % len(QUESTIONS)] in row["answer"]
        assert row["finish_reason"] == "stop" and row["model"] == "zgpu-small"
        assert int(row["prompt_tokens"]) > 0 and int(row["completion_tokens"]) > 0
    assert list(frame.columns) == list(COLUMNS)
    assert frame["custom_id"].tolist() == [row["custom_id"] for row in rows]
    assert frame["answer"].tolist() == [row["answer"] for row in rows]


def test_it_can_be_switched_off(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(RESULTS_CSV="false")
    pipeline.drop("inbox/nocsv.jsonl", jsonl(questions(3)))
    pipeline.run()
    report = pipeline.report("nocsv")
    assert "results_csv" not in report["outputs"]
    listed = pipeline.s3.list_objects_v2(Bucket=pipeline.services.settings.bucket_name, Prefix="outbox/nocsv/")
    assert sorted(item["Key"].rsplit("/", 1)[1] for item in listed["Contents"]) == [
        "errors.jsonl",
        "output.jsonl",
        "report.json",
        "status.json",
    ]


def test_a_table_that_cannot_be_written_never_stops_the_job(make_pipeline: Any, monkeypatch: Any) -> None:
    from batchdrop.flow import results_table
    from batchdrop.integrations.shard_copies import ShardSourceMissing

    # Given a job whose shard's custom_ids cannot be read back any more (list, copy and input all gone)
    def gone(*_: Any) -> Any:
        raise ShardSourceMissing("shard 0 of job-x: the input object is gone too")

    monkeypatch.setattr(results_table, "shard_custom_ids", gone)
    pipeline: Pipeline = make_pipeline()
    pipeline.drop("inbox/notable.jsonl", jsonl(questions(3)))
    pipeline.run()

    # Then the job still ends, reported and announced, without a results.csv
    report = pipeline.report("notable")
    assert report["outcome"] == "succeeded" and "results_csv" not in report["outputs"]
    listed = pipeline.s3.list_objects_v2(Bucket=pipeline.services.settings.bucket_name, Prefix="outbox/notable/")
    assert "outbox/notable/results.csv" not in [item["Key"] for item in listed["Contents"]]
    pipeline.read_notifications()
    assert len(pipeline.finished_events) == 1
