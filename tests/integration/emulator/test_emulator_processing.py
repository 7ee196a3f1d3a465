"""Processing: live counts, rate, finalizing, result files, line formats, injected line failures."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from emulator_testkit import START, Api, chat_line

from batchdrop_tools.emulator import UpstreamBackend

BATCH_REQ = re.compile(r"^batch_req_[0-9a-f]{24}$")
REQ = re.compile(r"^req_[0-9a-f]{24}$")


def test_instant_processing_completes_at_the_next_step(api: Api) -> None:
    batch = api.create_ok(api.questions(3))
    assert batch["request_counts"]["completed"] == 0
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert done["finalizing_at"] == done["completed_at"] == int(START)
    assert done["error_file_id"] is None
    answers = {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
        for line in api.content(done["output_file_id"])
    }
    assert answers == {"q-1": "echo: Question 1?", "q-2": "echo: Question 2?", "q-3": "echo: Question 3?"}


def test_rate_gives_live_counts_then_finalizing_then_completed(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=2, finalizing_seconds=5)
    batch = api.create_ok(api.questions(5))
    seen = []
    for _ in range(3):
        api.emu.advance(1)
        current = api.batch(batch["id"])
        seen.append((current["status"], current["request_counts"]["completed"]))
    assert seen == [("in_progress", 2), ("in_progress", 4), ("finalizing", 5)]
    finalizing = api.batch(batch["id"])
    assert finalizing["finalizing_at"] == int(START) + 2  # 5 lines at 2/s: done at +2.5 s
    assert finalizing["output_file_id"] is None
    api.emu.advance(4)
    assert api.batch(batch["id"])["status"] == "finalizing"
    api.emu.advance(1)
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["completed_at"] == int(START) + 7
    assert done["output_file_id"] is not None


def test_output_line_shape_zerogpu(api: Api) -> None:
    batch = api.create_ok([chat_line("q-1", "What is the capital of France?")])
    (line,) = api.content(api.batch(batch["id"])["output_file_id"])
    assert set(line) == {"id", "custom_id", "response"}
    assert BATCH_REQ.match(line["id"])
    assert line["custom_id"] == "q-1"
    response = line["response"]
    assert response["status_code"] == 200
    assert REQ.match(response["request_id"])
    body = response["body"]
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "test-model"
    assert body["service_tier"] == "default"
    assert body["system_fingerprint"] is None
    assert body["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "echo: What is the capital of France?",
                "annotations": [],
            },
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert set(usage["prompt_tokens_details"]) == {"cached_tokens", "audio_tokens"}
    assert set(usage["completion_tokens_details"]) == {
        "reasoning_tokens",
        "audio_tokens",
        "accepted_prediction_tokens",
        "rejected_prediction_tokens",
    }


def test_echo_is_deterministic(make_api: Callable[..., Api]) -> None:
    bodies = []
    for _ in range(2):
        api = make_api()
        batch = api.create_ok([chat_line("q-1", "Same?")])
        (line,) = api.content(api.batch(batch["id"])["output_file_id"])
        bodies.append(line["response"]["body"])
    assert bodies[0] == bodies[1]


def test_body_without_model_or_messages_fails_at_run_time(api: Api) -> None:
    lines = [
        chat_line("ok", "Fine?"),
        {"custom_id": "no-model", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}},
        {"custom_id": "no-messages", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}},
    ]
    batch = api.create_ok(lines)
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 1, "failed": 2}
    errors = {line["custom_id"]: line for line in api.content(done["error_file_id"])}
    assert set(errors) == {"no-model", "no-messages"}
    for line in errors.values():
        assert line["response"] is None
        assert line["error"]["code"] == "invalid_request_error"
        assert line["error"]["message"].startswith("[legacy:http_400] ")
        assert line["error"]["param"] is None
    assert [line["custom_id"] for line in api.content(done["output_file_id"])] == ["ok"]


def test_only_failures_gives_no_output_file(api: Api) -> None:
    api.emu.faults.line_errors("rate_limit_exceeded", rate=1.0)
    batch = api.create_ok(api.questions(2))
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["output_file_id"] is None
    assert done["request_counts"] == {"total": 2, "completed": 0, "failed": 2}
    assert len(api.content(done["error_file_id"])) == 2


def test_line_errors_by_custom_id(api: Api) -> None:
    api.emu.faults.line_errors("rate_limit_exceeded", custom_ids={"q-2"})
    batch = api.create_ok(api.questions(3))
    done = api.batch(batch["id"])
    (error,) = api.content(done["error_file_id"])
    assert error["custom_id"] == "q-2"
    assert error["response"] is None
    assert error["error"]["code"] == "rate_limit_exceeded"
    assert error["error"]["message"].startswith("[legacy:http_429] ")
    assert {line["custom_id"] for line in api.content(done["output_file_id"])} == {"q-1", "q-3"}


def test_line_errors_for_the_first_attempts_only_heal_when_the_line_is_sent_again(api: Api) -> None:
    # Given q-2 failing on its first attempt only, and q-3 on its first two
    api.emu.faults.line_errors("rate_limit_exceeded", custom_ids={"q-2"}, times_per_line=1)
    api.emu.faults.line_errors("internal_error", custom_ids={"q-3"}, times_per_line=2)

    # When the same lines run in three batches, one after the other
    failed = []
    for _ in range(3):
        done = api.batch(api.create_ok(api.questions(3))["id"])
        errors = api.content(done["error_file_id"]) if done["error_file_id"] else []
        failed.append(sorted((line["custom_id"], line["error"]["code"]) for line in errors))

    # Then each fails as many times as its rule says, then succeeds
    assert failed == [[("q-2", "rate_limit_exceeded"), ("q-3", "internal_error")], [("q-3", "internal_error")], []]


def test_line_errors_by_rate_are_deterministic(make_api: Callable[..., Api]) -> None:
    failed_sets = []
    for _ in range(2):
        api = make_api()
        api.emu.faults.line_errors("internal_error", rate=0.3, seed=7)
        batch = api.create_ok(api.questions(200))
        done = api.batch(batch["id"])
        failed_sets.append({line["custom_id"] for line in api.content(done["error_file_id"])})
        assert done["request_counts"]["failed"] == len(failed_sets[-1])
        assert done["request_counts"]["completed"] == 200 - len(failed_sets[-1])
    assert failed_sets[0] == failed_sets[1]
    assert 30 < len(failed_sets[0]) < 90


@pytest.mark.parametrize(
    ("code", "legacy"),
    [
        ("invalid_request_error", "http_400"),
        ("authentication_error", "http_401"),
        ("not_found_error", "http_404"),
        ("request_too_large", "http_413"),
        ("insufficient_quota", "http_420"),
        ("rate_limit_exceeded", "http_429"),
        ("internal_error", "http_500"),
        ("context_length_exceeded", "http_400"),
        ("model_error", "model_error"),
        ("timeout", "timeout"),
    ],
)
def test_every_line_code_has_its_legacy_prefix(api: Api, code: str, legacy: str) -> None:
    api.emu.faults.line_errors(code, rate=1.0)
    batch = api.create_ok(api.questions(1))
    (error,) = api.content(api.batch(batch["id"])["error_file_id"])
    assert error["error"]["code"] == code
    assert error["error"]["message"].startswith(f"[legacy:{legacy}] ")


def test_openai_line_format(make_api: Callable[..., Api]) -> None:
    api = make_api(line_format="openai")
    api.emu.faults.line_errors("rate_limit_exceeded", custom_ids={"q-2"})
    batch = api.create_ok(api.questions(3))
    done = api.batch(batch["id"])
    (ok, *_) = api.content(done["output_file_id"])
    assert ok["error"] is None
    assert ok["response"]["status_code"] == 200
    (failed,) = api.content(done["error_file_id"])
    assert failed["error"] is None
    assert failed["response"]["status_code"] == 429
    assert failed["response"]["body"]["error"]["code"] == "rate_limit_exceeded"
    assert not failed["response"]["body"]["error"]["message"].startswith("[legacy:")


def test_openai_format_non_http_failures_use_the_error_field(make_api: Callable[..., Api]) -> None:
    api = make_api(line_format="openai", lines_per_second=1)
    batch = api.create_ok(api.questions(3))
    api.emu.advance(1)
    api.client.post(f"/v1/batches/{batch['id']}/cancel")
    api.emu.advance(1)
    done = api.batch(batch["id"])
    assert done["status"] == "cancelled"
    cancelled = api.content(done["error_file_id"])
    assert {line["custom_id"] for line in cancelled} == {"q-2", "q-3"}
    assert all(line["response"] is None for line in cancelled)
    assert all(line["error"]["code"] == "batch_cancelled" for line in cancelled)


def _upstream(handler: Callable[[httpx.Request], httpx.Response]) -> UpstreamBackend:
    return UpstreamBackend("http://upstream.test", timeout=5.0, transport=httpx.MockTransport(handler))


def test_upstream_backend_records_replies_and_maps_failures(make_api: Callable[..., Api]) -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        assert request.url.path == "/v1/chat/completions"
        body = json.loads(request.content)
        seen.append(body)
        question = body["messages"][-1]["content"]
        statuses = {"Question 1?": 200, "Question 2?": 422, "Question 3?": 429, "Question 4?": 503}
        if question == "Question 5?":
            raise httpx.ConnectError("refused", request=request)
        status = statuses[question]
        if status == 200:
            usage = {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21}
            return httpx.Response(
                200, json={"id": "chatcmpl-up", "object": "chat.completion", "choices": [], "usage": usage}
            )
        return httpx.Response(status, json={"error": {"message": f"upstream says {status}", "type": "x"}})

    api = make_api(backend=_upstream(handler))
    batch = api.create_ok(api.questions(5))
    done = api.batch(batch["id"])
    assert len(seen) == 5
    assert done["request_counts"] == {"total": 5, "completed": 1, "failed": 4}
    (ok,) = api.content(done["output_file_id"])
    assert ok["response"]["body"]["id"] == "chatcmpl-up"
    assert ok["response"]["body"]["usage"] == {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21}
    errors = {line["custom_id"]: line["error"] for line in api.content(done["error_file_id"])}
    assert errors["q-2"] == {
        "code": "invalid_request_error",
        "message": "[legacy:http_422] upstream says 422",
        "param": None,
    }
    assert errors["q-3"]["code"] == "rate_limit_exceeded"
    assert errors["q-3"]["message"].startswith("[legacy:http_429] ")
    assert errors["q-4"]["code"] == "internal_error"
    assert errors["q-4"]["message"].startswith("[legacy:http_503] ")
    assert errors["q-5"]["code"] == "internal_error"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "authentication_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (500, "internal_error"),
        (502, "internal_error"),
    ],
)
def test_upstream_status_to_code(make_api: Callable[..., Api], status: int, code: str) -> None:
    api = make_api(backend=_upstream(lambda request: httpx.Response(status, text="nope")))
    batch = api.create_ok(api.questions(1))
    (error,) = api.content(api.batch(batch["id"])["error_file_id"])
    assert error["error"]["code"] == code
    assert error["error"]["message"].startswith(f"[legacy:http_{status}] ")


def test_a_stalled_batch_makes_no_progress_until_it_expires_or_is_cancelled(api: Api) -> None:
    # Given the next two batches set to stall after 2 lines
    api.emu.faults.stall_batches(after_lines=2, times=2)
    expiring, cancelled, normal = (api.create_ok(api.questions(5))["id"] for _ in range(3))

    # When hours pass: the stalled ones stay in_progress at 2 of 5 lines; the third ends as usual
    api.emu.advance(23 * 3600)
    for batch_id in (expiring, cancelled):
        stalled = api.batch(batch_id)
        assert (stalled["status"], stalled["request_counts"]) == (
            "in_progress",
            {"total": 5, "completed": 2, "failed": 0},
        )
    assert api.batch(normal)["status"] == "completed"

    # Then a cancel ends one with its 2 answers; the other expires at its window's end with them
    api.client.post(f"/v1/batches/{cancelled}/cancel")
    api.emu.advance(3600)
    ended = {batch_id: api.batch(batch_id) for batch_id in (expiring, cancelled)}
    assert [ended[b]["status"] for b in (expiring, cancelled)] == ["expired", "cancelled"]
    for batch in ended.values():
        assert len(api.content(batch["output_file_id"])) == 2
        assert len(api.content(batch["error_file_id"])) == 3
