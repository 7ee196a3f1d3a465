"""Ingest messages -> submit requests; each source's key decoded exactly once."""

from __future__ import annotations

import json

import pytest
from testsupport import load_event

from batchdrop.messages import InvalidMessage, RejectedRequest, parse_ingest_message


def test_the_sample_object_created_event_gives_both_key_readings_decoded_first() -> None:
    body = load_event("sqs_object_created.json")["Records"][0]["body"]
    (request,) = parse_ingest_message(body)
    raw_key = json.loads(body)["detail"]["object"]["key"]
    assert request.bucket == "batchdrop-local"
    assert request.key_candidates[-1] == raw_key
    assert request.version_id
    assert request.etag


def test_a_form_encoded_eventbridge_key_is_decoded_once() -> None:
    body = json.dumps(
        {
            "detail-type": "Object Created",
            "source": "aws.s3",
            "detail": {"bucket": {"name": "b"}, "object": {"key": "inbox/a+b%2B%C3%BC.jsonl"}},
        }
    )
    (request,) = parse_ingest_message(body)
    assert request.key_candidates == ("inbox/a b+ü.jsonl", "inbox/a+b%2B%C3%BC.jsonl")


def test_moto_style_etag_spelling_is_read() -> None:
    body = json.dumps(
        {
            "detail-type": "Object Created",
            "detail": {"bucket": {"name": "b"}, "object": {"key": "inbox/x.jsonl", "eTag": "abc"}},
        }
    )
    assert parse_ingest_message(body)[0].etag == "abc"


def test_a_submit_batch_job_key_is_taken_as_written() -> None:
    body = load_event("sqs_submit_batch_job.json")["Records"][0]["body"]
    (request,) = parse_ingest_message(body)
    detail = json.loads(body)["detail"]
    assert request.key_candidates == (detail["key"],)
    assert request.source == "submit-event"


def test_a_direct_s3_notification_key_is_form_decoded() -> None:
    body = json.dumps(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "s3": {
                        "bucket": {"name": "b"},
                        "object": {"key": "inbox/my+file%2B.jsonl", "eTag": "e", "versionId": "v"},
                    },
                }
            ]
        }
    )
    (request,) = parse_ingest_message(body)
    assert request.key_candidates == ("inbox/my file+.jsonl",)
    assert request.version_id == "v"


def test_the_s3_test_event_is_nothing_to_do() -> None:
    assert parse_ingest_message(json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})) == []


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        json.dumps({"detail-type": "Something Else", "detail": {}}),
        json.dumps({"detail-type": "Object Created", "detail": {"bucket": {}}}),
    ],
)
def test_malformed_messages_raise_a_typed_error(body: str) -> None:
    with pytest.raises(InvalidMessage):
        parse_ingest_message(body)


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        ({"bucket": "b"}, "no key"),
        ({"key": "inbox/x.jsonl"}, "no bucket"),
        (None, "not an object"),
        ("inbox/x.jsonl", "not an object"),
        ({"bucket": "b", "key": "x.jsonl", "version_id": 7}, "version_id"),
    ],
)
def test_a_submit_request_that_cannot_be_taken_is_answered_not_raised(detail: object, reason: str) -> None:
    # Given a Submit Batch Job event whose detail is unusable
    body = json.dumps({"detail-type": "Submit Batch Job"} | ({} if detail is None else {"detail": detail}))
    # Then it parses into a rejection that echoes the request and says what is wrong
    (parsed,) = parse_ingest_message(body)
    assert isinstance(parsed, RejectedRequest)
    assert parsed.detail == detail
    assert reason in parsed.reason and "bucket" in parsed.reason
