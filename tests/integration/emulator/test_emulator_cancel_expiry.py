"""Cancel (cancelling -> cancelled, idempotent, 409 once terminal) and expiry with partial results."""

from __future__ import annotations

from collections.abc import Callable

from emulator_testkit import START, Api

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def test_cancel_runs_no_more_lines_and_fails_the_pending_ones(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1)
    batch = api.create_ok(api.questions(5))
    api.emu.advance(2)
    reply = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert reply.status_code == 200
    cancelling = reply.json()
    assert cancelling["status"] == "cancelling"
    assert cancelling["cancelling_at"] == int(START) + 2
    assert cancelling["request_counts"] == {"total": 5, "completed": 2, "failed": 0}

    again = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelling"
    assert again.json()["cancelling_at"] == cancelling["cancelling_at"]

    api.emu.advance(1)
    done = api.batch(batch["id"])
    assert done["status"] == "cancelled"
    assert done["cancelled_at"] == int(START) + 3
    assert done["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    assert {line["custom_id"] for line in api.content(done["output_file_id"])} == {"q-1", "q-2"}
    pending = api.content(done["error_file_id"])
    assert {line["custom_id"] for line in pending} == {"q-3", "q-4", "q-5"}
    for line in pending:
        assert line["response"] is None
        assert line["error"]["code"] == "batch_cancelled"
        assert line["error"]["message"].startswith("[legacy:batch_cancelled] ")

    terminal = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert terminal.status_code == 409
    assert terminal.json()["error"]["type"] == "invalid_request_error"
    assert "cancelled" in terminal.json()["error"]["message"]


def test_cancel_before_any_line_gives_no_output_file(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1)
    batch = api.create_ok(api.questions(2))
    api.client.post(f"/v1/batches/{batch['id']}/cancel")
    api.emu.advance(0.5)
    done = api.batch(batch["id"])
    assert done["status"] == "cancelled"
    assert done["output_file_id"] is None
    assert len(api.content(done["error_file_id"])) == 2


def test_cancel_a_completed_batch_is_409(api: Api) -> None:
    batch = api.create_ok(api.questions(1))
    assert api.batch(batch["id"])["status"] == "completed"
    reply = api.client.post(f"/v1/batches/{batch['id']}/cancel")
    assert reply.status_code == 409
    assert set(reply.json()["error"]) == {"message", "type", "code", "param"}


def test_cancel_unknown_batch_is_404(api: Api) -> None:
    reply = api.client.post("/v1/batches/batch_nope/cancel")
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "Batch not found: batch_nope"


def test_expiry_keeps_finished_work_and_expires_the_rest(make_api: Callable[..., Api]) -> None:
    rate = 1 / 20_000  # 4 lines in the 24 h window (86400 s)
    api = make_api(lines_per_second=rate)
    batch = api.create_ok(api.questions(6))
    api.emu.advance(40_000)
    assert api.batch(batch["id"])["request_counts"] == {"total": 6, "completed": 2, "failed": 0}
    api.emu.advance(86_400)
    done = api.batch(batch["id"])
    assert done["status"] == "expired"
    assert done["expired_at"] == done["expires_at"] == int(START) + 86_400
    assert done["request_counts"] == {"total": 6, "completed": 4, "failed": 2}
    assert [line["custom_id"] for line in api.content(done["output_file_id"])] == ["q-1", "q-2", "q-3", "q-4"]
    expired = api.content(done["error_file_id"])
    assert [line["custom_id"] for line in expired] == ["q-5", "q-6"]
    assert expired[0]["error"] == {
        "code": "batch_expired",
        "message": f"[legacy:batch_expired] {EXPIRED_MESSAGE}",
        "param": None,
    }
    assert api.client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 409


def test_expiry_openai_format(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1 / 86_400, line_format="openai")
    batch = api.create_ok(api.questions(3))
    api.emu.advance(100_000)
    done = api.batch(batch["id"])
    assert done["status"] == "expired"
    lines = api.content(done["error_file_id"])
    assert len(lines) == 2
    assert lines[0]["response"] is None
    assert lines[0]["error"] == {"code": "batch_expired", "message": EXPIRED_MESSAGE}


def test_terminal_batches_do_not_change(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1)
    batch = api.create_ok(api.questions(1))
    api.emu.advance(1)
    done = api.batch(batch["id"])
    api.emu.advance(200_000)
    assert api.batch(batch["id"]) == done
