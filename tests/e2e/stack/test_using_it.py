"""The command line as a user meets it, against `batchdrop local` in its own process: validate → submit
--wait → status → watch → results. Each command is a subprocess that names no stack: it finds the running
local stack on its own (as it would with --local)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import stack_harness
from stack_harness import RunningStack

pytestmark = pytest.mark.e2e


def request(custom_id: str, text: str) -> str:
    return stack_harness.request(custom_id, text, model="llama-3.1-8b-instruct-fast")


def test_submit_wait_on_the_sample_prints_the_outcome_and_where_the_files_are(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Given the bundled sample, checked offline first
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(resources.files("batchdrop_tools").joinpath("samples/demo.jsonl").read_bytes())
    checked = stack.command("validate", str(sample))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # When it is submitted and followed to its end
    submitted = stack.command("submit", str(sample), "--wait", "--interval", "0.5", timeout=120)

    # Then it exits 0 and says the outcome, the counts, the tokens and where the files are
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    out = submitted.stdout
    assert out.startswith("submitted s3://batchdrop-local/inbox/sample.jsonl as job-")
    lines = sum(1 for line in sample.read_text().splitlines() if line.strip())
    assert f"succeeded: {lines} of {lines} lines succeeded, 0 failed" in out
    assert "tokens:" in out and "cost:" in out
    assert "output:      s3://batchdrop-local/outbox/sample/output.jsonl" in out
    # and the progress went to stderr, ending with the outcome
    assert submitted.stderr.strip().splitlines()[-1].startswith("succeeded · ")
    job_id = out.split(" as ", 1)[1].split()[0]

    # When the user asks where it is, by name, and by job id as JSON
    status = stack.command("status", "sample")
    as_json = stack.command("status", job_id, "--output", "json")
    # Then both say the same job, ended
    assert status.returncode == 0 and status.stdout.startswith(job_id)
    assert json.loads(as_json.stdout)["progress"]["status"] == "succeeded"
    # and status.json in the bucket says so too
    document = json.loads(stack.read_object("outbox/sample/status.json") or b"{}")
    assert document["status"] == "succeeded" and document["finished"] is True
    assert document["counts"] == {"total": lines, "succeeded": lines, "failed": 0}

    # When the ended job is watched: it says the end at once, with the same exit code
    watched = stack.command("jobs", "watch", "s3://batchdrop-local/inbox/sample.jsonl")
    assert watched.returncode == 0 and "succeeded:" in watched.stdout


def test_submit_wait_on_a_rejected_file_exits_1_naming_its_lines(stack: RunningStack, tmp_path: Path) -> None:
    # Given a file whose second line is not JSON and whose third asks for embeddings
    bad = tmp_path / "bad.jsonl"
    third = json.loads(request("b-3", "x")) | {"url": "/v1/embeddings"}
    bad.write_text(request("b-1", "fine") + "\n{not json\n" + json.dumps(third) + "\n")

    # When it is submitted with --wait
    submitted = stack.command("submit", str(bad), "--wait", "--interval", "0.5", timeout=120)

    # Then it exits 1, and names each bad line and what was found
    assert submitted.returncode == 1, submitted.stdout + submitted.stderr
    assert submitted.stdout.splitlines()[1] == "rejected: 2 problems in the file; nothing was sent to the API"
    assert "line 2:" in submitted.stdout and "line 3:" in submitted.stdout
    assert "/v1/embeddings" in submitted.stdout
    assert "batchdrop validate FILE" in submitted.stdout
    # and looked at later, the job names the same lines and fixes, not only their codes
    shown = stack.command("status", "bad")
    assert shown.returncode == 0 and "  line 3: " in shown.stdout and "(got /v1/embeddings)" in shown.stdout


def test_submit_without_wait_says_how_to_follow_and_a_missing_file_is_one_line(
    stack: RunningStack, tmp_path: Path
) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text(request("o-1", "hello") + "\n")
    submitted = stack.command("submit", str(one), "--name", "teams/a/one")
    assert submitted.returncode == 0, submitted.stderr
    assert "inbox/teams/a/one.jsonl as job-" in submitted.stdout
    assert "batchdrop jobs watch job-" in submitted.stderr
    missing = stack.command("submit", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no file" in missing.stderr
    unknown = stack.command("status", "never-dropped")
    assert unknown.returncode == 1 and "no object s3://batchdrop-local/inbox/never-dropped.jsonl" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    # a file that will never run (outside the input prefix) is not said to be on its way
    stack.aws("s3", "cp", str(one), "s3://batchdrop-local/Inbox/one.jsonl")
    outside = stack.command("status", "s3://batchdrop-local/Inbox/one.jsonl")
    assert outside.returncode == 1 and "only files under inbox/ run when dropped" in outside.stderr
    assert "s3://batchdrop-local/inbox/one.jsonl" in outside.stderr
    # a file under a name the pipeline does not take is not renamed behind the user's back: refused, how to fix
    wrong = tmp_path / "two.json"
    wrong.write_text(request("t-1", "hello") + "\n")
    refused = stack.command("submit", str(wrong))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "two.json would not be processed" in refused.stderr and "--name two.jsonl" in refused.stderr
    renamed = stack.command("submit", str(wrong), "--name", "two.jsonl")
    assert renamed.returncode == 0 and "inbox/two.jsonl as job-" in renamed.stdout, renamed.stderr


def test_a_quiet_local_stack_on_an_upstream_model_server_is_healthy_and_silent_while_idle(tmp_path: Path) -> None:
    import http.server
    import threading

    import httpx
    from stack_harness import BIN, RunningStack, clean_env, free_port

    # Given an OpenAI-compatible model server that answers every question the same way
    class ModelServer(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": "upstream-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "from upstream"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    model = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ModelServer)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    aws_port, emulator_port = free_port(), free_port()
    env = clean_env() | {"XDG_RUNTIME_DIR": str(tmp_path)}
    import subprocess

    process = subprocess.Popen(
        [
            str(BIN / "batchdrop"), "local", "--quiet", "--aws-port", str(aws_port),
            "--emulator-port", str(emulator_port), "--poll-seconds", "0.3",
            "--upstream", f"http://127.0.0.1:{model.server_port}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    stack = RunningStack(f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{emulator_port}", process, env=env)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line)
            if line.strip() == "ready":
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(90), "".join(stack.output)
        banner = "".join(stack.output)
        assert f"Health:                {stack.emulator_url}/_emulator/health" in banner
        assert f"its lines run on:    http://127.0.0.1:{model.server_port}" in banner

        # When it has idled for a while: nothing is logged; and its health says every part runs
        health = httpx.get(f"{stack.emulator_url}/_emulator/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["aws"] is True
        assert health.json()["workers"] and all(health.json()["workers"].values())
        before = len(stack.output)
        one = tmp_path / "up.jsonl"
        one.write_text(request("u-1", "who answers?") + "\n")

        # When a file is submitted
        submitted = stack.command("submit", str(one), "--wait", "--interval", "0.5", timeout=120)

        # Then the answer is the upstream's, and the stack logged nothing at INFO on the way
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        output = stack.read_object("outbox/up/output.jsonl") or b""
        assert "from upstream" in output.decode()
        assert [line for line in stack.output[before:] if '"level":"INFO"' in line] == []
    finally:
        process.terminate()
        process.wait(timeout=30)
        model.shutdown()
