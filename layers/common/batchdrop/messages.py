"""The messages the queues carry, in both directions: what arrives on the ingest queue (turned into
submit requests), the shards the poller hands over, and the collect queue's requests.

Three shapes of input event are accepted, each decoded exactly once by the rules of its source:
- EventBridge `Object Created` from S3 (the stack's own rule);
- EventBridge `Submit Batch Job` from another service: detail `{"bucket", "key", "version_id"?}`, raw key;
- a direct S3 event notification (`Records[].s3`, for buckets wired straight to the queue): form-encoded key.

AWS documents S3 notification keys as form-encoded; EventBridge S3 keys are decoded by Powertools'
data class the same way, while some emulators send them raw. So an EventBridge key yields two candidates,
decoded first, and the submit step keeps the one whose HEAD matches the event's ETag or version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

SUBMIT_DETAIL_TYPE = "Submit Batch Job"
RETRY_DETAIL_TYPE = "Retry Batch Job"
OBJECT_CREATED_DETAIL_TYPE = "Object Created"
SUBMIT_EVENT_SOURCE = "submit-event"


SHARD_HANDOVER = "submit-shard"


class InvalidMessage(Exception):
    """The message is not one of the accepted shapes; retrying it cannot help."""


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    bucket: str
    key_candidates: tuple[str, ...]
    version_id: str | None = None
    etag: str | None = None
    source: str = "s3"
    detail: Any = None
    """A `Submit Batch Job` event's detail as received: a rejection echoes it to the sender."""


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    """A `Submit Batch Job` event that cannot be taken: the sender hears why (`Batch Job Rejected`)."""

    detail: Any
    reason: str


@dataclass(frozen=True, slots=True)
class RetryRequest:
    """`Retry Batch Job`: re-drive a finished job's failed lines (by default those another try can help)."""

    job_id: str
    codes: tuple[str, ...]
    all_failed: bool
    detail: Any


@dataclass(frozen=True, slots=True)
class ShardRequest:
    """The poller hands a held-back shard to the submit function, whose time limit fits an upload."""

    job_id: str
    shard: int


def shard_handover_body(job_id: str, shard: int) -> str:
    return json.dumps({"batchdrop": SHARD_HANDOVER, "job_id": job_id, "shard": shard})


@dataclass(frozen=True, slots=True)
class CollectRequest:
    """A shard has ended at the API: collect its results (and finish the job once all are in)."""

    job_id: str
    shard: int


@dataclass(frozen=True, slots=True)
class FinalizeRequest:
    """A job whose end was never announced (its claimant died): finish it, mending its progress notes."""

    job_id: str


def collect_body(job_id: str, shard: int) -> str:
    return json.dumps({"job_id": job_id, "shard": shard})


def finalize_body(job_id: str) -> str:
    return json.dumps({"job_id": job_id, "finalize": True})


def parse_collect_message(body: str) -> CollectRequest | FinalizeRequest:
    """Raises InvalidMessage for anything else (retrying it cannot help)."""
    try:
        message = json.loads(body)
        job_id = message["job_id"]
        if not isinstance(job_id, str) or not job_id:
            raise TypeError("job_id")
        if message.get("finalize") is True:
            return FinalizeRequest(job_id)
        shard = message["shard"]
        if isinstance(shard, bool) or not isinstance(shard, int) or shard < 0:
            raise TypeError("shard")
        return CollectRequest(job_id, shard)
    except (ValueError, TypeError, KeyError) as error:
        raise InvalidMessage(f"not a collect request ({error}): {body[:200]!r}") from None


def _version(value: object) -> str | None:
    """S3 says "null" for objects written while versioning was off or suspended."""
    return value if isinstance(value, str) and value and value != "null" else None


def _candidates(*keys: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(key for key in keys if key))


def parse_ingest_message(body: str) -> list[SubmitRequest | ShardRequest | RejectedRequest | RetryRequest]:
    try:
        message = json.loads(body)
    except ValueError:
        raise InvalidMessage("the message body is not JSON") from None
    if not isinstance(message, dict):
        raise InvalidMessage("the message body is not a JSON object")
    if message.get("batchdrop") == SHARD_HANDOVER:
        try:
            return [ShardRequest(str(message["job_id"]), int(message["shard"]))]
        except (KeyError, TypeError, ValueError):
            raise InvalidMessage("a shard handover without job_id and shard") from None
    if "Records" in message:
        return [_from_s3_record(record) for record in message["Records"] if record.get("eventSource") == "aws:s3"]
    if message.get("Event") == "s3:TestEvent":
        return []
    detail_type = message.get("detail-type")
    detail = message.get("detail")
    if detail_type == SUBMIT_DETAIL_TYPE:
        return [_from_submit_event(detail)]
    if detail_type == RETRY_DETAIL_TYPE:
        return [_from_retry_event(detail)]
    if not isinstance(detail, dict):
        raise InvalidMessage(f"an event of type {detail_type!r} without a detail object")
    if detail_type == OBJECT_CREATED_DETAIL_TYPE:
        return [_from_object_created(detail)]
    raise InvalidMessage(f"unexpected event type {detail_type!r}")


def _from_object_created(detail: dict[str, Any]) -> SubmitRequest:
    try:
        bucket = detail["bucket"]["name"]
        raw_key = detail["object"]["key"]
    except (KeyError, TypeError):
        raise InvalidMessage("an Object Created event without bucket.name and object.key") from None
    obj = detail["object"]
    return SubmitRequest(
        bucket=bucket,
        key_candidates=_candidates(unquote_plus(raw_key), raw_key),
        version_id=_version(obj.get("version-id")),
        etag=obj.get("etag") or obj.get("eTag"),
        source="eventbridge",
    )


def _from_submit_event(detail: Any) -> SubmitRequest | RejectedRequest:
    usage = 'a Submit Batch Job event needs detail {"bucket": "...", "key": "...", "version_id": "..." (optional)}'
    if not isinstance(detail, dict):
        return RejectedRequest(detail, f"the detail is not an object: {usage}")
    bucket, key, version_id = detail.get("bucket"), detail.get("key"), detail.get("version_id")
    if not isinstance(bucket, str) or not bucket:
        return RejectedRequest(detail, f"no bucket: {usage}")
    if not isinstance(key, str) or not key:
        return RejectedRequest(detail, f"no key: {usage}")
    if version_id is not None and not isinstance(version_id, str):
        return RejectedRequest(detail, f"version_id must be a string: {usage}")
    return SubmitRequest(
        bucket=bucket,
        key_candidates=(key,),
        version_id=_version(version_id),
        source=SUBMIT_EVENT_SOURCE,
        detail=detail,
    )


def _from_retry_event(detail: Any) -> RetryRequest | RejectedRequest:
    usage = (
        'a Retry Batch Job event needs detail {"job_id": "job-...", "codes": ["..."] (optional), "all_failed": false}'
    )
    if not isinstance(detail, dict):
        return RejectedRequest(detail, f"the detail is not an object: {usage}")
    job_id, codes, all_failed = detail.get("job_id"), detail.get("codes", []), detail.get("all_failed", False)
    if not isinstance(job_id, str) or not job_id:
        return RejectedRequest(detail, f"no job_id: {usage}")
    if not isinstance(codes, list) or not all(isinstance(code, str) and code for code in codes):
        return RejectedRequest(detail, f"codes must be a list of failure codes: {usage}")
    if not isinstance(all_failed, bool):
        return RejectedRequest(detail, f"all_failed must be true or false: {usage}")
    return RetryRequest(job_id, tuple(codes), all_failed, detail)


def _from_s3_record(record: dict[str, Any]) -> SubmitRequest:
    try:
        s3 = record["s3"]
        bucket, raw_key = s3["bucket"]["name"], s3["object"]["key"]
    except (KeyError, TypeError):
        raise InvalidMessage("an S3 record without s3.bucket.name and s3.object.key") from None
    return SubmitRequest(
        bucket=bucket,
        key_candidates=(unquote_plus(raw_key),),
        version_id=_version(s3["object"].get("versionId")),
        etag=s3["object"].get("eTag"),
        source="s3-notification",
    )


class SubmitResult(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    result: SubmitResult
    job_id: str | None = None
    reason: str = ""
