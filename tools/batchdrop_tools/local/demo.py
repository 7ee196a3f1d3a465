"""`batchdrop demo [FILE]`: one end-to-end run on the local stack, printing `custom_id: answer` per line."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from batchdrop_tools.local.stack import LocalStack, LocalStackConfig, quiet_logs

FAILED_OUTCOMES = ("failed", "rejected")


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _sample() -> tuple[str, bytes]:
    return "demo.jsonl", resources.files("batchdrop_tools").joinpath("samples/demo.jsonl").read_bytes()


def _answer(line: dict[str, Any]) -> str:
    try:
        return str(line["response"]["body"]["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return "(no answer in the response)"


def run_demo(args: Any) -> int:
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            print(f"batchdrop demo: no such file: {path}", file=sys.stderr)
            return 2
        name, body = path.name, path.read_bytes()
    else:
        name, body = _sample()
    if not name.endswith((".jsonl", ".jsonl.gz")):
        name += ".jsonl"
    api_key, project_id = os.environ.get("ZGPU_API_KEY"), os.environ.get("ZGPU_PROJECT_ID")
    if args.api_url and not api_key:
        print(
            "batchdrop demo: --api-url needs ZGPU_API_KEY (and ZGPU_PROJECT_ID) in the environment",
            file=sys.stderr,
        )
        return 2
    quiet_logs()
    host = "127.0.0.1"
    config = LocalStackConfig(
        host=host,
        aws_port=_free_port(host),
        emulator_port=_free_port(host),
        poll_seconds=0.5,
        api_url=args.api_url,
        api_key=api_key if args.api_url else None,
        project_id=project_id if args.api_url else None,
        log_level="WARNING",
        lines_per_second=getattr(args, "lines_per_second", None),
    )
    with LocalStack(config) as stack:
        s3 = stack.client("s3")
        key = f"inbox/{name}"
        base = name.removesuffix(".gz").removesuffix(".jsonl")
        print(f"Dropping {len(body.splitlines())} request(s) at s3://{config.bucket}/{key}")
        s3.put_object(Bucket=config.bucket, Key=key, Body=body)
        report = _wait_for_report(s3, config.bucket, f"outbox/{base}/report.json", args.timeout)
        if report is None:
            print(f"batchdrop demo: no report after {args.timeout:.0f} s", file=sys.stderr)
            return 1
        _print_results(s3, config.bucket, base, report)
    return 1 if report["outcome"] in FAILED_OUTCOMES else 0


def _wait_for_report(s3: Any, bucket: str, key: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            report: dict[str, Any] = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            return report
        except s3.exceptions.NoSuchKey:
            time.sleep(0.25)
    return None


def _print_results(s3: Any, bucket: str, base: str, report: dict[str, Any]) -> None:
    def lines(key: str) -> list[dict[str, Any]]:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return []
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    print()
    for line in lines(f"outbox/{base}/output.jsonl"):
        print(f"{line['custom_id']}: {_answer(line)}")
    for line in lines(f"outbox/{base}/errors.jsonl"):
        error = line.get("error") or {}
        print(f"{line['custom_id']}: ERROR {error.get('code')}: {error.get('message')}")
    for problem in report.get("validation_errors", []):
        print(f"line {problem['line']}: {problem['code']}: {problem['message']}")
    counts = report["counts"]
    print()
    print(
        f"Outcome: {report['outcome']} ({counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['total']} total)"
    )
    usage = (report.get("usage") or {}).get("total")
    if usage and usage.get("lines"):
        print(f" Tokens: {usage['prompt_tokens']:,} in, {usage['completion_tokens']:,} out")
    cost = report.get("cost")
    if cost:
        total = cost.get("total")
        priced = (
            f"{total:.6f} {cost['currency']}" if total is not None else "not known (no model of this file is priced)"
        )
        print(f"   Cost: {priced}")
    for label, uri in report["outputs"].items():
        print(f"{label:>7}: {uri}")
