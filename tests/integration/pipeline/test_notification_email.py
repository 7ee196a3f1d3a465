"""The SNS message reads as an email a person can act on: outcome, counts, time, re-drives, top errors,
tokens and cost, and pre-signed links that open the results."""

from __future__ import annotations

import json
from typing import Any

import requests
from pipeline_harness import Pipeline, chat_line, jsonl


def the_message(pipeline: Pipeline) -> dict[str, Any]:
    pipeline.read_notifications()
    (message,) = pipeline.sns_messages
    return message


def test_the_message_says_what_happened_what_it_cost_and_links_the_results(make_pipeline: Any) -> None:
    # Given a 20-line file of a priced model: 3 lines fail for good, 2 heal in a second round
    pipeline: Pipeline = make_pipeline()
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"m-3", "m-4", "m-5"})
    pipeline.emulator.faults.line_errors("rate_limit_exceeded", custom_ids={"m-10", "m-11"}, times_per_line=1)
    lines = [chat_line(f"m-{i}") for i in range(20)]
    for line in lines:
        line["body"]["model"] = "gpt-oss-120b"
    pipeline.drop("inbox/team/claims.jsonl", jsonl(lines))
    pipeline.run()

    # When the SNS message arrives
    message = the_message(pipeline)
    text = message["Message"]

    # Then its subject names the input and the outcome, and its text reads as a summary with links
    assert message["Subject"] == "batchdrop: claims.jsonl partial (17 of 20 lines)"
    report = pipeline.report("team/claims")
    assert text.startswith("inbox/team/claims.jsonl: partial.\n")
    assert "Lines: 20 in total: 17 succeeded, 3 failed." in text
    assert "Took: " in text
    assert "Re-driven: 2 line(s) went again in 1 more round(s); 2 recovered." in text
    assert "Top errors: invalid_request_error 3 (errors.jsonl has each line)." in text
    tokens = report["usage"]["total"]
    assert f"Tokens: {tokens['prompt_tokens']:,} in, {tokens['completion_tokens']:,} out (gpt-oss-120b)." in text
    assert "Cost: 0.0000" in text and " USD, at prices as of 2026-08" in text
    assert "Open the results (links valid for up to 24 hours):" in text

    # And each link opens its file
    links = dict(line.strip().split(": ", 1) for line in text.splitlines() if line.startswith("  "))
    assert list(links) == ["results.csv (a row per line)", "output.jsonl", "errors.jsonl", "report.json"]
    for name, key in (("results.csv (a row per line)", "results.csv"), ("report.json", "report.json")):
        assert links[name].startswith("https://") and "Signature=" in links[name]
        fetched = requests.get(links[name], timeout=10)
        assert fetched.status_code == 200
        assert fetched.content == pipeline.read(f"outbox/team/claims/{key}")
    assert json.loads(requests.get(links["report.json"], timeout=10).content)["outcome"] == "partial"


def test_with_no_link_hours_the_message_has_the_s3_uris(make_pipeline: Any) -> None:
    pipeline: Pipeline = make_pipeline(RESULT_LINK_HOURS=0)
    pipeline.drop("inbox/plain.jsonl", jsonl([chat_line("p-1")]))
    pipeline.run()
    text = the_message(pipeline)["Message"]
    assert "Results:\n" in text and "  report.json: s3://" in text and "Signature" not in text
    assert "Cost: not known (no model of this job is in the price table; see PriceTable)." in text


def test_a_rejected_file_s_message_says_nothing_was_sent(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/bad.jsonl", b'{"custom_id": "x"}\nnot json\n')
    text = the_message(pipeline)["Message"]
    assert text.startswith("inbox/bad.jsonl: rejected.\n")
    assert "nothing was sent to the API. report.json names each line and the fix." in text
    assert "  report.json: https://" in text


# -- provider-side clean-up ---------------------------------------------------------------------------


def file_ids_of(pipeline: Pipeline, name: str) -> set[str]:
    return {
        file_id
        for batch in pipeline.report(name)["batches"]
        for file_id in (batch["input_file_id"], batch["output_file_id"], batch["error_file_id"])
        if file_id
    }


def test_with_delete_provider_files_the_api_keeps_none_of_the_job_s_files(make_pipeline: Any) -> None:
    # Given a job of two batches, one line failing
    pipeline: Pipeline = make_pipeline(DELETE_PROVIDER_FILES="true", MAX_LINES_PER_BATCH=3)
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"d-1"})
    pipeline.drop("inbox/tidy.jsonl", jsonl([chat_line(f"d-{i}") for i in range(5)]))
    pipeline.run()

    # Then once it has ended, every file it had at the API is deleted, once each, and the results are in S3
    report = pipeline.report("tidy")
    ids = file_ids_of(pipeline, "tidy")
    assert len(ids) == 5  # two inputs, two outputs, one error file
    deletes = [call.path for call in pipeline.emulator.calls if call.method == "DELETE"]
    assert sorted(deletes) == sorted(f"/v1/files/{file_id}" for file_id in ids)
    assert report["counts"] == {"total": 5, "succeeded": 4, "failed": 1}
    assert len(pipeline.lines("outbox/tidy/output.jsonl")) == 4


def test_a_failed_delete_never_fails_the_job(make_pipeline: Any) -> None:
    from batchdrop_tools.emulator import Fault

    pipeline: Pipeline = make_pipeline(DELETE_PROVIDER_FILES="true")
    pipeline.emulator.faults.add(Fault.http(500, method="DELETE", path="/v1/files/*", times=None))
    pipeline.drop("inbox/sticky.jsonl", jsonl([chat_line("s-1")]))
    pipeline.run()
    assert pipeline.report("sticky")["outcome"] == "succeeded"
    pipeline.read_notifications()
    assert len(pipeline.finished_events) == 1


def test_by_default_the_provider_files_stay(pipeline: Pipeline) -> None:
    pipeline.drop("inbox/kept.jsonl", jsonl([chat_line("k-1")]))
    pipeline.run()
    assert not [call for call in pipeline.emulator.calls if call.method == "DELETE"]
