"""A file with an invalid line is rejected whole: report.json names each bad line; no API call is made."""

from __future__ import annotations

import json

import pytest
from pipeline_harness import Pipeline, chat_line, jsonl
from testsupport import assert_matches_schema

GOOD = chat_line("ok-1")
HUGE = json.dumps(chat_line("big", "x" * 1_048_600)).encode()

RULES = [
    ("invalid_json", b'{"custom_id": "a", ', "Line 3 is not valid JSON"),
    (
        "invalid_utf8",
        b"\xff\xfe not utf-8",
        "Line 3 is not valid UTF-8 (byte 0xff at position 1): save the file as UTF-8",
    ),
    ("invalid_json", json.dumps(chat_line("nan", temperature=float("nan"))).encode(), "Line 3 is not valid JSON"),
    ("not_an_object", b"[1, 2, 3]", "Line 3 must be a JSON object"),
    ("line_too_large", HUGE, "Line 3 exceeds maximum size of 1048576 bytes"),
    (
        "missing_custom_id",
        json.dumps({k: v for k, v in chat_line("x").items() if k != "custom_id"}).encode(),
        "Line 3 is missing custom_id",
    ),
    ("missing_custom_id", json.dumps(chat_line("")).encode(), "Line 3 is missing custom_id"),
    (
        "missing_custom_id",
        json.dumps(chat_line("x") | {"custom_id": 7}).encode(),
        "Line 3 is missing custom_id",
    ),
    ("duplicate_custom_id", json.dumps(chat_line("ok-1")).encode(), 'Line 3 duplicates custom_id "ok-1"'),
    ("invalid_method", json.dumps(chat_line("x", method="GET")).encode(), 'Line 3 method must be "POST"'),
    (
        "missing_url",
        json.dumps({k: v for k, v in chat_line("x").items() if k != "url"}).encode(),
        "Line 3 is missing url",
    ),
    (
        "url_not_allowed",
        json.dumps(chat_line("x", url="/v1/embeddings")).encode(),
        'Line 3 url "/v1/embeddings" is not an allowed batch endpoint',
    ),
    (
        "url_not_allowed",
        json.dumps(chat_line("x", url="/v1/chat/completions/")).encode(),
        'Line 3 url "/v1/chat/completions/" is not an allowed batch endpoint',
    ),
    ("missing_body", json.dumps(chat_line("x", body={})).encode(), "Line 3 is missing body"),
    ("missing_body", json.dumps(chat_line("x", body="hello")).encode(), "Line 3 is missing body"),
    (
        "stream_not_supported",
        json.dumps(
            chat_line("x", body={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        ).encode(),
        "Line 3 has stream=true; streaming is not supported in batch mode",
    ),
    (
        "missing_model",
        json.dumps(chat_line("x", body={"messages": [{"role": "user", "content": "hi"}]})).encode(),
        "Line 3 body is missing model",
    ),
    (
        "invalid_messages",
        json.dumps(chat_line("x", body={"model": "m", "messages": []})).encode(),
        "Line 3 body.messages must be a non-empty list of messages",
    ),
    (
        "invalid_messages",
        json.dumps(chat_line("x", body={"model": "m", "messages": [{"role": "robot", "content": "hi"}]})).encode(),
        "Line 3 body.messages[0].role must be one of user, assistant, system, tool, developer",
    ),
]


WITH_A_FIX = {
    "invalid_json",
    "not_an_object",
    "missing_custom_id",
    "duplicate_custom_id",
    "invalid_method",
    "missing_url",
    "url_not_allowed",
    "url_mismatch",
    "missing_body",
    "stream_not_supported",
    "missing_model",
    "invalid_stream",
    "invalid_messages",
}


@pytest.mark.parametrize(("code", "bad_line", "message"), RULES, ids=[f"{rule[0]}-{n}" for n, rule in enumerate(RULES)])
def test_each_rule_rejects_the_file_naming_the_line_without_any_api_call(
    pipeline: Pipeline, code: str, bad_line: bytes, message: str
) -> None:
    # Given a file whose third line breaks one rule (the first line is blank: still counted)
    body = b"\n" + jsonl([GOOD]) + bad_line + b"\n" + jsonl([chat_line("ok-2")])

    # When it is dropped
    pipeline.drop("inbox/bad.jsonl", body)
    pipeline.read_notifications()

    # Then the report names the line, and nothing at all reached the API
    report = pipeline.report("bad")
    assert report["outcome"] == "rejected"
    (problem,) = report["validation_errors"]
    assert {name: problem[name] for name in ("line", "code", "message")} == {
        "line": 3,
        "code": code,
        "message": message,
    }
    # and, beside the API's own wording, what to change and what was found
    if code in WITH_A_FIX:
        assert "(got " in problem["fix"], problem
    assert report["validation_error_count"] == 1
    assert report["batches"] == []
    assert pipeline.emulator.calls == []
    assert [event["detail"]["outcome"] for event in pipeline.finished_events] == ["rejected"]
    assert len(pipeline.sns_messages) == 1
    assert pipeline.sns_messages[0]["MessageAttributes"]["outcome"]["Value"] == "rejected"
    assert_matches_schema(report, "report.schema.json")
    assert_matches_schema(pipeline.finished_events[0]["detail"], "batch-job-finished.schema.json")


@pytest.mark.parametrize("body", [b"", b"\n\n  \n"], ids=["empty", "blank-lines-only"])
def test_an_empty_file_is_rejected(pipeline: Pipeline, body: bytes) -> None:
    pipeline.drop("inbox/empty.jsonl", body)

    report = pipeline.report("empty")
    assert report["outcome"] == "rejected"
    assert report["validation_errors"] == [
        {"line": None, "code": "empty_file", "message": "Input file contains no JSONL lines"}
    ]
    assert pipeline.emulator.calls == []


def test_every_bad_line_is_named_and_a_long_list_is_capped_with_its_total(pipeline: Pipeline) -> None:
    # Given 1,200 bad lines among good ones
    lines = []
    for n in range(1, 2401):
        lines.append(b"not json" if n % 2 == 0 else json.dumps(chat_line(f"id-{n}")).encode())
    pipeline.drop("inbox/many-bad.jsonl", jsonl(lines))

    report = pipeline.report("many-bad")
    assert report["outcome"] == "rejected"
    assert report["validation_error_count"] == 1200
    assert report["validation_errors_truncated"] is True
    assert len(report["validation_errors"]) == 1000
    assert [error["line"] for error in report["validation_errors"][:3]] == [2, 4, 6]
    assert report["counts"]["total"] == 2400
    assert pipeline.emulator.calls == []


def test_a_rejected_input_is_announced_once_even_when_the_event_comes_again(pipeline: Pipeline) -> None:
    obj = pipeline.put_input("inbox/twice.jsonl", b"oops\n")
    for _ in range(3):
        pipeline.deliver(pipeline.object_created_body(obj))
    pipeline.read_notifications()

    assert len(pipeline.finished_events) == 1
    assert len(pipeline.sns_messages) == 1
    assert pipeline.emulator.calls == []
