"""Output and error lines in both shapes, every code category, and malformed lines."""

from __future__ import annotations

import json

import pytest

from batchdrop.integrations.zerogpu import (
    CODE_CATEGORIES,
    UNPARSEABLE_LINE,
    LineCategory,
    category_for_code,
    iter_result_lines,
    parse_result_line,
)

SUCCESS = {
    "id": "batch_req_1",
    "custom_id": "q-1",
    "response": {
        "status_code": 200,
        "request_id": "req_1",
        "body": {"id": "chatcmpl-1", "object": "chat.completion", "choices": []},
    },
}


def zerogpu_error(code: str, message: str = "[legacy:http_5xx] Upstream failed after 4 attempts") -> dict:
    return {
        "id": "batch_req_2",
        "custom_id": "q-2",
        "response": None,
        "error": {"code": code, "message": message, "param": None},
    }


def openai_http_error(status: int, code: str | None, type_: str | None = None) -> dict:
    return {
        "id": "batch_req_3",
        "custom_id": "q-3",
        "response": {
            "status_code": status,
            "request_id": "req_3",
            "body": {"error": {"message": "upstream said no", "type": type_, "param": None, "code": code}},
        },
        "error": None,
    }


@pytest.mark.parametrize("form", ["dict", "str", "bytes"])
def test_success_line_without_error_key(form: str) -> None:
    raw = {"dict": SUCCESS, "str": json.dumps(SUCCESS), "bytes": json.dumps(SUCCESS).encode() + b"\n"}[form]
    line = parse_result_line(raw)
    assert line.succeeded and line.category is LineCategory.SUCCESS
    assert line.custom_id == "q-1" and line.status_code == 200 and line.code is None
    assert line.body["id"] == "chatcmpl-1"
    assert not line.retryable


def test_openai_success_line_with_null_error() -> None:
    assert parse_result_line({**SUCCESS, "error": None}).succeeded


EXPECTED = {
    "internal_error": LineCategory.TRANSIENT,
    "rate_limit_exceeded": LineCategory.TRANSIENT,
    "model_error": LineCategory.TRANSIENT,
    "batch_expired": LineCategory.NEVER_RAN,
    "batch_cancelled": LineCategory.NEVER_RAN,
    "insufficient_quota": LineCategory.OPERATIONAL,
    "authentication_error": LineCategory.OPERATIONAL,
    "invalid_request_error": LineCategory.PERMANENT,
    "not_found_error": LineCategory.PERMANENT,
    "request_too_large": LineCategory.PERMANENT,
    "context_length_exceeded": LineCategory.PERMANENT,
    "timeout": LineCategory.PERMANENT,
    "some_future_code": LineCategory.PERMANENT,
}


@pytest.mark.parametrize(("code", "category"), EXPECTED.items())
def test_zerogpu_error_line_every_code(code: str, category: LineCategory) -> None:
    line = parse_result_line(zerogpu_error(code))
    assert not line.succeeded
    assert line.code == code
    assert line.category is category
    assert line.retryable == (category in {LineCategory.TRANSIENT, LineCategory.NEVER_RAN})
    assert line.status_code is None
    assert line.custom_id == "q-2"


def test_every_code_the_client_knows_is_pinned_by_the_reference() -> None:
    # EXPECTED is written from the wire reference (section 1.8 and the cookbook's two extra codes); a code
    # the client's table adds without a documented category fails here.
    assert set(CODE_CATEGORIES) <= set(EXPECTED), set(CODE_CATEGORIES) - set(EXPECTED)


def test_legacy_prefix_is_split_off() -> None:
    line = parse_result_line(zerogpu_error("insufficient_quota", "[legacy:http_420] You exceeded your quota"))
    assert line.message == "You exceeded your quota"
    assert line.legacy_code == "http_420"


def test_message_without_legacy_prefix_and_with_param() -> None:
    raw = zerogpu_error("timeout", "Generation took too long")
    raw["error"]["param"] = "messages[1].content"
    line = parse_result_line(raw)
    assert (line.message, line.legacy_code, line.param) == (
        "Generation took too long",
        None,
        "messages[1].content",
    )


def test_openai_never_ran_line() -> None:
    raw = {
        "id": "batch_req_4",
        "custom_id": "q-4",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    }
    line = parse_result_line(raw)
    assert line.category is LineCategory.NEVER_RAN and line.retryable and line.legacy_code is None


@pytest.mark.parametrize(
    ("status", "code", "type_", "expected_code", "category"),
    [
        (
            400,
            "invalid_request_error",
            "invalid_request_error",
            "invalid_request_error",
            LineCategory.PERMANENT,
        ),
        (429, "insufficient_quota", "insufficient_quota", "insufficient_quota", LineCategory.OPERATIONAL),
        (429, "rate_limit_exceeded", None, "rate_limit_exceeded", LineCategory.TRANSIENT),
        (429, None, None, "http_429", LineCategory.TRANSIENT),
        (500, "server_error", "server_error", "server_error", LineCategory.TRANSIENT),
        (503, None, None, "http_503", LineCategory.TRANSIENT),
        (404, None, "not_found_error", "not_found_error", LineCategory.PERMANENT),
        (422, "weird", None, "weird", LineCategory.PERMANENT),
        (401, None, "authentication_error", "authentication_error", LineCategory.OPERATIONAL),
    ],
)
def test_openai_http_error_line(status, code, type_, expected_code, category) -> None:
    line = parse_result_line(openai_http_error(status, code, type_))
    assert not line.succeeded
    assert line.status_code == status
    assert line.code == expected_code
    assert line.category is category
    assert line.message == "upstream said no"


def test_openai_http_error_without_body() -> None:
    raw = {"custom_id": "q", "response": {"status_code": 502, "body": None}, "error": None}
    line = parse_result_line(raw)
    assert (line.code, line.category, line.message) == ("http_502", LineCategory.TRANSIENT, None)


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b"\xff\xfe\x00",
        "[1, 2, 3]",
        '"just a string"',
        {"response": {"status_code": 200}},
        {"custom_id": "", "response": {"status_code": 200}},
        {"custom_id": "q", "response": None},
        {"custom_id": "q", "response": {"status_code": "200"}},
        "[" * 100_000,
    ],
)
def test_malformed_lines_become_permanent_unparseable_results(raw) -> None:
    line = parse_result_line(raw)
    assert not line.succeeded
    assert line.code == UNPARSEABLE_LINE
    assert line.category is LineCategory.PERMANENT
    assert line.message


def test_error_that_is_not_an_object() -> None:
    line = parse_result_line({"custom_id": "q", "error": "kaput"})
    assert line.message == "kaput" and line.category is LineCategory.PERMANENT


def test_category_for_code_fallbacks() -> None:
    assert category_for_code(None) is LineCategory.PERMANENT
    assert category_for_code("unknown", 503) is LineCategory.TRANSIENT
    assert category_for_code("batch_expired", 400) is LineCategory.NEVER_RAN


def test_iter_result_lines_skips_blank_lines() -> None:
    data = (json.dumps(SUCCESS) + "\n\n" + json.dumps(zerogpu_error("batch_expired")) + "\n").encode()
    lines = list(iter_result_lines(data.splitlines(keepends=True)))
    assert [line.custom_id for line in lines] == ["q-1", "q-2"]
