"""Jobs and shards in one DynamoDB table.

Layout (keys `pk`/`sk`):
- `JOB#<job_id>` / `JOB`            the job
- `JOB#<job_id>` / `SHARD#<nnnnn>`  its shards; while a shard needs the poller it carries `active_pk`
                                    and `next_poll_at`, which puts it in the sparse `ActiveShards` index
- `SLOTS` / `IN_FLIGHT`             the number of batches in flight, a counting semaphore
- Powertools idempotency records under their own partition.

Every state change is a conditional write on the item's `version`: of two racing writers exactly one
wins, and the loser gets `StaleRecord` and decides again from a fresh read. TTL (`expires_at`) only
tidies up; reads ignore expired items themselves because DynamoDB deletes them late.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic_core import to_jsonable_python

from batchdrop.pipeline.models import Job, JobStatus, Shard, ShardState

ACTIVE_INDEX = "ActiveShards"
ACTIVE_PARTITION = "ACTIVE"
_SLOTS_KEY = {"pk": {"S": "SLOTS"}, "sk": {"S": "IN_FLIGHT"}}
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class StaleRecord(Exception):
    """A conditional write lost: the item changed since it was read."""


class NoSlotAvailable(Exception):
    """The in-flight limit is reached."""


def _job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": "JOB"}}


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


def _shard_item(shard: Shard) -> dict[str, Any]:
    values = shard.model_dump(mode="json", exclude_none=True)
    values.update(_shard_key_plain(shard.job_id, shard.index))
    if shard.state != ShardState.COLLECTED:
        values["active_pk"] = ACTIVE_PARTITION
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
        self._db = client
        self._table = table_name
        self._clock = clock

    # jobs

    def get_job(self, job_id: str) -> Job | None:
        item = self._db.get_item(TableName=self._table, Key=_job_key(job_id), ConsistentRead=True).get("Item")
        if not item:
            return None
        values = _deserialize(item)
        expires_at = values.get("expires_at")
        if expires_at is not None and int(expires_at) < self._clock():
            return None
        return Job.model_validate(values)

    def create_job(self, job: Job) -> Job:
        """Records a new job; if it already exists (a duplicate event), returns the stored one."""
        values = job.model_dump(mode="json", exclude_none=True) | {"pk": f"JOB#{job.job_id}", "sk": "JOB"}
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

    def update_job(self, job: Job, **changes: Any) -> Job:
        update = _Update(job.version, _dump_changes(changes))
        try:
            self._db.update_item(TableName=self._table, **update.request(_job_key(job.job_id)))
        except ClientError as error:
            if _is_conditional_failure(error):
                raise StaleRecord(job.job_id) from None
            raise
        return job.model_copy(update=changes | {"version": job.version + 1})

    def request_cancel(self, job_id: str) -> Job | None:
        """Marks a job for cancellation; the poller cancels its batches. None if it has ended already."""
        for _ in range(5):
            job = self.get_job(job_id)
            if job is None or job.status in (JobStatus.FINISHED, JobStatus.REJECTED):
                return None
            if job.cancel_requested_at is not None:
                return job
            try:
                return self.update_job(job, cancel_requested_at=int(self._clock()))
            except StaleRecord:
                continue
        raise StaleRecord(job_id)

    def iter_jobs(self, *, limit: int) -> Iterator[Job]:
        """Jobs in no particular order, for the operator's listing (a Scan; never used by the functions)."""
        paginator = self._db.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="sk = :job",
            ExpressionAttributeValues={":job": {"S": "JOB"}},
            PaginationConfig={"MaxItems": limit},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield Job.model_validate(_deserialize(item))

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

    def update_shard(self, shard: Shard, **changes: Any) -> Shard:
        """Conditional on the version read; leaving the COLLECTED state is never needed."""
        plain = _dump_changes(changes)
        if changes.get("state") == ShardState.COLLECTED:
            plain["active_pk"] = None
            plain["next_poll_at"] = None
        update = _Update(shard.version, plain)
        try:
            self._db.update_item(TableName=self._table, **update.request(_shard_key(shard.job_id, shard.index)))
        except ClientError as error:
            if _is_conditional_failure(error):
                raise StaleRecord(f"{shard.job_id}/{shard.index}") from None
            raise
        return _advanced(shard, changes)

    def claim_shard(self, shard: Shard, *, owner: str, lease_seconds: int, max_in_flight: int) -> Shard:
        """Takes the shard's submission lease, and an in-flight slot if it holds none, in one transaction.

        Raises StaleRecord if someone else changed the shard, NoSlotAvailable if the limit is reached.
        """
        now = int(self._clock())
        if shard.lease_until is not None and shard.lease_until > now and shard.lease_owner != owner:
            raise StaleRecord(f"{shard.job_id}/{shard.index} is leased")
        changes: dict[str, Any] = {"lease_owner": owner, "lease_until": now + lease_seconds, "holds_slot": True}
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
        update = _Update(shard.version, _dump_changes(changes)).request(_shard_key(shard.job_id, shard.index))
        try:
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
            raise  # a conflict or throttling: nothing was written; the caller's retry decides again
        return _advanced(shard, changes)

    def slots_in_use(self) -> int:
        item = self._db.get_item(TableName=self._table, Key=_SLOTS_KEY, ConsistentRead=True).get("Item")
        return int(_deserialize(item).get("in_use", 0)) if item else 0

    def due_shards(self, now: int, *, limit: int) -> Iterator[Shard]:
        """Active shards whose next poll time has come, oldest first; only the sparse index is read."""
        paginator = self._db.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            IndexName=ACTIVE_INDEX,
            KeyConditionExpression="active_pk = :active AND next_poll_at <= :now",
            ExpressionAttributeValues=_serialize({":active": ACTIVE_PARTITION, ":now": now}),
            PaginationConfig={"MaxItems": limit, "PageSize": min(limit, 100)},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield Shard.model_validate(_deserialize(item))
