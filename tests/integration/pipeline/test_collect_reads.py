"""Collect learns a shard's custom_ids from the short list the split wrote beside it, not from the shard."""

from __future__ import annotations

from typing import Any

from pipeline_harness import BUCKET, Pipeline, chat_line, jsonl

from batchdrop.flow.split import ids_beside


def _reads_of(pipeline: Pipeline) -> list[str]:
    """Records the keys the pipeline GETs (whole-object reads and managed downloads)."""
    s3 = pipeline.services.s3
    keys: list[str] = []
    get_object, download_file = s3.get_object, s3.download_file

    def recording_get(**kwargs: Any) -> Any:
        keys.append(kwargs["Key"])
        return get_object(**kwargs)

    def recording_download(bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        keys.append(key)
        return download_file(bucket, key, *args, **kwargs)

    s3.get_object, s3.download_file = recording_get, recording_download
    return keys


def test_collect_reads_the_custom_id_list_not_the_shard(make_pipeline: Any) -> None:
    # Given a two-shard job whose split listed each shard's custom_ids beside it
    pipeline: Pipeline = make_pipeline(MAX_LINES_PER_BATCH=3)
    pipeline.drop("inbox/listed.jsonl", jsonl([chat_line(f"l-{n}") for n in range(5)]))
    shards = pipeline.services.store.get_shards(next(pipeline.services.store.recent_jobs(limit=1)).job_id)
    assert len(shards) == 2 and all(shard.ids_key == ids_beside(shard.work_key) for shard in shards)
    listed = pipeline.s3.get_object(Bucket=BUCKET, Key=shards[0].ids_key)["Body"].read()
    assert listed.splitlines() == [b'"l-0"', b'"l-1"', b'"l-2"']

    # When the job runs to its end
    reads = _reads_of(pipeline)
    pipeline.run()

    # Then every line is accounted for, and no shard's work copy was read back to learn its ids
    assert pipeline.report("listed")["counts"] == {"total": 5, "succeeded": 5, "failed": 0}
    assert not set(reads) & {shard.work_key for shard in shards}
    assert {shard.ids_key for shard in shards} <= set(reads)


def test_without_its_list_a_shard_is_collected_from_its_lines(pipeline: Pipeline) -> None:
    # Given a job whose custom_id list has gone (an older stack's shard, or the work prefix's expiry)
    pipeline.drop("inbox/unlisted.jsonl", jsonl([chat_line(f"u-{n}") for n in range(3)]))
    (shard,) = pipeline.services.store.get_shards(next(pipeline.services.store.recent_jobs(limit=1)).job_id)
    assert shard.ids_key is not None
    pipeline.s3.delete_object(Bucket=BUCKET, Key=shard.ids_key)

    # When it runs to its end
    reads = _reads_of(pipeline)
    pipeline.run()

    # Then its lines were read instead, and the results are whole
    assert shard.work_key in reads
    assert pipeline.report("unlisted")["counts"] == {"total": 3, "succeeded": 3, "failed": 0}
