"""Announcements: EventBridge events (source `batchdrop`) and one SNS message per finished job."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sns import SNSClient

EVENT_SOURCE = "batchdrop"
SUBMITTED = "Batch Job Submitted"
FINISHED = "Batch Job Finished"
REJECTED_REQUEST = "Batch Job Rejected"


class AnnouncementRefused(Exception):
    """EventBridge took the call but refused the event (the caller's retry sends it again)."""


class Notifier:
    def __init__(self, *, events: EventBridgeClient, sns: SNSClient, bus_name: str, topic_arn: str) -> None:
        self._events = events
        self._sns = sns
        self._bus_name = bus_name
        self._topic_arn = topic_arn

    def put_event(self, detail_type: str, detail: dict[str, Any]) -> None:
        reply = self._events.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self._bus_name,
                    "Resources": [],
                }
            ]
        )
        if reply.get("FailedEntryCount"):
            failure = reply["Entries"][0]
            raise AnnouncementRefused(
                f"EventBridge refused {detail_type}: {failure.get('ErrorCode')} {failure.get('ErrorMessage')}"
            )

    def submitted_event(self, detail: dict[str, Any]) -> None:
        self.put_event(SUBMITTED, detail)

    def finished_event(self, detail: dict[str, Any]) -> None:
        self.put_event(FINISHED, detail)

    def request_rejected(self, detail: dict[str, Any]) -> None:
        self.put_event(REJECTED_REQUEST, detail)

    def finished_message(self, detail: dict[str, Any]) -> None:
        """The human-readable SNS summary, with the `outcome` attribute for subscription filters."""
        if not self._topic_arn:
            return
        self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=_subject(detail),
            Message=_summary(detail),
            MessageAttributes={
                "outcome": {"DataType": "String", "StringValue": detail["outcome"]},
                "event_id": {"DataType": "String", "StringValue": detail["event_id"]},
            },
        )


def _subject(detail: dict[str, Any]) -> str:
    name = detail["input"]["key"].rsplit("/", 1)[-1]
    subject = f"batchdrop: {name} {detail['outcome']}"
    # SNS subjects: ASCII printable, at most 100 characters.
    subject = "".join(char if 32 <= ord(char) < 127 else "?" for char in subject)
    return subject[:100]


def _summary(detail: dict[str, Any]) -> str:
    counts = detail["counts"]
    lines = [
        f"batchdrop job {detail['job_id']} {detail['outcome']}.",
        f"Input: s3://{detail['input']['bucket']}/{detail['input']['key']}",
        f"Lines: {counts['total']} total, {counts['succeeded']} succeeded, {counts['failed']} failed.",
    ]
    if detail.get("errors_by_code"):
        lines.append(
            "Errors by code: " + ", ".join(f"{code}: {n}" for code, n in sorted(detail["errors_by_code"].items()))
        )
    if detail.get("validation_error_count"):
        lines.append(f"Rejected: {detail['validation_error_count']} invalid line(s); nothing was sent to the API.")
    lines.append("Results:")
    lines.extend(f"  {name}: {uri}" for name, uri in detail["outputs"].items())
    return "\n".join(lines)
