"""`batchdrop dlq list|redrive [--queue ingest|collect|schedule]`: what is dead-lettered, and sending it back.

The queues are found by the stack's outputs (`--stack-name`) or on the local stack (`--local`, or nothing
while it runs; by its names, `batchdrop-local-<LogicalId>`, with `--endpoint-url`). Redrive moves each
message back to the queue it came from, one at a time (sent, then deleted), so it works where
`start-message-move-task` does not (the local stack). The schedule's dead letters are poll ticks: nothing
replays them (the next tick does the work); they are listed, not redriven.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from batchdrop_tools import target
from batchdrop_tools.stack_outputs import StackNotFound

QUEUES = {
    "ingest": ("IngestDeadLetterQueue", "IngestQueue"),
    "collect": ("CollectDeadLetterQueue", "CollectQueue"),
    "schedule": ("PollScheduleDeadLetterQueue", None),
}
_LIST_VISIBILITY_SECONDS = 5
"""Listing receives the messages (SQS has no peek): they are back in the queue after this (a message seen
again while listing is shown once)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "redrive"))
    parser.add_argument(
        "--queue", choices=tuple(QUEUES), help="which dead-letter queue (list: all three if not given; redrive: needed)"
    )
    parser.add_argument("--limit", type=int, default=1000, help="most messages to list or move")
    target.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.queue is None and args.action == "redrive":
        print(
            "batchdrop dlq redrive: name the queue to send back: --queue ingest or --queue collect "
            "(`batchdrop dlq list` shows what each holds)",
            file=sys.stderr,
        )
        return 2
    queues = [args.queue] if args.queue else list(QUEUES)
    names = [name for queue in queues for name in QUEUES[queue] if name]
    try:
        where = target.resolve(args)
        sqs = where.client("sqs")
        urls = _queue_urls(args, where, sqs, names)
    except (StackNotFound, target.TargetError) as error:
        print(f"batchdrop dlq: {error}", file=sys.stderr)
        return 2
    if args.action == "list":
        for queue in queues:
            _list(sqs, urls[QUEUES[queue][0]], args)
        return 0
    dead_letters, source = QUEUES[args.queue]
    if source is None:
        print(
            "batchdrop dlq redrive: the schedule's dead letters are poll ticks; nothing replays them (the next tick "
            "does their work): list them to see why they failed, then purge the queue",
            file=sys.stderr,
        )
        return 1
    return _redrive(sqs, urls[dead_letters], urls[source], args)


def _queue_urls(args: argparse.Namespace, where: target.Target, sqs: Any, names: list[str]) -> dict[str, str]:
    if args.stack_name:
        missing = [name for name in names if name not in where.queues]
        if missing:
            raise StackNotFound(
                f"stack {args.stack_name} has no output {missing[0]}Url: is it a batchdrop stack (template.yaml)?"
            )
        return {name: where.queues[name] for name in names}
    return {
        name: where.queues.get(name) or sqs.get_queue_url(QueueName=f"batchdrop-local-{name}")["QueueUrl"]
        for name in names
    }


def _receive(sqs: Any, url: str, visibility: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=visibility,
        WaitTimeSeconds=1,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    return messages


def _list(sqs: Any, url: str, args: argparse.Namespace) -> int:
    shown = 0
    seen: set[str] = set()
    while shown < args.limit and (messages := _receive(sqs, url, _LIST_VISIBILITY_SECONDS)):
        fresh = [message for message in messages if message["MessageId"] not in seen]
        if not fresh:
            break
        for message in fresh:
            seen.add(message["MessageId"])
            attributes = message.get("Attributes", {})
            sent = datetime.fromtimestamp(int(attributes.get("SentTimestamp", "0")) / 1000, UTC)
            print(
                f"{sent:%Y-%m-%d %H:%M:%S}Z  received {attributes.get('ApproximateReceiveCount', '?')}x  "
                f"{describe(message)}"
            )
            shown += 1
    print(
        f"{shown} message(s) in {url.rsplit('/', 1)[-1]}"
        + (f" (hidden for {_LIST_VISIBILITY_SECONDS} s by this listing)" if shown else "")
    )
    return 0


def describe(message: dict[str, Any]) -> str:
    """What a dead letter was, and why it failed where the message says so."""
    attributes = message.get("MessageAttributes", {})
    error = attributes.get("ERROR_MESSAGE", {}).get("StringValue") or attributes.get("ERROR_CODE", {}).get(
        "StringValue"
    )
    try:
        body = json.loads(message["Body"])
    except ValueError:
        return f"not JSON: {message['Body'][:120]}"
    what: str
    if isinstance(body, dict) and "detail-type" in body:
        detail = body.get("detail") or {}
        if body["detail-type"] == "Object Created":
            what = f"Object Created s3://{detail.get('bucket', {}).get('name')}/{detail.get('object', {}).get('key')}"
        else:
            what = f"{body['detail-type']} {json.dumps(detail)[:160]}"
    elif isinstance(body, dict) and "job_id" in body:
        what = f"collect {body['job_id']}" + (f" shard {body['shard']}" if "shard" in body else "")
    else:
        what = json.dumps(body)[:160]
    return what + (f"  ({error})" if error else "")


def _redrive(sqs: Any, dead_letters: str, source: str, args: argparse.Namespace) -> int:
    moved = 0
    while moved < args.limit and (messages := _receive(sqs, dead_letters, 120)):
        for message in messages:
            sqs.send_message(QueueUrl=source, MessageBody=message["Body"])
            sqs.delete_message(QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    print(f"moved {moved} message(s) from {dead_letters.rsplit('/', 1)[-1]} back to {source.rsplit('/', 1)[-1]}")
    return 0
