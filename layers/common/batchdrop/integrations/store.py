"""Jobs and shards in one DynamoDB table.

Layout (keys `pk`/`sk`):
- `JOB#<job_id>` / `JOB`            the job
- `JOB#<job_id>` / `SHARD#<nnnnn>`  its shards; until a shard is collected it carries `active_pk` and
                                    `next_poll_at`, which put it in the sparse `ActiveShards` index
- `JOB#<job_id>` / `LIVE#<nnnn>`   its batches as the poller last saw them, for its progress: shard
                                    index // LIVE_PER_ITEM, an attribute `b<index>` a batch, unversioned
- `JOB#<job_id>` / `MERGED`         where its shards' result files lie in its merged outbox files
                                    (gzipped JSON), written at each end of the job
- `SLOTS` / `IN_FLIGHT`             the number of batches in flight, a counting semaphore
  (job items also carry `listed_day`, the UTC day they arrived: the `JobsByDay` index lists them newest
  first, for the operator)
- Powertools idempotency records under their own partition.

The sparse index has three partitions (`active_pk`), so that no kind of work can starve another:
- `ACTIVE`:    shards the poller looks at when due (`next_poll_at`): running batches, ended shards
               waiting for collect, submissions being retried, shards of a cancelled job;
- `WAITING`:   shards waiting for an in-flight slot, oldest first (`next_poll_at` is when they began
               to wait): a queue the poller takes from as slots free up, however long it grows;
- `FINISHING`: job items whose end is not announced yet, due when the announcement's claim lapses.

Every state change is a conditional write on the item's `version`: of two racing writers exactly one
wins, and the loser gets `StaleRecord` and decides again from a fresh read. TTL (`expires_at`) only
tidies up; reads ignore expired items themselves because DynamoDB deletes them late.
"""

from __future__ import annotations

import gzip
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic_core import to_jsonable_python

from batchdrop.models import BatchProgress, Job, JobProgress, JobStatus, MergedLayout, Shard, ShardState

ACTIVE_INDEX = "ActiveShards"
JOBS_BY_DAY_INDEX = "JobsByDay"
ACTIVE_PARTITION = "ACTIVE"
WAITING_PARTITION = "WAITING"
FINISHING_PARTITION = "FINISHING"
_PAGE_SIZE = 500
_ATTEMPTS = 8
_BATCH_GET_KEYS = 100  # BatchGetItem's most keys a call
WAITING_COUNT_PAGES = 20  # of the waiting shards' count a run: 20 MB of index keys, 100,000 shards or more
LIVE_PER_ITEM = 500  # batches a LIVE# item: about 50 KB
LIVE_SETS_PER_WRITE = 100  # "#b99 = :b99, " a batch: 1.4 KB of a 4 KB expression
_SLOTS_KEY = {"pk": {"S": "SLOTS"}, "sk": {"S": "IN_FLIGHT"}}
_SLOT_CONFLICT_ATTEMPTS = 4
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


JobClaim = Literal["notify_claimed_at", "submit_announce_claimed_at", "round_claimed_at"]
"""The job's leases: on its end's announcement, on `Batch Job Submitted`, and on cutting its next round."""
JobMark = Literal["finished_event_sent_at", "finished_message_sent_at", "submitted_at"]
"""What the job records as sent (the outbox)."""


class StaleRecord(Exception):
    """A conditional write lost: the item changed since it was read."""


class NoSlotAvailable(Exception):
    """The in-flight limit is reached."""


class ReadIncomplete(Exception):
    """A batch read left keys unread after every retry (DynamoDB throttled it)."""


def _day(epoch: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}


def _live_key(job_id: str, item: int) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": f"LIVE#{item:04d}"}}


def _shard_key_plain(job_id: str, index: int) -> dict[str, str]:
    return {"pk": f"JOB#{job_id}", "sk": f"SHARD#{index:05d}"}


def _shard_key(job_id: str, index: int) -> dict[str, Any]:
    return _serialize(_shard_key_plain(job_id, index))


def _serialize(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


def _deserialize(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def shard_partition(shard: Shard) -> str | None:
    """Which partition of the sparse index the shard belongs in (None: it has left the index)."""
    if shard.state == ShardState.COLLECTED:
        return None
    if shard.state == ShardState.PENDING and not shard.holds_slot and not shard.cancel_requested:
        return WAITING_PARTITION
    return ACTIVE_PARTITION


def _shard_item(shard: Shard) -> dict[str, Any]:
    values = shard.model_dump(mode="json", exclude_none=True)
    values.update(_shard_key_plain(shard.job_id, shard.index))
    partition = shard_partition(shard)
    if partition is not None:
        values["active_pk"] = partition
        values.setdefault("next_poll_at", shard.waiting_since or 0)
    return _serialize(values)


def _advanced(shard: Shard, changes: Mapping[str, Any]) -> Shard:
    """The shard as a successful conditional update left it (attributes the model lacks, such as
    `active_pk`, are the store's own)."""
    fields = {name: value for name, value in changes.items() if name in Shard.model_fields}
    return shard.model_copy(update=fields | {"version": shard.version + 1})


class _Update:
    """Builds one conditional UpdateItem: SET/REMOVE the given attributes and bump `version`."""

    def __init__(self, expected_version: int, changes: Mapping[str, Any]) -> None:
        self.names: dict[str, str] = {"#version": "version"}
        self.values: dict[str, Any] = {":expected": expected_version, ":one": 1}
        sets, removes = ["#version = #version + :one"], []
        for position, (attribute, value) in enumerate(changes.items()):
            placeholder = f"#a{position}"
            self.names[placeholder] = attribute
            if value is None:
                removes.append(placeholder)
            else:
                self.values[f":v{position}"] = value
                sets.append(f"{placeholder} = :v{position}")
        self.expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        self.condition = "#version = :expected"

    def request(self, key: dict[str, Any]) -> dict[str, Any]:
        return {
            "Key": key,
            "UpdateExpression": self.expression,
            "ConditionExpression": self.condition,
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": _serialize(self.values),
        }


def _dump_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Enums and nested models as the plain values DynamoDB stores; None means REMOVE."""
    return {name: to_jsonable_python(value) for name, value in changes.items()}


def _cancellation_codes(error: ClientError) -> list[str | None]:
    return [reason.get("Code") for reason in error.response.get("CancellationReasons") or []]


class JobStore:
    def __init__(self, client: Any, table_name: str, *, clock: Any) -> None:
        self._slot_lock = threading.Lock()
        self._db = client
        self._table = table_name
        self._clock = clock

    # jobs

    def get_job(self, job_id: str) -> Job | None:
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        return self._live_job(item) if item else None

    def get_jobs(self, job_ids: Iterable[str]) -> dict[str, Job]:
        """The jobs that exist (and have not expired) among `job_ids`, by id: consistent reads, up to
        BatchGetItem's 100 keys a call (keys DynamoDB leaves unprocessed are asked for again)."""
        wanted = list(dict.fromkeys(job_ids))
        jobs: dict[str, Job] = {}
        for start in range(0, len(wanted), _BATCH_GET_KEYS):
            keys = [_job_key(job_id) for job_id in wanted[start : start + _BATCH_GET_KEYS]]
            for item in self._batch_get(keys):
                job = self._live_job(item)
                if job is not None:
                    jobs[job.job_id] = job
        return jobs

    def _batch_get(self, keys: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for attempt in range(_ATTEMPTS):
            if attempt:
                time.sleep(min(1.0, 0.05 * 2**attempt))  # DynamoDB's advice for unprocessed keys: back off
            reply = self._db.batch_get_item(RequestItems=request)
            yield from reply.get("Responses", {}).get(self._table, [])
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                return
        raise ReadIncomplete(f"{len(request[self._table]['Keys'])} items left unread after {_ATTEMPTS} attempts")

    def _live_job(self, item: Mapping[str, Any]) -> Job | None:
        """The job an item holds, or None if it has expired (TTL deletes late)."""
        values = _deserialize(item)
        expires_at = values.get("expires_at")
        if expires_at is not None and int(expires_at) < self._clock():
            return None
        return Job.model_validate(values)

    def create_job(self, job: Job) -> Job:
        """Records a new job; if it already exists (a duplicate event), returns the stored one."""
        values = job.model_dump(mode="json", exclude_none=True) | {
            "pk": f"JOB#{job.job_id}",
            "sk": "JOB",
            "listed_day": _day(job.received_at),
        }
        try:
            self._db.put_item(
                TableName=self._table,
                Item=_serialize(values),
                ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                ExpressionAttributeValues={":now": {"N": str(int(self._clock()))}},
            )
            return job
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
        existing = self.get_job(job.job_id)
        if existing is None:  # pragma: no cover - deleted between the two calls
            raise StaleRecord(job.job_id)
        return existing

    def update_job(self, job: Job, *, sweep_at: int | bool | None = False, **changes: Any) -> Job:
        """Conditional on the version read. `sweep_at` (epoch seconds) puts the job in the FINISHING
        partition, due then; None takes it out; False (the default) leaves that as it is."""
        plain = _dump_changes(changes)
        if sweep_at is None:
            plain |= {"active_pk": None, "next_poll_at": None}
        elif sweep_at is not False:
            plain |= {"active_pk": FINISHING_PARTITION, "next_poll_at": int(sweep_at)}
        update = _Update(job.version, plain)
        try:
            self._db.update_item(TableName=self._table, **update.request(_job_key(job.job_id)))
        except ClientError as error:
            if _is_conditional_failure(error):
                raise StaleRecord(job.job_id) from None
            raise
        return job.model_copy(update=changes | {"version": job.version + 1})

    # The write-once protocol: every change of a record is conditional on the version read. The three
    # ways below are the only retry loops over records (StaleRecord: someone else wrote first).

    def modify_job(
        self, job_id: str, change: Callable[[Job], dict[str, Any] | None], *, current: Job | None = None
    ) -> Job | None:
        """Asks `change` what to write on the job (None: nothing) and writes it conditionally; on a lost
        race reads again and asks again. `current`, the job as the caller last saw it, is tried first (one
        read fewer). Returns the job as written (or as read, if nothing was), or None if there is no job."""
        job = current
        for _ in range(_ATTEMPTS):
            if job is None:
                job = self.get_job(job_id)
                if job is None:
                    return None
            changes = change(job)
            if changes is None:
                return job
            try:
                return self.update_job(job, **changes)
            except StaleRecord:
                job = None
        raise StaleRecord(f"job {job_id} kept changing")

    def modify_shard(
        self,
        job_id: str,
        index: int,
        change: Callable[[Shard], dict[str, Any] | None],
        *,
        current: Shard | None = None,
        ending: bool = False,
    ) -> Shard | None:
        """As modify_job, for a shard; with `ending`, the write also ends it (end_shard: its slot is given
        back). `change` may raise StaleRecord itself, to give up (the shard is no longer the caller's)."""
        shard = current
        for _ in range(_ATTEMPTS):
            if shard is None:
                shard = self.get_shard(job_id, index)
                if shard is None:
                    return None
            changes = change(shard)
            if changes is None:
                return shard
            try:
                return self.end_shard(shard, **changes) if ending else self.update_shard(shard, **changes)
            except StaleRecord:
                shard = None
        raise StaleRecord(f"shard {job_id}/{index} kept changing")

    def mark_job(self, job: Job, **changes: Any) -> Job:
        """Writes `changes` on the job as the caller last saw it, or, if it changed meanwhile, on a fresh
        read (the last writer wins): for changes that hold whatever else changed (the job marked notified)."""
        marked = self.modify_job(job.job_id, lambda _: changes, current=job)
        if marked is None:
            raise StaleRecord(f"job {job.job_id} is gone")
        return marked

    def claim_job(
        self, job: Job, claim: JobClaim, *, lease_seconds: int, also: Mapping[str, Any] | None = None
    ) -> Job | None:
        """Takes the job's lease named `claim` (the time it was taken) unless someone holds it (taken less
        than `lease_seconds` ago): the job as claimed, or None if it is held or someone else wrote first.
        A holder that dies loses the lease when it runs out."""
        now = int(self._clock())
        taken = getattr(job, claim)
        if taken is not None and taken > now - lease_seconds:
            return None
        try:
            return self.update_job(job, **({claim: now} | dict(also or {})))
        except StaleRecord:
            return None

    def send_once(self, job: Job, sent: JobMark, send: Callable[[], None]) -> Job:
        """The outbox: unless the job records `sent`, runs `send` and records its time at once. Call it
        while holding the job's claim; a crash between the send and the mark sends again (at least once:
        each announcement carries a stable event id to deduplicate on)."""
        if getattr(job, sent) is not None:
            return job
        send()
        now = int(self._clock())
        # Only the first sender's time is kept (a claimant whose lease ran out may have sent it too).
        marked = self.modify_job(
            job.job_id, lambda fresh: {sent: now} if getattr(fresh, sent) is None else None, current=job
        )
        if marked is None:
            raise StaleRecord(f"job {job.job_id} is gone")
        return marked

    def note_progress(self, shard: Shard) -> None:
        """Records on the job that the shard has left PENDING, or has been collected (idempotent: a set
        ADD, which no versioned writer of the job conflicts with). Each transition calls it right after
        its own write; a redelivery that finds the transition made calls it again, so a crash between the
        two loses nothing."""
        attribute = {ShardState.PENDING: None, ShardState.COLLECTED: "collected_shards"}.get(
            shard.state, "started_shards"
        )
        if attribute is None:
            return
        names = {"#set": attribute}
        values = {":index": {"NS": [str(shard.index)]}}
        if attribute == "collected_shards":  # a collected shard has started too
            names["#started"] = "started_shards"
            expression = "ADD #set :index, #started :index"
        else:
            expression = "ADD #set :index"
        self._db.update_item(
            TableName=self._table,
            Key=_job_key(shard.job_id),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def record_progress(
        self,
        job_id: str,
        batches: Mapping[str, BatchProgress],
        progress: JobProgress,
        *,
        now: int,
        due_before: int,
        expires_at: int,
    ) -> bool:
        """Writes the job's `progress` on its record, unless the last such write was after `due_before`
        (False then; or if the job has ended or is gone), and then the batches (by shard index) into its
        `LIVE#` items (put_live_batches). Unversioned: it touches attributes no versioned writer of the
        job writes, and never an ended job's record (a run that read the job before its end must not
        write "running")."""
        try:
            self._db.update_item(
                TableName=self._table,
                Key=_job_key(job_id),
                UpdateExpression="SET #at = :now, #progress = :progress",
                ConditionExpression=(
                    "attribute_exists(pk) AND #status IN (:received, :submitting) "
                    "AND (attribute_not_exists(#at) OR #at <= :due)"
                ),
                ExpressionAttributeNames={"#at": "live_at", "#progress": "progress", "#status": "status"},
                ExpressionAttributeValues=_serialize(
                    {
                        ":now": now,
                        ":due": due_before,
                        ":progress": to_jsonable_python(progress),
                        ":received": JobStatus.RECEIVED.value,
                        ":submitting": JobStatus.SUBMITTING.value,
                    }
                ),
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        self.put_live_batches(job_id, batches, expires_at=expires_at)
        return True

    def put_live_batches(self, job_id: str, batches: Mapping[str, BatchProgress], *, expires_at: int) -> None:
        """Puts each batch as last seen into the job's `LIVE#<nnnn>` item of its shard index (LIVE_PER_ITEM
        a item, an attribute `b<index>` each), LIVE_SETS_PER_WRITE at a time: however many batches a job
        has, no item nears 400 KB and no expression its 4 KB."""
        by_item: dict[int, list[tuple[str, BatchProgress]]] = {}
        for index, batch in batches.items():
            by_item.setdefault(int(index) // LIVE_PER_ITEM, []).append((index, batch))
        for item, entries in sorted(by_item.items()):
            for start in range(0, len(entries), LIVE_SETS_PER_WRITE):
                piece = entries[start : start + LIVE_SETS_PER_WRITE]
                names = {"#expires": "expires_at"} | {f"#b{n}": f"b{index}" for n, (index, _) in enumerate(piece)}
                values = {":expires": expires_at} | {
                    f":b{n}": to_jsonable_python(batch, exclude_none=True) for n, (_, batch) in enumerate(piece)
                }
                sets = ", ".join(f"#b{n} = :b{n}" for n in range(len(piece)))
                self._db.update_item(
                    TableName=self._table,
                    Key=_live_key(job_id, item),
                    UpdateExpression=f"SET #expires = :expires, {sets}",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=_serialize(values),
                )

    def get_live_batches(self, job: Job) -> dict[str, BatchProgress]:
        """The job's batches as the poller last saw them, by shard index (none once they expired)."""
        return self.get_live_batches_of([job]).get(job.job_id, {})

    def get_live_batches_of(self, jobs: Iterable[Job]) -> dict[str, dict[str, BatchProgress]]:
        """get_live_batches for many jobs, by job id: their `LIVE#` items, read by key (a job's shard
        count says which there can be), up to BatchGetItem's 100 keys a call."""
        keys = [
            _live_key(job.job_id, item)
            for job in jobs
            if job.shard_count
            for item in range((job.shard_count - 1) // LIVE_PER_ITEM + 1)
        ]
        now = int(self._clock())
        batches: dict[str, dict[str, BatchProgress]] = {job.job_id: {} for job in jobs}
        for start in range(0, len(keys), _BATCH_GET_KEYS):
            for raw in self._batch_get(keys[start : start + _BATCH_GET_KEYS]):
                item = _deserialize(raw)
                if int(item.get("expires_at", now)) < now:
                    continue
                seen = batches.setdefault(str(item["pk"]).removeprefix("JOB#"), {})
                for name, value in item.items():
                    if name.startswith("b") and name[1:].isdigit():
                        seen[name[1:]] = BatchProgress.model_validate(value)
        return batches

    def request_cancel(self, job_id: str) -> Job | None:
        """Marks a job for cancellation; the poller cancels its batches and ends the shards that wait for
        a slot (they leave the queue at once). None if it has ended already."""
        now = int(self._clock())
        job = self.modify_job(
            job_id,
            lambda job: (
                None
                if job.status in (JobStatus.FINISHED, JobStatus.REJECTED) or job.cancel_requested_at is not None
                else {"cancel_requested_at": now}
            ),
        )
        if job is None or job.status in (JobStatus.FINISHED, JobStatus.REJECTED):
            return None
        for shard in self.get_shards(job_id):
            if shard.state == ShardState.PENDING and not shard.cancel_requested:
                self.modify_shard(
                    job_id,
                    shard.index,
                    lambda fresh: (
                        {"cancel_requested": True, "next_poll_at": now} if fresh.state == ShardState.PENDING else None
                    ),
                )
        return job

    def recent_jobs(self, *, limit: int, days: int = 31) -> Iterator[Job]:
        """Newest first, from the JobsByDay index: today's jobs, then yesterday's, back `days` days (the
        operator's listing; never used by the functions)."""
        today = int(self._clock()) // 86_400
        found = 0
        for day in range(today, today - days - 1, -1):
            pages = self._db.get_paginator("query").paginate(
                TableName=self._table,
                IndexName=JOBS_BY_DAY_INDEX,
                KeyConditionExpression="listed_day = :day",
                ExpressionAttributeValues={":day": {"S": _day(day * 86_400)}},
                ScanIndexForward=False,
            )
            for page in pages:
                ids = [item["pk"]["S"].removeprefix("JOB#") for item in page.get("Items", [])][: limit - found]
                jobs = self.get_jobs(ids)  # a hundred a call, not one by one
                for job_id in ids:
                    job = jobs.get(job_id)
                    if job is None:
                        continue  # expired
                    yield job
                    found += 1
                    if found >= limit:
                        return

    # the merged files' layout

    def put_merged(self, job_id: str, layout: MergedLayout, *, expires_at: int | None, max_bytes: int) -> None:
        """Replaces the job's layout (15,000 shards: about 250 KB gzipped); it goes with the job's records
        (`expires_at`). ValueError if it is larger than `max_bytes` gzipped (an item holds at most 400 KB).
        An UpdateItem, so that the functions that end jobs need no PutItem."""
        packed = gzip.compress(layout.model_dump_json().encode(), compresslevel=6)
        if len(packed) > max_bytes:
            raise ValueError(f"the merged layout is {len(packed)} bytes gzipped, over {max_bytes}")
        values: dict[str, Any] = {":layout": {"B": packed}}
        update = "SET layout = :layout"
        if expires_at is not None:
            values[":expires"] = {"N": str(expires_at)}
            update += ", expires_at = :expires"
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "MERGED"}},
            UpdateExpression=update,
            ExpressionAttributeValues=values,
        )

    def get_merged(self, job_id: str) -> MergedLayout | None:
        item = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "MERGED"}},
            ConsistentRead=True,
        ).get("Item")
        if not item or ("expires_at" in item and int(item["expires_at"]["N"]) < int(self._clock())):
            return None
        return MergedLayout.model_validate_json(gzip.decompress(item["layout"]["B"]))

    # shards

    def put_shards(self, shards: list[Shard]) -> None:
        """Records shards that do not exist yet (a re-run after a crash finds some already there);
        shards of an expired job (its TTL passed, DynamoDB has not deleted them yet) are replaced."""
        now = {":now": {"N": str(int(self._clock()))}}
        for shard in shards:
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item=_shard_item(shard),
                    ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
                    ExpressionAttributeValues=now,
                )
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise

    def get_shard(self, job_id: str, index: int) -> Shard | None:
        item = self._db.get_item(TableName=self._table, Key=_shard_key(job_id, index), ConsistentRead=True).get("Item")
        return Shard.model_validate(_deserialize(item)) if item else None

    def get_shards(self, job_id: str) -> list[Shard]:
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": f"JOB#{job_id}"}, ":prefix": {"S": "SHARD#"}},
            ConsistentRead=True,
        )
        now = int(self._clock())
        shards = [Shard.model_validate(_deserialize(item)) for page in pages for item in page.get("Items", [])]
        return [shard for shard in shards if shard.expires_at is None or shard.expires_at >= now]

    def delete_shard(self, shard: Shard) -> None:
        """Removes a shard that is no job's (a round its job never committed); conditional on the version."""
        try:
            self._db.delete_item(
                TableName=self._table,
                Key=_shard_key(shard.job_id, shard.index),
                ConditionExpression="#version = :version",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":version": {"N": str(shard.version)}},
            )
        except ClientError as error:
            if _is_conditional_failure(error):
                raise StaleRecord(f"{shard.job_id}/{shard.index}") from None
            raise

    def update_shard(self, shard: Shard, **changes: Any) -> Shard:
        """Conditional on the version read; the shard's place in the sparse index follows its state."""
        update = _Update(shard.version, self._indexed_changes(shard, changes))
        try:
            self._db.update_item(TableName=self._table, **update.request(_shard_key(shard.job_id, shard.index)))
        except ClientError as error:
            if _is_conditional_failure(error):
                raise StaleRecord(f"{shard.job_id}/{shard.index}") from None
            raise
        return self._after_write(shard, changes)

    def _after_write(self, shard: Shard, changes: Mapping[str, Any]) -> Shard:
        after = _advanced(shard, changes)
        if after.state != shard.state and (shard.state == ShardState.PENDING or after.state == ShardState.COLLECTED):
            self.note_progress(after)
        return after

    def _indexed_changes(self, shard: Shard, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The changes as stored, with the index partition the changed shard belongs in (a shard in the
        index always has a `next_poll_at`: an item without one would silently leave the index)."""
        current = shard.model_dump(mode="json")
        # What already holds on the version read is left out: smaller writes (a poll mostly moves the time).
        plain = {
            name: value
            for name, value in _dump_changes(changes).items()
            if name not in Shard.model_fields or current.get(name) != value
        }
        after = _advanced(shard, changes)
        partition = shard_partition(after)
        if partition != shard_partition(shard):
            plain["active_pk"] = partition
        if partition is None:
            plain["next_poll_at"] = None
        elif after.next_poll_at is None:
            plain["next_poll_at"] = int(self._clock())
        return plain

    def claim_shard(
        self, shard: Shard, *, owner: str, lease_seconds: int, max_in_flight: int, also: Mapping[str, Any] | None = None
    ) -> Shard:
        """Takes the shard's submission lease, and an in-flight slot if it holds none, in one transaction
        (with the changes `also` names: the claimant's first checkpoint, say).

        Raises StaleRecord if someone else changed the shard, NoSlotAvailable if the limit is reached.
        """
        now = int(self._clock())
        if shard.lease_until is not None and shard.lease_until > now and shard.lease_owner != owner:
            raise StaleRecord(f"{shard.job_id}/{shard.index} is leased")
        # Due again when the lease ends: if the invocation dies, the poller hands the shard over again.
        changes: dict[str, Any] = {
            "lease_owner": owner,
            "lease_until": now + lease_seconds,
            "holds_slot": True,
            "next_poll_at": now + lease_seconds,
            "first_attempt_at": shard.first_attempt_at or now,
        } | dict(also or {})
        if shard.holds_slot:
            return self.update_shard(shard, **changes)
        take_slot = {
            "UpdateExpression": "SET in_use = if_not_exists(in_use, :zero) + :one",
            "ConditionExpression": "attribute_not_exists(in_use) OR in_use < :max",
            "ExpressionAttributeValues": _serialize({":zero": 0, ":one": 1, ":max": max_in_flight}),
        }
        claimed = self._update_shard_and_slots(shard, changes, take_slot)
        if claimed is None:
            raise NoSlotAvailable()
        return claimed

    def end_shard(self, shard: Shard, **changes: Any) -> Shard:
        """Moves a shard to TERMINAL and gives back its in-flight slot, atomically."""
        changes = {
            "state": ShardState.TERMINAL,
            "holds_slot": False,
            "lease_owner": None,
            "lease_until": None,
            "ended_at": int(self._clock()),
        } | changes
        if not shard.holds_slot:
            return self.update_shard(shard, **changes)
        give_back = {
            "UpdateExpression": "SET in_use = in_use - :one",
            "ConditionExpression": "in_use > :zero",
            "ExpressionAttributeValues": _serialize({":zero": 0, ":one": 1}),
        }
        # None: the counter was already zero (it never goes negative), so the shard ends alone.
        return self._update_shard_and_slots(shard, changes, give_back) or self.update_shard(shard, **changes)

    def _update_shard_and_slots(self, shard: Shard, changes: dict[str, Any], slots: dict[str, Any]) -> Shard | None:
        """One transaction: the shard's conditional update and the slot counter's. StaleRecord if the shard
        changed meanwhile; None if the counter's condition failed (nothing is written then)."""
        update = _Update(shard.version, self._indexed_changes(shard, changes)).request(
            _shard_key(shard.job_id, shard.index)
        )
        for attempt in range(_SLOT_CONFLICT_ATTEMPTS):
            try:
                # One at a time in this process (submit's two workers claim side by side): DynamoDB cancels
                # one of two transactions on the same counter item at once (TransactionConflict).
                with self._slot_lock:
                    self._db.transact_write_items(
                        TransactItems=[
                            {"Update": {"TableName": self._table, **update}},
                            {"Update": {"TableName": self._table, "Key": _SLOTS_KEY, **slots}},
                        ]
                    )
            except ClientError as error:
                codes = _cancellation_codes(error)
                if codes[:1] == ["ConditionalCheckFailed"]:
                    raise StaleRecord(f"{shard.job_id}/{shard.index}") from None
                if codes[1:2] == ["ConditionalCheckFailed"]:
                    return None
                if "TransactionConflict" in codes and attempt + 1 < _SLOT_CONFLICT_ATTEMPTS:
                    # Another invocation's transaction on the counter at the same moment; nothing was
                    # written: tried again after a short, jittered pause.
                    time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
                    continue
                raise  # throttling, or conflicts past the cap: the caller's retry decides again
            return self._after_write(shard, changes)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def slots_in_use(self) -> int:
        item = self._db.get_item(TableName=self._table, Key=_SLOTS_KEY, ConsistentRead=True).get("Item")
        return int(_deserialize(item).get("in_use", 0)) if item else 0

    def due_shards(self, now: int, *, limit: int | None = None) -> Iterator[Shard]:
        """ACTIVE shards whose next poll time has come, oldest first, read page by page as consumed."""
        for page in self.due_shard_pages(now, limit=limit):
            yield from page

    def due_shard_pages(self, now: int, *, limit: int | None = None) -> Iterator[list[Shard]]:
        """The same, a page at a time: the next page is read only once the caller asks for it."""
        for page in self._index_pages(ACTIVE_PARTITION, now, limit):
            yield [Shard.model_validate(item) for item in page]

    def waiting_shards(
        self, *, until: int | None = None, limit: int | None = None, page_size: int | None = None
    ) -> Iterator[Shard]:
        """Shards waiting for an in-flight slot, longest waiting first (those waiting since `until` at most),
        read a page (of `page_size`) at a time as consumed."""
        for item in self._index_items(WAITING_PARTITION, until, limit, page_size):
            yield Shard.model_validate(item)

    def count_waiting(self, *, max_pages: int = WAITING_COUNT_PAGES, page_limit: int | None = None) -> tuple[int, bool]:
        """How many shards wait for an in-flight slot (a COUNT query of the index: keys only, no items),
        reading at most `max_pages` pages of 1 MB (some thousands of shards each); and whether that was
        all of them (False: at least so many). `page_limit` makes pages smaller (tests)."""
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="active_pk = :partition",
            ExpressionAttributeValues=_serialize({":partition": WAITING_PARTITION}),
            Select="COUNT",
            **({"Limit": page_limit} if page_limit else {}),
        )
        waiting = 0
        for read, page in enumerate(pages, start=1):
            waiting += int(page.get("Count", 0))
            if read >= max_pages and page.get("LastEvaluatedKey"):
                return waiting, False
        return waiting, True

    def finishing_jobs(self, now: int, *, limit: int | None = None) -> Iterator[Job]:
        """Jobs that ended but whose announcement is not recorded, due for another look."""
        for item in self._index_items(FINISHING_PARTITION, now, limit):
            yield Job.model_validate(item)

    def _index_items(
        self, partition: str, until: int | None, limit: int | None, page_size: int | None = None
    ) -> Iterator[dict[str, Any]]:
        for page in self._index_pages(partition, until, limit, page_size):
            yield from page

    def _index_pages(
        self, partition: str, until: int | None, limit: int | None, page_size: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        condition = "active_pk = :partition" + (" AND next_poll_at <= :until" if until is not None else "")
        values: dict[str, Any] = {":partition": partition} | ({":until": until} if until is not None else {})
        config: dict[str, int] = {"PageSize": min(page_size or limit or _PAGE_SIZE, _PAGE_SIZE)}
        if limit is not None:
            config["MaxItems"] = limit
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=_serialize(values),
            PaginationConfig=config,
        )
        for page in pages:
            yield [_deserialize(item) for item in page.get("Items", [])]
