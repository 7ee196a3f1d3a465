"""Server-mode behaviour over real sockets: lost and slow replies, the admin surface, streamed transfers."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
from e2e_emulator_kit import AUTH, chat_line

from batchdrop_tools.emulator import Fault
from batchdrop_tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.e2e


def _upload(client: httpx.Client, content: bytes) -> str:
    reply = client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def test_reply_lost_applies_the_action_and_drops_the_connection(serve: Callable[..., EmulatorServer]) -> None:
    server = serve(reply_lost_delay=0.3)
    emu = server.emulator
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=5.0) as client:
        file_id = _upload(client, (chat_line("a", "A?") + "\n").encode())
        emu.faults.add(Fault.reply_lost(method="POST", path="/v1/batches"))
        started = time.monotonic()
        with pytest.raises(httpx.TransportError):
            client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        assert time.monotonic() - started >= 0.3
        assert len(emu.batch_ids()) == 1
        assert client.get("/v1/batches").json()["data"][0]["id"] == emu.batch_ids()[0]


def test_reply_lost_with_a_short_client_timeout_is_a_read_timeout(serve: Callable[..., EmulatorServer]) -> None:
    server = serve(reply_lost_delay=1.0)
    server.emulator.faults.add(Fault.reply_lost(method="GET", path="/v1/files"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/v1/files", headers=AUTH, timeout=0.2)
    assert httpx.get(server.url + "/v1/files", headers=AUTH).status_code == 200


def test_slow_reply_and_http_fault_over_the_admin_surface(serve: Callable[..., EmulatorServer]) -> None:
    server = serve()
    admin = httpx.Client(base_url=server.url)
    assert admin.post("/_emulator/faults", json={"kind": "slow", "seconds": 0.3, "path": "/v1/batches"}).is_success
    assert admin.post(
        "/_emulator/faults", json={"kind": "http", "status": 429, "path": "/v1/files", "retry_after": "2"}
    ).is_success
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(server.url + "/v1/batches", headers=AUTH, timeout=0.1)
    throttled = httpx.get(server.url + "/v1/files", headers=AUTH)
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert throttled.json()["error"]["type"] == "rate_limit_exceeded"
    deadline = time.monotonic() + 5
    while len(calls := admin.get("/_emulator/calls").json()["data"]) < 2:  # the slow one is still sleeping
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sorted((c["path"], c["status"]) for c in calls) == [("/v1/batches", 200), ("/v1/files", 429)]
    assert admin.post("/_emulator/advance", json={"seconds": 1}).status_code == 400  # SystemClock
    assert admin.delete("/_emulator/faults").json() == {"cleared": True}


def test_upload_over_the_cap_is_413_over_a_socket(serve: Callable[..., EmulatorServer]) -> None:
    server = serve(max_upload_bytes=10_000)
    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        reply = client.post("/v1/files", files={"file": ("big.jsonl", b"x" * 50_000)}, data={"purpose": "batch"})
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "file_too_large"
        assert client.get("/v1/files").json()["data"] == []


def test_chunked_upload_and_streamed_download(serve: Callable[..., EmulatorServer]) -> None:
    server = serve()
    lines = b"".join((chat_line(f"q-{i}", f"Question {i}?") + "\n").encode() for i in range(200))
    boundary = "emulatorboundary"

    def body() -> object:
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode()
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="chunked.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        for start in range(0, len(lines), 1000):
            yield lines[start : start + 1000]
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx.Client(base_url=server.url, headers=AUTH) as client:
        reply = client.post(
            "/v1/files",
            content=body(),  # a generator: sent with Transfer-Encoding: chunked
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert reply.status_code == 200, reply.text
        file = reply.json()
        assert file["bytes"] == len(lines)
        with client.stream("GET", f"/v1/files/{file['id']}/content") as download:
            assert download.headers["content-type"] == "application/jsonl"
            assert download.headers["content-disposition"] == 'attachment; filename="chunked.jsonl"'
            assert b"".join(download.iter_bytes()) == lines
