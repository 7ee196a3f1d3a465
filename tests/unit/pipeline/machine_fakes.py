"""Small in-memory fakes for the state-machine tier: the job store's primitives (the write-once protocol
on top of them is the real one), S3, the notifier and a scripted ZeroGPU client."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from batchdrop.integrations.store import JobStore, StaleRecord, _advanced, shard_partition
from batchdrop.integrations.zerogpu import Batch, FileObject, ZeroGPUError
from batchdrop.models import InputInfo, Job, JobStatus, Shard, ShardState
from batchdrop.services import Services
from batchdrop.settings import Settings

BUCKET = "data"
NOW = 1_767_225_600


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeStore(JobStore):
    """Versioned records in dictionaries: a write on a stale version raises StaleRecord, as DynamoDB's
    condition would; the slot counter never passes its limit nor goes below zero."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(client=None, table_name="jobs", clock=clock)
        self.jobs: dict[str, Job] = {}
        self.shards: dict[tuple[str, int], Shard] = {}
        self.in_use = 0
        self.job_writes = 0
        self.slot_reads = 0
        self.job_reads = 0

    # jobs
    def get_job(self, job_id: str) -> Job | None:
        self.job_reads += 1
        return self.jobs.get(job_id)

    def create_job(self, job: Job) -> Job:
        return self.jobs.setdefault(job.job_id, job)

    def update_job(self, job: Job, *, sweep_at: int | bool | None = False, **changes: Any) -> Job:
        stored = self.jobs.get(job.job_id)
        if stored is None or stored.version != job.version:
            raise StaleRecord(job.job_id)
        fields = {name: value for name, value in changes.items() if name in Job.model_fields}
        self.jobs[job.job_id] = stored.model_copy(update=fields | {"version": stored.version + 1})
        self.job_writes += 1
        return job.model_copy(update=changes | {"version": job.version + 1})

    def note_progress(self, shard: Shard) -> None:
        job = self.jobs[shard.job_id]
        started = set(job.started_shards or ())
        collected = set(job.collected_shards or ())
        if shard.state != ShardState.PENDING:
            started.add(shard.index)
        if shard.state == ShardState.COLLECTED:
            collected.add(shard.index)
        self.jobs[shard.job_id] = job.model_copy(
            update={"started_shards": started or None, "collected_shards": collected or None}
        )

    # shards
    def put_shards(self, shards: list[Shard]) -> None:
        for shard in shards:
            self.shards.setdefault((shard.job_id, shard.index), shard)

    def get_shard(self, job_id: str, index: int) -> Shard | None:
        return self.shards.get((job_id, index))

    def get_shards(self, job_id: str) -> list[Shard]:
        return sorted((s for (j, _), s in self.shards.items() if j == job_id), key=lambda s: s.index)

    def update_shard(self, shard: Shard, **changes: Any) -> Shard:
        self._check(shard)
        self.shards[(shard.job_id, shard.index)] = _advanced(self.shards[(shard.job_id, shard.index)], changes)
        return self._after_write(shard, changes)

    def _update_shard_and_slots(self, shard: Shard, changes: dict[str, Any], slots: dict[str, Any]) -> Shard | None:
        self._check(shard)
        if "in_use < :max" in slots["ConditionExpression"]:
            if self.in_use >= int(slots["ExpressionAttributeValues"][":max"]["N"]):
                return None
            self.in_use += 1
        else:
            if self.in_use <= 0:
                return None
            self.in_use -= 1
        self.shards[(shard.job_id, shard.index)] = _advanced(self.shards[(shard.job_id, shard.index)], changes)
        return self._after_write(shard, changes)

    def slots_in_use(self) -> int:
        self.slot_reads += 1
        return self.in_use

    def waiting_shards(
        self, *, until: int | None = None, limit: int | None = None, page_size: int | None = None
    ) -> Iterator[Shard]:
        waiting = [
            s
            for s in self.shards.values()
            if shard_partition(s) == "WAITING" and (until is None or (s.next_poll_at or 0) <= until)
        ]
        yield from sorted(waiting, key=lambda s: s.next_poll_at or 0)[:limit]

    def due_shard_pages(self, now: int, *, limit: int | None = None) -> Iterator[list[Shard]]:
        due = [s for s in self.shards.values() if shard_partition(s) == "ACTIVE" and (s.next_poll_at or 0) <= now]
        if due:
            yield sorted(due, key=lambda s: s.next_poll_at or 0)[:limit]

    def finishing_jobs(self, now: int, *, limit: int | None = None) -> Iterator[Job]:
        return iter(())

    def _check(self, shard: Shard) -> None:
        stored = self.shards.get((shard.job_id, shard.index))
        if stored is None or stored.version != shard.version:
            raise StaleRecord(f"{shard.job_id}/{shard.index}")


class FakeS3:
    """Objects in a dictionary; what the pipeline calls of boto3's S3 client, nothing more."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    @staticmethod
    def _missing(operation: str) -> ClientError:
        return ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, operation)

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ContentLength": len(self.objects[Key]), "ETag": '"etag"', "VersionId": "v1"}

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        if Key not in self.objects:
            raise self._missing("GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def download_file(self, bucket: str, key: str, path: str, **_: Any) -> None:
        with open(path, "wb") as target:
            shutil.copyfileobj(self.get_object(Bucket=bucket, Key=key)["Body"], target)

    def upload_file(self, path: str, bucket: str, key: str, **_: Any) -> None:
        with open(path, "rb") as source:
            self.objects[key] = source.read()

    def upload_fileobj(self, fileobj: Any, bucket: str, key: str, **_: Any) -> None:
        self.objects[key] = fileobj.read()

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict[str, Any]:
        self.objects[Key] = Body
        return {}

    def generate_presigned_url(self, operation: str, Params: dict[str, str], ExpiresIn: int) -> str:
        return f"https://{Params['Bucket']}.example/{Params['Key']}?X-Amz-Expires={ExpiresIn}"

    def copy(self, source: Mapping[str, str], bucket: str, key: str, **_: Any) -> None:
        if source["Key"] not in self.objects:
            raise self._missing("CopyObject")
        self.objects[key] = self.objects[source["Key"]]

    def delete_objects(self, Bucket: str, Delete: Mapping[str, Any]) -> dict[str, Any]:
        for entry in Delete["Objects"]:
            self.objects.pop(entry["Key"], None)
        return {}


@dataclass
class FakeSqs:
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self.sent.append((QueueUrl, json.loads(MessageBody)))
        return {}


@dataclass
class FakeNotifier:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    fail_messages: int = 0

    def submitted_event(self, detail: dict[str, Any]) -> None:
        self.events.append(("Batch Job Submitted", detail))

    def finished_event(self, detail: dict[str, Any]) -> None:
        self.events.append(("Batch Job Finished", detail))

    def request_rejected(self, detail: dict[str, Any]) -> None:
        self.events.append(("Batch Job Rejected", detail))

    def finished_message(self, detail: dict[str, Any], **_: Any) -> None:
        if self.fail_messages:
            self.fail_messages -= 1
            raise RuntimeError("SNS is down")
        self.messages.append(detail)


@dataclass
class FakeApi:
    """A scripted ZeroGPU client: what each call returns (or raises), and the calls made."""

    found_file: FileObject | None = None
    found_batch: Batch | None = None
    create_error: ZeroGPUError | None = None
    calls: list[str] = field(default_factory=list)

    def find_file(
        self, filename: str, size: int | None = None, *, created_after: int | None = None
    ) -> FileObject | None:
        self.calls.append("find_file")
        return self.found_file

    def upload_file_or_adopt(self, path: str, filename: str, *, created_after: int) -> FileObject:
        self.calls.append("upload")
        return FileObject(id="file-1", bytes=0, created_at=NOW, filename=filename, purpose="batch")

    def find_batch(self, metadata: Mapping[str, str], *, created_after: int | None = None) -> Batch | None:
        self.calls.append("find_batch")
        return self.found_batch

    def create_batch_or_adopt(self, input_file_id: str, *, metadata: Mapping[str, str], created_after: int) -> Batch:
        self.calls.append("create")
        if self.create_error is not None:
            raise self.create_error
        return batch("batch-1")

    def close(self) -> None:
        pass


def batch(batch_id: str, status: str = "in_progress") -> Batch:
    return Batch.model_validate(
        {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-1",
            "completion_window": "24h",
            "status": status,
            "created_at": NOW,
        }
    )


SETTINGS = Settings.from_environ(
    {
        "TABLE_NAME": "jobs",
        "SECRET_ID": "secret",
        "BUCKET_NAME": BUCKET,
        "TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:topic",
        "INPUT_PREFIX": "inbox/",
        "OUTPUT_PREFIX": "outbox/",
        "WORK_PREFIX": "work/",
        "COLLECT_QUEUE_URL": "collect",
        "INGEST_QUEUE_URL": "ingest",
        "MAX_BATCHES_IN_FLIGHT": "2",
    }
)


@dataclass
class Machine:
    """Everything a step is given, made of the fakes above."""

    clock: Clock = field(default_factory=Clock)
    api: FakeApi = field(default_factory=FakeApi)
    s3: FakeS3 = field(default_factory=FakeS3)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)
    sqs: FakeSqs = field(default_factory=FakeSqs)
    credentials_readable: bool = True

    def __post_init__(self) -> None:
        self.store = FakeStore(self.clock)
        self.workdir = tempfile.mkdtemp(prefix="machine-")

    def services(self, owner: str = "invocation-1") -> Services:
        def api_factory() -> Any:
            if not self.credentials_readable:
                raise RuntimeError("the secret cannot be read")
            return self.api

        return Services(
            settings=SETTINGS,
            s3=self.s3,
            sqs=self.sqs,
            store=self.store,
            notifier=self.notifier,  # type: ignore[arg-type]
            api_factory=api_factory,
            workdir=self.workdir,
            owner=owner,
            clock=self.clock,
        )

    def job(self, status: JobStatus = JobStatus.SUBMITTING, shards: int = 1, **fields: Any) -> Job:
        job = Job(
            job_id="job-" + "a" * 32,
            status=status,
            input=InputInfo(bucket=BUCKET, key="inbox/x.jsonl", version_id="v1", etag="etag", bytes=10, lines=shards),
            output_prefix="outbox/x/",
            received_at=NOW,
            shard_count=shards,
            **fields,
        )
        self.store.jobs[job.job_id] = job
        return job

    def shard(self, job: Job, index: int = 0, **fields: Any) -> Shard:
        content = b'{"custom_id": "c-%d"}\n' % index
        work_key = f"work/{job.job_id}/shards/{index:05d}.jsonl"
        self.s3.objects[work_key] = content
        values: dict[str, Any] = {
            "job_id": job.job_id,
            "index": index,
            "state": ShardState.PENDING,
            "work_key": work_key,
            "lines": 1,
            "bytes": len(content),
            "first_line": index + 1,
            "waiting_since": NOW,
            "next_poll_at": NOW,
            "of": job.shard_count,
        }
        shard = Shard(**(values | fields))
        self.store.shards[(job.job_id, index)] = shard
        return shard
