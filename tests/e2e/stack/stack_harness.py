"""`batchdrop local` as a user runs it: its own process, real sockets, driven by the AWS CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

BIN = Path(sys.executable).parent
BUCKET = "batchdrop-local"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def request(custom_id: str, text: str, model: str = "zgpu-small") -> str:
    """One chat-completion request line of an input file."""
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]},
        }
    )


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "POWERTOOLS_"))}
    return env | {
        "AWS_ACCESS_KEY_ID": "anything",
        "AWS_SECRET_ACCESS_KEY": "anything",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@dataclass
class RunningStack:
    endpoint: str
    emulator_url: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=clean_env)
    """The stack's and its commands' environment: its own XDG_RUNTIME_DIR, where `batchdrop local` says
    what it runs, so that a command that names no stack finds this one and no other test's."""

    def batchdrop(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `batchdrop` command against this stack (its --endpoint-url added)."""
        return self.command(*args, "--endpoint-url", self.endpoint)

    def command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """The `batchdrop` command as a user types it (nothing added: it finds the stack on its own)."""
        return subprocess.run(
            [str(BIN / "batchdrop"), *args], capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def jobs(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.batchdrop("jobs", *args, "--table", "batchdrop-local-jobs")

    def aws(self, *args: str, input_text: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [str(BIN / "aws"), "--endpoint-url", self.endpoint, *args],
            capture_output=True,
            text=True,
            env=clean_env(),
            input=input_text,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def aws_json(self, *args: str) -> Any:
        return json.loads(self.aws(*args, "--output", "json"))

    def read_object(self, key: str) -> bytes | None:
        result = subprocess.run(
            [str(BIN / "aws"), "--endpoint-url", self.endpoint, "s3", "cp", f"s3://{BUCKET}/{key}", "-"],
            capture_output=True,
            env=clean_env(),
            timeout=60,
        )
        return result.stdout if result.returncode == 0 else None

    def wait_for_report(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.read_object(f"outbox/{name}/report.json")
            if body:
                return json.loads(body)
            time.sleep(0.5)
        raise AssertionError(f"no report for {name} after {timeout} s; stack output:\n" + "".join(self.output[-50:]))

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Waits for a condition, never for a fixed time: the negative checks after it are then exact."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not after {timeout} s; stack output:\n" + "".join(self.output[-50:]))
            time.sleep(0.2)

    def pipeline_idle(self) -> bool:
        """No message waits or is being handled on any of the stack's queues (observers' aside)."""
        sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name="us-east-1")
        for url in sqs.list_queues().get("QueueUrls", []):
            if url.rsplit("/", 1)[-1].startswith("observer"):
                continue
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
            if any(int(value) for value in attributes.values()):
                return False
        return True

    def api_calls(self, method: str, path: str) -> int:
        import httpx

        calls = httpx.get(f"{self.emulator_url}/_emulator/calls", timeout=10).json()
        records = calls["data"]
        return sum(1 for call in records if call["method"] == method and call["path"] == path)
