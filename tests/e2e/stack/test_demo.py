"""`batchdrop demo`, as the README tells a newcomer to run it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from stack_harness import BIN, clean_env

from batchdrop_tools.emulator import Emulator, EmulatorSettings
from batchdrop_tools.emulator.server import EmulatorServer

pytestmark = pytest.mark.e2e


def run_demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "batchdrop"), "demo", *args],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=180,
    )


def test_the_bundled_sample_prints_an_answer_per_line_and_exits_0() -> None:
    result = run_demo()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "capital-fr: echo: What is the capital of France?" in result.stdout
    assert "translate: echo: Translate 'good morning' into Spanish." in result.stdout
    assert "Outcome: succeeded (5 succeeded, 0 failed, 5 total)" in result.stdout
    assert "report:      s3://batchdrop-local/outbox/demo/report.json" in result.stdout
    assert "results_csv: s3://batchdrop-local/outbox/demo/results.csv" in result.stdout
    assert "tokens:      " in result.stdout and "cost:        0.0000" in result.stdout and " USD" in result.stdout
    assert "these s3:// URIs are gone with it (--keep leaves it running)" in result.stdout
    # and it showed the job moving while it waited (a line per change: the output is not a terminal)
    assert "running" in result.stderr or "collecting" in result.stderr or "succeeded · " in result.stderr


def test_a_bad_file_is_rejected_naming_its_lines_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"custom_id": "a", "method": "GET"}\n\n[]\n')

    result = run_demo(str(bad))

    assert result.returncode == 1
    assert 'line 1: invalid_method: Line 1 method must be "POST"' in result.stdout
    assert "line 3: not_an_object: Line 3 must be a JSON object" in result.stdout
    assert "Outcome: rejected" in result.stdout


def test_a_file_the_pipeline_does_not_take_is_dropped_as_is_and_rejected_as_in_the_bucket(tmp_path: Path) -> None:
    notes = tmp_path / "notes.json"
    notes.write_text('{"custom_id": "a"}\n')

    result = run_demo(str(notes))

    assert result.returncode == 1
    assert "at s3://batchdrop-local/inbox/notes.json\n" in result.stdout  # not renamed notes.json.jsonl
    assert "not_jsonl" in result.stdout and "Outcome: rejected" in result.stdout


def test_a_missing_file_is_a_clear_error() -> None:
    result = run_demo("/nonexistent/input.jsonl")
    assert result.returncode == 2
    assert "no such file" in result.stderr


def test_api_url_uses_that_api_with_the_key_from_the_environment(tmp_path: Path) -> None:
    # Given a ZeroGPU-compatible API that accepts one key only (the emulator, pinned)
    emulator = Emulator(settings=EmulatorSettings(api_key="zgpu-real-key", project_id="proj-1"))
    lines = [
        {
            "custom_id": f"x-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"hello {n}"}]},
        }
        for n in range(3)
    ]
    source = tmp_path / "real.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with EmulatorServer(emulator, "127.0.0.1", 0) as server:
        env = clean_env() | {"ZGPU_API_KEY": "zgpu-real-key", "ZGPU_PROJECT_ID": "proj-1"}

        result = run_demo(str(source), "--api-url", server.url, env=env)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "x-1: echo: hello 1" in result.stdout
        assert emulator.count_calls("POST", "/v1/batches") == 1
        assert "zgpu-real-key" not in result.stdout + result.stderr
    emulator.close()


def test_api_url_without_a_key_is_refused() -> None:
    result = run_demo("--api-url", "http://127.0.0.1:9")
    assert result.returncode == 2
    assert "ZGPU_API_KEY" in result.stderr


def test_keep_leaves_the_stack_running_where_the_commands_it_suggests_find_it(tmp_path: Path) -> None:
    # Given `batchdrop demo --keep` (its own runtime folder: other tests' stacks announce elsewhere)
    env = clean_env() | {"XDG_RUNTIME_DIR": str(tmp_path)}
    demo = subprocess.Popen(
        [str(BIN / "batchdrop"), "demo", "--keep"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line.rstrip())
            if "(or export AWS_ENDPOINT_URL=" in line:
                break
        status_line = next(line for line in lines if line.strip().startswith("batchdrop status job-"))

        # When the commands it suggests run, naming no stack
        command = [str(BIN / "batchdrop"), *status_line.split()[1:]]
        status = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        listed = subprocess.run(
            [str(BIN / "batchdrop"), "jobs", "list", "--output", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    finally:
        demo.terminate()  # as a service manager stops it; Ctrl-C does the same
        demo.wait(timeout=30)

    # Then they find the demo's stack and its job
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout
    assert listed.returncode == 0, listed.stderr
    (job,) = json.loads(listed.stdout)
    assert job["job_id"] == status_line.split()[-1] and job["outcome"] == "succeeded"
    # and once it stops it is withdrawn: nothing is left to find
    assert not list(tmp_path.glob("batchdrop-local-*.json"))
