"""Batch create: synchronous validation with ZeroGPU's exact messages and lines (§1.4); the batch object."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from emulator_testkit import START, Api, chat_line, jsonl

BATCH_ID = re.compile(r"^batch_[0-9A-HJKMNP-TV-Z]{26}$")
BATCH_FIELDS = {
    "id",
    "object",
    "endpoint",
    "errors",
    "input_file_id",
    "completion_window",
    "status",
    "output_file_id",
    "error_file_id",
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "request_counts",
    "metadata",
}


def _line(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


GOOD = _line(custom_id="ok-1", method="POST", url="/v1/chat/completions", body={"model": "m", "messages": []})
GOOD_2 = _line(custom_id="ok-2", method="post", url="/v1/chat/completions", body={"model": "m"})

# (file content, message, line)
LINE_PROBLEMS: list[tuple[bytes, str, int]] = [
    (GOOD + b"\n{not json\n", "Line 2 is not valid JSON", 2),
    (b"[1, 2]\n", "Line 1 must be a JSON object", 1),
    (
        GOOD + b'\n{"custom_id": "' + b"x" * 1_048_600 + b'"}\n',
        "Line 2 exceeds maximum size of 1048576 bytes",
        2,
    ),
    (_line(method="POST", url="/v1/chat/completions", body={"model": "m"}), "Line 1 is missing custom_id", 1),
    (
        _line(custom_id="", method="POST", url="/v1/chat/completions", body={"m": 1}),
        "Line 1 is missing custom_id",
        1,
    ),
    (
        GOOD + b"\n" + GOOD_2 + b"\n" + GOOD + b"\n",
        'Line 3 duplicates custom_id "ok-1"',
        3,
    ),
    (
        _line(custom_id="a", method="GET", url="/v1/chat/completions", body={"m": 1}),
        'Line 1 method must be "POST"',
        1,
    ),
    (_line(custom_id="a", url="/v1/chat/completions", body={"m": 1}), 'Line 1 method must be "POST"', 1),
    (_line(custom_id="a", method="POST", body={"m": 1}), "Line 1 is missing url", 1),
    (
        _line(custom_id="a", method="POST", url="/v1/embeddings", body={"m": 1}),
        'Line 1 url "/v1/embeddings" is not an allowed batch endpoint',
        1,
    ),
    (
        _line(custom_id="a", method="POST", url="/v1/chat/completions/", body={"m": 1}),
        'Line 1 url "/v1/chat/completions/" is not an allowed batch endpoint',
        1,
    ),
    (_line(custom_id="a", method="POST", url="/v1/chat/completions"), "Line 1 is missing body", 1),
    (_line(custom_id="a", method="POST", url="/v1/chat/completions", body={}), "Line 1 is missing body", 1),
    (
        _line(custom_id="a", method="POST", url="/v1/chat/completions", body={"model": "m", "stream": True}),
        "Line 1 has stream=true; streaming is not supported in batch mode",
        1,
    ),
    # blank lines are skipped but still counted
    (b"\n\n   \n" + GOOD + b"\n\n{oops}\n", "Line 6 is not valid JSON", 6),
    (GOOD + b"\r\n\r\n" + b"42\r\n", "Line 3 must be a JSON object", 3),
]


@pytest.mark.parametrize(("content", "message", "line"), LINE_PROBLEMS, ids=[m for _, m, _ in LINE_PROBLEMS])
def test_line_problem_is_a_400_with_its_line_and_leaves_a_failed_batch(
    api: Api, content: bytes, message: str, line: int
) -> None:
    reply = api.create(content)
    assert reply.status_code == 400
    assert reply.json() == {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "code": "invalid_request_error",
            "param": None,
            "line": line,
        }
    }
    _assert_failed_batch_kept(api, message, line)


@pytest.mark.parametrize(
    ("content", "endpoint", "message"),
    [
        (b"\n\n  \n", "/v1/chat/completions", "Input file contains no JSONL lines"),
        (
            GOOD + b"\n",
            "/v1/embeddings",
            'endpoint "/v1/embeddings" does not match the url "/v1/chat/completions" used by the input file',
        ),
    ],
)
def test_file_level_problem_is_a_400_without_a_line(api: Api, content: bytes, endpoint: str, message: str) -> None:
    reply = api.create(content, endpoint=endpoint)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == message
    assert reply.json()["error"]["line"] is None
    _assert_failed_batch_kept(api, message, None)


def test_too_many_lines(api: Api) -> None:
    content = b"".join(
        _line(custom_id=str(i), method="POST", url="/v1/chat/completions", body={"m": 1}) + b"\n" for i in range(50_001)
    )
    reply = api.create(content)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "Input file exceeds maximum of 50000 lines"
    _assert_failed_batch_kept(api, "Input file exceeds maximum of 50000 lines", None)


def test_input_over_200_mb_is_rejected_before_reading(api: Api) -> None:
    file = api.upload(GOOD + b"\n")
    os.truncate(api.emu.storage.upload_path(file["id"]), 209_715_201)  # sparse: costs no disk or time
    reply = api.client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "Input file exceeds maximum size of 209715200 bytes"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"endpoint": "/v1/chat/completions"}, "input_file_id is required"),
        ({"input_file_id": "", "endpoint": "/v1/chat/completions"}, "input_file_id is required"),
        ({"input_file_id": "file-x"}, "endpoint is required"),
        (
            {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "48h"},
            'completion_window must be "24h"',
        ),
    ],
)
def test_request_problems_in_the_documented_order(api: Api, body: dict[str, Any], message: str) -> None:
    reply = api.client.post("/v1/batches", json=body)
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == message
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert api.emu.batch_ids() == []


def test_body_that_is_not_json(api: Api) -> None:
    reply = api.client.post("/v1/batches", content=b"{", headers={"content-type": "application/json"})
    assert reply.status_code == 400


def test_unknown_input_file_is_404(api: Api) -> None:
    reply = api.client.post("/v1/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"})
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "Input file not found: file-nope"


def test_input_blob_gone_is_404_object_missing(api: Api) -> None:
    file = api.upload(GOOD + b"\n")
    api.emu.storage.upload_path(file["id"]).unlink()
    reply = api.client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"})
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == f"Input file object missing: {file['id']}"


def test_success_is_in_progress_with_every_field(api: Api) -> None:
    content = b"\n" + jsonl([chat_line("a", "A?"), chat_line("b", "B?")]) + b"\n\n"
    reply = api.create(content, metadata={"job": "capitals-demo", "nested": {"n": 1}})
    assert reply.status_code == 200
    batch = reply.json()
    assert set(batch) == BATCH_FIELDS
    assert BATCH_ID.match(batch["id"])
    assert batch["object"] == "batch"
    assert batch["status"] == "in_progress"
    assert batch["endpoint"] == "/v1/chat/completions"
    assert batch["completion_window"] == "24h"
    assert batch["created_at"] == batch["in_progress_at"] == int(START)
    assert batch["expires_at"] == batch["created_at"] + 86400
    assert batch["request_counts"] == {"total": 2, "completed": 0, "failed": 0}
    assert batch["metadata"] == {"job": "capitals-demo", "nested": {"n": 1}}
    for unset in (
        "errors",
        "output_file_id",
        "error_file_id",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
    ):
        assert batch[unset] is None, unset


def test_metadata_defaults_to_an_empty_object(api: Api) -> None:
    assert api.create_ok(api.questions(1))["metadata"] == {}
    assert api.create_ok(api.questions(1), metadata=None)["metadata"] == {}


def test_a_bom_and_crlf_line_endings_are_accepted(api: Api) -> None:
    content = (
        b"\xef\xbb\xbf"
        + jsonl([chat_line("a", "A?")]).replace(b"\n", b"\r\n")
        + _line(custom_id="b", method="POST", url="/v1/chat/completions", body={"model": "m", "messages": []})
    )
    assert api.create(content).json()["request_counts"]["total"] == 2


def test_batch_ids_sort_by_creation(api: Api) -> None:
    ids = [api.create_ok(api.questions(1))["id"] for _ in range(5)]
    assert ids == sorted(ids)


def _assert_failed_batch_kept(api: Api, message: str, line: int | None) -> None:
    (batch_id,) = api.emu.batch_ids()
    batch = api.batch(batch_id)
    assert batch["status"] == "failed"
    assert batch["failed_at"] == int(START)
    assert batch["in_progress_at"] is None
    assert batch["errors"]["object"] == "list"
    (error,) = batch["errors"]["data"]
    assert error["message"] == message
    assert error["line"] == line
    assert error["param"] is None
    assert isinstance(error["code"], str)
    listed = api.client.get("/v1/batches").json()["data"]
    assert [b["id"] for b in listed] == [batch_id]
    assert listed[0]["status"] == "failed"
    assert api.client.post(f"/v1/batches/{batch_id}/cancel").status_code == 409


SURROGATE = (
    b'{"custom_id": "\\ud800", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}'
)


@pytest.mark.parametrize(
    "content",
    [
        GOOD + b"\n" + SURROGATE + b"\n",
        GOOD + b"\n" + json.dumps({"custom_id": "u16", "method": "POST"}).encode("utf-16-le") + b"\n",
        (GOOD + b"\n" + GOOD_2 + b"\n").decode().encode("utf-16"),
        GOOD + b"\n\xff\xfe bad utf-8\n",
    ],
    ids=["lone-surrogate", "utf16-line", "utf16-file", "invalid-utf8"],
)
def test_text_that_is_not_utf8_json_is_the_documented_400_never_a_500(api: Api, content: bytes) -> None:
    # Given a file the API cannot read as UTF-8 JSON Lines
    reply = api.create(content)

    # Then create answers 400 "not valid JSON" for the line (the format rule: UTF-8), as ZeroGPU does
    assert reply.status_code == 400, reply.text
    assert re.fullmatch(r"Line \d+ is not valid JSON", reply.json()["error"]["message"])

    # and the emulator keeps serving: a later valid file completes
    batch = api.create_ok(api.questions(2))
    api.emu.process()
    assert api.batch(batch["id"])["status"] == "completed"
