"""The official openai SDK walkthroughs of the ZeroGPU examples, against the emulator over real sockets:
only the base URL (and the poll interval) differ from the docs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_emulator_kit import API_KEY, AUTH, PROJECT_ID, chat_line
from openai import OpenAI

from batchdrop_tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.e2e

POLL_SECONDS = 0.1
QUESTIONS = [
    ("q-1", "What is the capital of France?"),
    ("q-2", "What is the capital of Germany?"),
    ("q-3", "What is the capital of Italy?"),
]


def _client(server: EmulatorServer) -> OpenAI:
    return OpenAI(
        api_key="ignored-by-zerogpu",
        base_url=server.url + "/v1",
        default_headers={"x-api-key": API_KEY, "x-project-id": PROJECT_ID},
    )


def _load_jsonl(path: Path) -> list[dict[str, object]]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def _walkthrough(client: OpenAI, workdir: Path) -> list[str]:
    """The docs' "Full end-to-end script", printing into a list instead of stdout."""
    printed: list[str] = []
    with (workdir / "input.jsonl").open("w") as f:
        for custom_id, question in QUESTIONS:
            f.write(chat_line(custom_id, question) + "\n")
    with (workdir / "input.jsonl").open("rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    printed.append(f"Uploaded {uploaded.id} ({uploaded.bytes} bytes)")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "capitals-demo"},
    )
    printed.append(f"Created {batch.id}: status={batch.status}, total={batch.request_counts.total}")
    while batch.status not in ("completed", "failed", "expired"):
        time.sleep(POLL_SECONDS)
        batch = client.batches.retrieve(batch.id)
        printed.append(
            f" status={batch.status}, "
            f"completed={batch.request_counts.completed}/{batch.request_counts.total}, "
            f"failed={batch.request_counts.failed}"
        )
    printed.append(f"Final status: {batch.status}")
    if batch.output_file_id:
        (workdir / "output.jsonl").write_bytes(client.files.content(batch.output_file_id).read())
    if batch.error_file_id:
        (workdir / "errors.jsonl").write_bytes(client.files.content(batch.error_file_id).read())
    if batch.output_file_id:
        for rec in _load_jsonl(workdir / "output.jsonl"):
            answer = rec["response"]["body"]["choices"][0]["message"]["content"]  # type: ignore[index]
            printed.append(f"OK {rec['custom_id']}: {answer}")
    if batch.error_file_id:
        for rec in _load_jsonl(workdir / "errors.jsonl"):
            error = rec["error"]
            printed.append(f"FAIL {rec['custom_id']} [{error['code']}]: {error['message']}")  # type: ignore[index]
    return printed


def test_sdk_walkthrough(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = serve(lines_per_second=10)
    client = _client(server)
    printed = _walkthrough(client, tmp_path)
    assert printed[0].startswith("Uploaded file-")
    assert printed[1].endswith(": status=in_progress, total=3")
    assert "Final status: completed" in printed
    assert sorted(line for line in printed if line.startswith("OK ")) == [
        "OK q-1: echo: What is the capital of France?",
        "OK q-2: echo: What is the capital of Germany?",
        "OK q-3: echo: What is the capital of Italy?",
    ]
    assert not [line for line in printed if line.startswith("FAIL ")]

    listed = client.batches.list()
    (batch,) = listed.data
    assert batch.status == "completed"
    assert batch.metadata == {"job": "capitals-demo"}
    outputs = client.files.list(purpose="batch_output")
    assert [f.id for f in outputs.data] == [batch.output_file_id]


def test_sdk_walkthrough_error_file_branch(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = serve()
    fault = {"kind": "line_errors", "code": "rate_limit_exceeded", "custom_ids": ["q-2"]}
    assert httpx.post(server.url + "/_emulator/faults", json=fault).status_code == 200
    printed = _walkthrough(_client(server), tmp_path)
    assert "Final status: completed" in printed
    fails = [line for line in printed if line.startswith("FAIL ")]
    assert len(fails) == 1
    assert fails[0].startswith("FAIL q-2 [rate_limit_exceeded]: [legacy:http_429] ")
    assert sorted(line for line in printed if line.startswith("OK ")) == [
        "OK q-1: echo: What is the capital of France?",
        "OK q-3: echo: What is the capital of Italy?",
    ]


def test_sdk_cancel_and_errors(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = serve(lines_per_second=1)
    client = _client(server)
    (tmp_path / "in.jsonl").write_text("".join(chat_line(f"c-{i}", f"Q{i}?") + "\n" for i in range(50)))
    uploaded = client.files.create(file=(tmp_path / "in.jsonl").open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    deadline = time.monotonic() + 10
    while (batch := client.batches.retrieve(batch.id)).status != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(POLL_SECONDS)
    assert batch.request_counts is not None
    assert batch.request_counts.failed >= 49
    lines = client.files.content(batch.error_file_id or "").read().decode().splitlines()
    assert {json.loads(line)["error"]["code"] for line in lines} == {"batch_cancelled"}

    import openai

    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert bad.value.code == "empty_file"
    unauthenticated = OpenAI(api_key="ignored", base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthenticated.batches.list()


def test_thousand_line_batch_through_the_sdk(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    """The docs' bulk worked example: 1,000 prompts, progress visible while polling, every answer back."""
    server = serve(lines_per_second=2000)
    client = _client(server)
    prompts = [(f"doc-{i:04d}", f"Summarise document number {i}") for i in range(1000)]
    with (tmp_path / "chat.jsonl").open("w") as f:
        for doc_id, prompt in prompts:
            f.write(chat_line(doc_id, prompt) + "\n")
    uploaded = client.files.create(file=(tmp_path / "chat.jsonl").open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    progress = [batch.request_counts.completed if batch.request_counts else 0]
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
        assert batch.request_counts is not None
        progress.append(batch.request_counts.completed)
    assert batch.status == "completed"
    assert progress == sorted(progress)
    assert len(set(progress)) >= 3, f"counts should rise over polls, saw {progress}"

    results = {}
    for raw in client.files.content(batch.output_file_id or "").read().decode().splitlines():
        rec = json.loads(raw)
        results[rec["custom_id"]] = rec["response"]["body"]["choices"][0]["message"]["content"]
    assert results == {doc_id: f"echo: {prompt}" for doc_id, prompt in prompts}


def test_sdk_lists_more_than_100_batches(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = serve()
    client = _client(server)
    uploaded = client.files.create(file=("one.jsonl", (chat_line("a", "A?") + "\n").encode()), purpose="batch")
    created = [
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(105)
    ]
    assert [b.id for b in client.batches.list(limit=100)] == list(reversed(created))


def test_auth_headers_are_what_counts(serve: Callable[..., EmulatorServer]) -> None:
    server = serve()
    assert httpx.get(server.url + "/v1/batches", headers=AUTH).status_code == 200
    wrong = {**AUTH, "x-api-key": "zgpu-wrong"}
    reply = httpx.get(server.url + "/v1/batches", headers=wrong)
    assert reply.status_code == 403
    assert reply.headers["x-request-id"].startswith("req_")
