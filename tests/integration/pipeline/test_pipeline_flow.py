"""The whole flow in-process: drop -> submit -> poll -> collect -> merged results, report, one notice."""

from __future__ import annotations

from pipeline_harness import Pipeline, api_calls, chat_line, jsonl
from testsupport import assert_matches_schema


def test_a_valid_file_ends_with_merged_results_a_report_and_one_notification(pipeline: Pipeline) -> None:
    # Given a file of three requests dropped in the inbox
    pipeline.drop("inbox/capitals.jsonl", jsonl([chat_line(f"q-{n}", f"capital {n}?") for n in (1, 2, 3)]))

    # When the schedule runs until the batch ends
    pipeline.run()

    # Then every line has its answer in output.jsonl, and the report and the notices say so
    output = pipeline.lines("outbox/capitals/output.jsonl")
    assert sorted(line["custom_id"] for line in output) == ["q-1", "q-2", "q-3"]
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"]
    assert pipeline.read("outbox/capitals/errors.jsonl") == b""
    report = pipeline.report("capitals")
    assert report["outcome"] == "succeeded"
    assert report["counts"] == {"total": 3, "succeeded": 3, "failed": 0}
    assert report["schema_version"] == 1
    assert len(report["batches"]) == 1 and report["batches"][0]["status"] == "completed"
    assert report["outputs"]["output"] == "s3://batchdrop-test/outbox/capitals/output.jsonl"
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["succeeded"]
    assert len(pipeline.submitted_events) == 1
    assert pipeline.submitted_events[0]["detail"]["batch_ids"] == [report["batches"][0]["batch_id"]]
    assert len(pipeline.sns_messages) == 1
    assert pipeline.sns_messages[0]["MessageAttributes"]["outcome"]["Value"] == "succeeded"
    assert api_calls(pipeline.emulator).count(("POST", "/v1/batches")) == 1
    assert_matches_schema(report, "report.schema.json")
    assert_matches_schema(pipeline.finished_events[0]["detail"], "batch-job-finished.schema.json")
    assert_matches_schema(pipeline.submitted_events[0]["detail"], "batch-job-submitted.schema.json")
