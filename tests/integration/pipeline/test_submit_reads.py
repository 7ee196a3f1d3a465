"""Submit reads each byte of the input from S3 once: the API upload reads the split's own shard file, the
work copy is written beside it in the background, and only without local room is a shard read back."""

from __future__ import annotations

from typing import Any

import pytest
from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl
from test_collect_reads import _reads_of

from batchdrop.flow import split as split_module
from batchdrop.models import InputInfo, Job, JobStatus, ObjectRef


def ref_of(obj: dict[str, Any]) -> ObjectRef:
    return ObjectRef(obj["bucket"], obj["key"], obj["version_id"], obj["etag"], obj["size"])


def job_for(obj: dict[str, Any], services: Any) -> Job:
    ref = ref_of(obj)
    return Job(
        job_id=ref.job_id,
        status=JobStatus.RECEIVED,
        input=InputInfo(bucket=ref.bucket, key=ref.key, version_id=ref.version_id, etag=ref.etag, bytes=ref.size),
        output_prefix="outbox/room/",
        received_at=services.now(),
    )


def test_the_api_upload_reads_the_split_file_not_the_work_copy(make_pipeline: Any) -> None:
    # Given a file of three shards, dropped
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2)
    reads = _reads_of(pipeline)
    pipeline.drop("inbox/once.jsonl", jsonl([chat_line(f"o-{n}") for n in range(6)]))

    # Then every shard has its batch and its durable copy, and the only GET was the input's own
    job_id = next(pipeline.services.store.recent_jobs(limit=1)).job_id
    shards = pipeline.services.store.get_shards(job_id)
    assert len(shards) == 3 and all(shard.batch_id for shard in shards)
    assert reads == ["inbox/once.jsonl"]
    for shard in shards:
        copy = pipeline.s3.get_object(Bucket=BUCKET, Key=shard.work_key)["Body"].read()
        assert copy == jsonl([chat_line(f"o-{n}") for n in range(2 * shard.index, 2 * shard.index + 2)])
    # and nothing of the invocation is left on local disk
    assert not list(pipeline.services.local_shards._paths)
    pipeline.run()
    assert pipeline.report("once")["counts"] == {"total": 6, "succeeded": 6, "failed": 0}


@pytest.mark.parametrize("room", [True, False])
def test_a_shard_stays_on_local_disk_for_its_upload_only_while_there_is_room(
    make_pipeline: Any, monkeypatch: pytest.MonkeyPatch, room: bool
) -> None:
    # Given a local disk with room for the shards, or none
    class Disk:
        free = 10**12 if room else 0

    monkeypatch.setattr(split_module.shutil, "disk_usage", lambda path: Disk())
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2)
    services = pipeline.services
    obj = pipeline.put_input("inbox/room.jsonl", jsonl([chat_line(f"f-{n}") for n in range(4)]))
    job = services.store.create_job(job_for(obj, services))

    # When the input is split and its work copies are written
    _, split, _ = split_module.split_input(job, ref_of(obj), services)
    services.local_shards.finish_copies()

    # Then both shards have their durable copy, and their local files stay for the upload only with room
    shards = services.store.get_shards(job.job_id)
    assert split.valid and len(shards) == 2
    for shard in shards:
        assert pipeline.s3.head_object(Bucket=BUCKET, Key=shard.work_key)["ContentLength"] == shard.bytes
        assert (services.local_shards.path(shard.work_key, shard.bytes) is not None) is room
    pipeline.end_invocation()


def test_a_work_copy_that_failed_to_land_is_rebuilt_when_needed(make_pipeline: Any) -> None:
    # Given a split whose background copy of one shard fails (S3 refuses that one PUT)
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=2, MAX_BATCHES_IN_FLIGHT=1)
    s3 = pipeline.services.s3
    upload_file = s3.upload_file
    failed: list[str] = []

    def refusing(path: str, bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        if key.endswith("/shards/00001.jsonl") and not failed:
            failed.append(key)
            raise OSError("simulated S3 failure")
        return upload_file(path, bucket, key, *args, **kwargs)

    s3.upload_file = refusing

    # When the file (two shards; the second is held for a slot) is dropped and run to its end
    pipeline.drop("inbox/lost.jsonl", jsonl([chat_line(f"x-{n}") for n in range(4)]))
    s3.upload_file = upload_file
    pipeline.run()

    # Then the held shard was rebuilt from the input and every line came back
    assert failed
    assert pipeline.report("lost")["counts"] == {"total": 4, "succeeded": 4, "failed": 0}
