"""The queues the poller sends to: shards handed to submit (ingest queue) and to collect (collect queue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchdrop.messages import collect_body, finalize_body, shard_handover_body

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class Queues:
    def __init__(self, sqs: SQSClient, *, ingest_queue_url: str, collect_queue_url: str) -> None:
        self._sqs = sqs
        self._ingest_queue_url = ingest_queue_url
        self._collect_queue_url = collect_queue_url

    def hand_over(self, job_id: str, shard: int) -> None:
        """A shard to the submit function: its turn for a slot, or a submission being retried."""
        self._sqs.send_message(QueueUrl=self._ingest_queue_url, MessageBody=shard_handover_body(job_id, shard))

    def collect(self, job_id: str, shard: int) -> None:
        """A shard that has ended, to collect."""
        self._sqs.send_message(QueueUrl=self._collect_queue_url, MessageBody=collect_body(job_id, shard))

    def finalize(self, job_id: str) -> None:
        """A job whose end is overdue, to collect (which finishes it)."""
        self._sqs.send_message(QueueUrl=self._collect_queue_url, MessageBody=finalize_body(job_id))
