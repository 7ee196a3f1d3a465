"""Which stack a command talks to, as the AWS CLI finds things: `--stack-name` (its outputs, through
CloudFormation), `--local` (the stack `batchdrop local` runs, also found on its own when it runs and
nothing else is named), or the resources named one by one (`--table`, `--bucket`); with `--region`,
`--profile` and `--endpoint-url` as the AWS CLI has them.

`batchdrop local` leaves a small file while it runs (`local_file()`: its endpoint and resource names;
nothing secret) and removes it when it stops; the commands read it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from batchdrop_tools.stack_outputs import StackNotFound, output, stack_outputs

LOCAL_ENDPOINT = "http://127.0.0.1:4566"
LOCAL_REGION = "us-east-1"
LOCAL_BUCKET = "batchdrop-local"
LOCAL_TABLE = "batchdrop-local-jobs"


class TargetError(Exception):
    """What the command needs was not named, or cannot be found: the message says how to name it."""


def local_file() -> Path:
    """Where `batchdrop local` says what it runs (one per user; the last started wins)."""
    folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(folder) / f"batchdrop-local-{os.getuid()}.json"


def announce_local(description: dict[str, Any]) -> Path:
    path = local_file()
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(description | {"pid": os.getpid()}, indent=2))
    temporary.replace(path)
    return path


def withdraw_local() -> None:
    path = local_file()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def running_local() -> dict[str, Any] | None:
    """What a running `batchdrop local` announced (None: none runs)."""
    try:
        described: dict[str, Any] = json.loads(local_file().read_text())
        os.kill(int(described["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return described


@dataclass
class Target:
    session: Any
    endpoint_url: str | None
    where: str
    """How the messages name it: `stack batchdrop-prod`, `batchdrop local at http://…`."""
    table: str | None = None
    bucket: str | None = None
    input_prefix: str = "inbox/"
    output_prefix: str = "outbox/"
    queues: dict[str, str] = field(default_factory=dict)
    """Queue URLs by the template's logical id (IngestQueue, IngestDeadLetterQueue, …)."""
    local: bool = False

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url)

    def need_table(self) -> str:
        if not self.table:
            raise TargetError(
                "which stack? name it with --stack-name, use --local (batchdrop local), "
                "or name the jobs table with --table or $TABLE_NAME"
            )
        return self.table

    def need_bucket(self) -> str:
        if not self.bucket:
            raise TargetError(
                "which stack? name it with --stack-name, use --local (batchdrop local), "
                "or name the bucket with --bucket or $BUCKET_NAME"
            )
        return self.bucket


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_argument_group("which stack (as the AWS CLI finds things)")
    where.add_argument("--stack-name", help="the deployed stack: its resources are read from its outputs")
    where.add_argument(
        "--local",
        action="store_true",
        help="the stack `batchdrop local` runs (also used on its own when it runs and nothing else is named)",
    )
    where.add_argument("--table", help="the jobs table (default $TABLE_NAME; a running batchdrop local comes first)")
    where.add_argument("--bucket", help="the bucket (default $BUCKET_NAME; a running batchdrop local comes first)")
    where.add_argument("--endpoint-url", help="an AWS endpoint other than the default (e.g. batchdrop local's)")
    where.add_argument("--region", help="the AWS region (default: the AWS CLI's, from $AWS_REGION or the profile)")
    where.add_argument("--profile", help="a named profile of the AWS CLI's configuration")


def resolve(args: argparse.Namespace) -> Target:
    """The stack the arguments name (TargetError if they name none, or a stack that is not there). Flags
    name one; else a running batchdrop local is it; else $TABLE_NAME and $BUCKET_NAME (exported for a
    deployed stack, they do not hide a local one started since)."""
    named = bool(getattr(args, "stack_name", None) or args.table or args.bucket or args.endpoint_url)
    described = running_local()
    if args.local or (described is not None and not named):
        return _local(args, described)
    exported = ("TABLE_NAME", "BUCKET_NAME", "AWS_ENDPOINT_URL")
    if not named and not any(os.environ.get(name) for name in exported):
        raise TargetError(
            "which stack? no batchdrop local is running here: start it (`batchdrop local`, another terminal) "
            "or pass --local; for a deployed stack pass --stack-name NAME (and --region, --profile)"
        )
    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    if args.stack_name:
        try:
            outputs = stack_outputs(
                args.stack_name,
                endpoint_url=args.endpoint_url,
                client=session.client("cloudformation", endpoint_url=args.endpoint_url),
            )
            table = output(outputs, "TableName", args.stack_name)
        except StackNotFound as error:
            raise TargetError(str(error)) from None
        return Target(
            session=session,
            endpoint_url=args.endpoint_url,
            where=f"stack {args.stack_name}",
            table=table,
            bucket=outputs.get("BucketName"),
            input_prefix=outputs.get("InputPrefix", "inbox/"),
            output_prefix=outputs.get("OutputPrefix", "outbox/"),
            queues={key.removesuffix("Url"): value for key, value in outputs.items() if key.endswith("QueueUrl")},
        )
    return Target(
        session=session,
        endpoint_url=args.endpoint_url,
        where=args.endpoint_url or "the default AWS endpoint",
        table=args.table or os.environ.get("TABLE_NAME"),
        bucket=args.bucket or os.environ.get("BUCKET_NAME"),
    )


def _local(args: argparse.Namespace, described: dict[str, Any] | None) -> Target:
    described = described or {}
    endpoint = args.endpoint_url or described.get("endpoint_url") or LOCAL_ENDPOINT
    # Any credentials work on the local stack: the caller's are used if they have some.
    session = boto3.Session(profile_name=args.profile, region_name=args.region or LOCAL_REGION)
    if session.get_credentials() is None:
        session = boto3.Session(
            aws_access_key_id="local", aws_secret_access_key="local", region_name=args.region or LOCAL_REGION
        )
    return Target(
        session=session,
        endpoint_url=endpoint,
        where=f"batchdrop local at {endpoint}",
        table=args.table or described.get("table") or LOCAL_TABLE,
        bucket=args.bucket or described.get("bucket") or LOCAL_BUCKET,
        input_prefix=described.get("input_prefix", "inbox/"),
        output_prefix=described.get("output_prefix", "outbox/"),
        queues=dict(described.get("queues") or {}),
        local=True,
    )
