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
ROUND_FINISHED = "Batch Job Round Finished"
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

    def round_finished(self, detail: dict[str, Any]) -> None:
        self.put_event(ROUND_FINISHED, detail)

    def request_rejected(self, detail: dict[str, Any]) -> None:
        self.put_event(REJECTED_REQUEST, detail)

    def finished_message(
        self,
        detail: dict[str, Any],
        *,
        links: dict[str, str] | None = None,
        link_hours: float = 0,
        received_at: int | None = None,
    ) -> None:
        """The SNS message, written to be read as an email (`links`: what to open, by output name), with the
        `outcome` attribute for subscription filters."""
        if not self._topic_arn:
            return
        self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=_subject(detail),
            Message=finished_email(detail, links=links, link_hours=link_hours, received_at=received_at),
            MessageAttributes={
                "outcome": {"DataType": "String", "StringValue": detail["outcome"]},
                "event_id": {"DataType": "String", "StringValue": detail["event_id"]},
            },
        )


def _subject(detail: dict[str, Any]) -> str:
    name = detail["input"]["key"].rsplit("/", 1)[-1]
    subject = f"batchdrop: {name} {detail['outcome']}"
    counts = detail["counts"]
    if detail["outcome"] != "rejected":
        subject += f" ({counts['succeeded']:,} of {counts['total']:,} lines)"
    # SNS subjects: ASCII printable, at most 100 characters.
    subject = "".join(char if 32 <= ord(char) < 127 else "?" for char in subject)
    return subject[:100]


_LINK_ORDER = ("results_csv", "output", "errors", "report")
_LINK_NAMES = {
    "results_csv": "results.csv (a row per line)",
    "output": "output.jsonl",
    "errors": "errors.jsonl",
    "report": "report.json",
}
_TOP_ERRORS = 5


def finished_email(
    detail: dict[str, Any],
    *,
    links: dict[str, str] | None = None,
    link_hours: float = 0,
    received_at: int | None = None,
) -> str:
    """`Batch Job Finished` as a person reads it: what happened, what it cost, and where to click."""
    counts = detail["counts"]
    source = f"s3://{detail['input']['bucket']}/{detail['input']['key']}"
    outcome = detail["outcome"]
    lines = [f"{detail['input']['key']}: {outcome}.", ""]
    if detail.get("validation_error_count"):
        lines.append(
            f"Rejected: {detail['validation_error_count']:,} problem(s) found; nothing was sent to the API. "
            "report.json names each line and the fix."
        )
    else:
        lines.append(
            f"Lines: {counts['total']:,} in total: {counts['succeeded']:,} succeeded, {counts['failed']:,} failed."
        )
    took = _duration(received_at, detail.get("finished_at"))
    if took:
        lines.append(f"Took: {took}.")
    rounds = detail.get("rounds") or []
    if len(rounds) > 1:
        lines.append(
            f"Re-driven: {detail.get('retried', 0):,} line(s) went again in {len(rounds) - 1} more round(s); "
            f"{detail.get('recovered', 0):,} recovered."
        )
    errors = sorted((detail.get("errors_by_code") or {}).items(), key=lambda item: (-item[1], item[0]))
    if errors:
        shown = ", ".join(f"{code} {n:,}" for code, n in errors[:_TOP_ERRORS])
        more = f" and {len(errors) - _TOP_ERRORS} more codes" if len(errors) > _TOP_ERRORS else ""
        lines.append(f"Top errors: {shown}{more} (errors.jsonl has each line).")
    usage = (detail.get("usage") or {}).get("total")
    if usage and usage.get("lines"):
        models = ", ".join(detail["usage"]["by_model"])
        lines.append(f"Tokens: {usage['prompt_tokens']:,} in, {usage['completion_tokens']:,} out ({models}).")
    cost = detail.get("cost")
    if cost and usage and usage.get("lines"):
        if cost.get("total") is None:
            lines.append("Cost: not known (no model of this job is in the price table; see PriceTable).")
        else:
            unpriced = cost.get("unpriced_models") or []
            note = f"; not priced: {', '.join(unpriced)}" if unpriced else ""
            lines.append(
                f"Cost: {_money(cost['total'])} {cost['currency']}, at prices as of {cost['prices_as_of']}{note}."
            )
    lines.append("")
    if links:
        lines.append(f"Open the results (links valid for up to {link_hours:g} hours):")
    else:
        lines.append("Results:")
    outputs = detail["outputs"]
    for name in [*_LINK_ORDER, *(name for name in outputs if name not in _LINK_ORDER)]:
        if name in outputs:
            lines.append(f"  {_LINK_NAMES.get(name, name)}: {(links or {}).get(name, outputs[name])}")
    lines += ["", f"Job {detail['job_id']}, input {source}."]
    return "\n".join(lines)


def _money(value: float) -> str:
    return f"{value:,.2f}" if value >= 1 else f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def _duration(received_at: int | None, finished_at: str | None) -> str | None:
    if received_at is None or not finished_at:
        return None
    from datetime import datetime

    seconds = int(datetime.fromisoformat(finished_at.replace("Z", "+00:00")).timestamp()) - received_at
    if seconds < 0:
        return None
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"
