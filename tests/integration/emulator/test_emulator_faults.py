"""Injected request faults (http, slow, reply lost), the call log, and the admin surface."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from emulator_testkit import AUTH, BASE_URL, Api, jsonl

from batchdrop_tools.emulator import Emulator, Fault, SystemClock


def _create_body(api: Api) -> dict[str, str]:
    file_id = api.upload(jsonl(api.questions(1)))["id"]
    return {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}


def test_http_fault_applies_the_given_number_of_times(api: Api) -> None:
    body = _create_body(api)
    api.emu.faults.add(Fault.http(503, method="POST", path="/v1/batches", times=2, retry_after="1"))
    first = api.client.post("/v1/batches", json=body)
    assert first.status_code == 503
    assert first.headers["retry-after"] == "1"
    assert first.headers["x-request-id"].startswith("req_")
    assert set(first.json()["error"]) == {"message", "type", "code", "param"}
    assert api.client.post("/v1/batches", json=body).status_code == 503
    assert api.client.get("/v1/batches").status_code == 200  # other routes unaffected
    assert api.client.post("/v1/batches", json=body).status_code == 200
    assert len(api.emu.batch_ids()) == 1
    assert api.emu.count_calls("POST", "/v1/batches") == 3
    assert [c.status for c in api.emu.calls if c.path == "/v1/batches" and c.method == "POST"] == [
        503,
        503,
        200,
    ]


@pytest.mark.parametrize(
    ("error_type", "message"),
    [
        ("rate_limit_exceeded", None),
        (
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
    ],
)
def test_429_bodies(api: Api, error_type: str, message: str | None) -> None:
    api.emu.faults.add(Fault.http(429, error_type=error_type, retry_after="Wed, 21 Oct 2026 07:28:00 GMT"))
    reply = api.client.get("/v1/files")
    assert reply.status_code == 429
    assert reply.headers["retry-after"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    error = reply.json()["error"]
    assert error["type"] == error["code"] == error_type
    assert error["param"] is None
    if message:
        assert error["message"] == message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 500, 502, 503, 504])
def test_other_statuses(api: Api, status: int) -> None:
    api.emu.faults.add(Fault.http(status, path="/v1/files"))
    reply = api.client.get("/v1/files")
    assert reply.status_code == status
    assert reply.json()["error"]["message"]
    assert api.client.get("/v1/files").status_code == 200


def test_forever_fault_and_patterns_and_clear(api: Api) -> None:
    api.emu.faults.add(Fault.http(500, method="GET", path="/v1/batches/*", times=None))
    for _ in range(3):
        assert api.client.get("/v1/batches/batch_x").status_code == 500
    assert api.client.get("/v1/batches").status_code == 200
    assert api.client.post("/v1/batches/batch_x/cancel").status_code == 404  # method does not match
    api.emu.faults.clear()
    assert api.client.get("/v1/batches/batch_x").status_code == 404


def test_slow_fault_delays_the_reply(api: Api) -> None:
    api.emu.faults.add(Fault.slow(0.2, method="GET", path="/v1/batches"))
    started = time.monotonic()
    assert api.client.get("/v1/batches").status_code == 200
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    api.client.get("/v1/batches")
    assert time.monotonic() - started < 0.2


def test_slow_fault_past_the_client_timeout_is_a_read_timeout_after_the_action(api: Api) -> None:
    body = _create_body(api)
    api.emu.faults.add(Fault.slow(30.0, method="POST", path="/v1/batches"))
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        api.client.post("/v1/batches", json=body, timeout=0.1)
    assert time.monotonic() - started < 5
    assert len(api.emu.batch_ids()) == 1


def test_reply_lost_applies_the_action_then_times_out(api: Api) -> None:
    body = _create_body(api)
    api.emu.faults.add(Fault.reply_lost(method="POST", path="/v1/batches", times=1))
    with pytest.raises(httpx.ReadTimeout):
        api.client.post("/v1/batches", json=body)
    assert len(api.emu.batch_ids()) == 1
    assert api.emu.count_calls("POST", "/v1/batches") == 1
    listed = api.client.get("/v1/batches").json()["data"]
    assert [b["id"] for b in listed] == api.emu.batch_ids()
    assert api.client.post("/v1/batches", json=body).status_code == 200


def test_reply_lost_on_a_failed_create_still_leaves_the_failed_batch(api: Api) -> None:
    file_id = api.upload(b"{broken\n")["id"]
    api.emu.faults.add(Fault.reply_lost(path="/v1/batches"))
    with pytest.raises(httpx.ReadTimeout):
        api.client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
    (batch_id,) = api.emu.batch_ids()
    assert api.batch(batch_id)["status"] == "failed"


def test_admin_surface(api: Api) -> None:
    admin = api.client
    reply = admin.post("/_emulator/faults", json={"kind": "http", "status": 503, "path": "/v1/files", "times": 1})
    assert reply.status_code == 200
    assert admin.post(
        "/_emulator/faults", json={"kind": "line_errors", "code": "internal_error", "custom_ids": ["q-1"]}
    ).is_success
    assert admin.get("/v1/files").status_code == 503
    assert admin.get("/v1/files").status_code == 200

    batch = api.create_ok(api.questions(2))
    done = api.batch(batch["id"])
    assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}

    healing = admin.post(
        "/_emulator/faults",
        json={"kind": "line_errors", "code": "rate_limit_exceeded", "custom_ids": ["q-2"], "times_per_line": 1},
    )
    assert healing.json()["added"]["times_per_line"] == 1
    assert admin.get("/_emulator/faults").json()["line_errors"][1]["times_per_line"] == 1
    assert (
        admin.post("/_emulator/faults", json={"kind": "line_errors", "code": "x", "times_per_line": 0}).status_code
        == 400
    )

    stall = admin.post("/_emulator/faults", json={"kind": "stall_batches", "after_lines": 3})
    assert stall.json()["added"] == {"kind": "stall_batches", "after_lines": 3, "times": 1}
    assert admin.get("/_emulator/faults").json()["stalls"] == [{"after_lines": 3, "times": 1}]
    assert admin.post("/_emulator/faults", json={"kind": "stall_batches", "after_lines": -1}).status_code == 400

    assert admin.delete("/_emulator/faults").json() == {"cleared": True}
    assert admin.get("/_emulator/faults").json() == {"faults": [], "line_errors": [], "stalls": []}

    calls = admin.get("/_emulator/calls").json()["data"]
    assert [(c["method"], c["path"], c["status"]) for c in calls[:2]] == [
        ("GET", "/v1/files", 503),
        ("GET", "/v1/files", 200),
    ]
    assert all(not c["path"].startswith("/_emulator") for c in calls)

    now = api.emu.clock.now()
    assert admin.post("/_emulator/advance", json={"seconds": 5}).json() == {"now": now + 5}
    assert admin.post("/_emulator/advance", json={"seconds": -1}).status_code == 400
    assert admin.post("/_emulator/faults", json={"kind": "nope"}).status_code == 400
    assert admin.post("/_emulator/faults", json={"kind": "slow"}).status_code == 400


def test_admin_slow_and_reply_lost(api: Api) -> None:
    assert api.client.post("/_emulator/faults", json={"kind": "reply_lost", "method": "GET", "path": "/v1/files"})
    with pytest.raises(httpx.ReadTimeout):
        api.client.get("/v1/files")
    assert api.client.post("/_emulator/faults", json={"kind": "slow", "seconds": 0.05, "times": None}).is_success
    assert api.client.get("/v1/files").status_code == 200


def test_advance_needs_a_manual_clock() -> None:
    with (
        Emulator(clock=SystemClock()) as emu,
        httpx.Client(transport=emu.transport(), base_url=BASE_URL) as client,
    ):
        assert client.post("/_emulator/advance", json={"seconds": 1}).status_code == 400
        with pytest.raises(TypeError):
            emu.advance(1)


def test_fault_constructors_validate() -> None:
    with pytest.raises(ValueError):
        Fault.http(200)
    with pytest.raises(ValueError):
        Fault.slow(-1)


def test_calls_record_auth_failures_too(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={})
    api.client.get("/v1/batches")
    api.client.get("/v1/batches", headers=AUTH)
    assert [c.status for c in api.emu.calls] == [401, 200]
    assert api.emu.count_calls("get", "/v1/batches") == 2
