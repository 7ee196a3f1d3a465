"""A running job's progress where people look: the job record's `progress` and outbox/<name>/status.json,
written by the poller at most once a minute a job, and once more at the end with the outcome."""

from __future__ import annotations

import json
from typing import Any

from pipeline_harness import Pipeline, chat_line, jsonl
from testsupport import assert_matches_schema


def lines_for(n: int) -> bytes:
    return jsonl([chat_line(f"p-{i}") for i in range(n)])


def status_json(pipeline: Pipeline) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(pipeline.read("outbox/progress/status.json"))
    assert_matches_schema(document, "status.schema.json")
    return document


def test_a_running_job_shows_its_status_counts_and_time_left_then_its_outcome(make_pipeline: Any) -> None:
    # Given a file of 20 lines in two batches on an API that answers one line every 10 s per batch
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 0.1}, MAX_LINES_PER_BATCH=10)
    pipeline.drop("inbox/progress.jsonl", lines_for(20))
    store = pipeline.services.store
    (job,) = store.recent_jobs(limit=1)

    # When the poller looks after 30 s
    pipeline.step(30)

    # Then the record and status.json say it is running, with the batches' counts summed and a time left
    job = store.get_job(job.job_id)
    assert job is not None and job.progress is not None
    assert job.progress.status == "running"
    assert job.progress.request_counts.total == 20 and job.progress.request_counts.completed >= 4
    assert job.progress.eta_seconds is not None and 0 < job.progress.eta_seconds <= 100
    status = status_json(pipeline)
    assert status["status"] == "running" and status["finished"] is False
    assert status["request_counts"] == job.progress.request_counts.model_dump()
    assert status["batches"] == {"total": 2, "running": 2, "ended": 0}
    assert status["estimated_finish_at"] is not None

    # When the poller looks again 30 s later (within the minute): nothing is written
    written_at = job.live_at
    pipeline.step(30)
    assert store.get_job(job.job_id).live_at == written_at  # type: ignore[union-attr]
    # and after the minute it is
    pipeline.step(31)
    assert (store.get_job(job.job_id).live_at or 0) > (written_at or 0)  # type: ignore[union-attr]

    # When the job has ended
    pipeline.run()
    # Then status.json says the outcome and the counts of report.json, and stays
    status = status_json(pipeline)
    report = pipeline.report("progress")
    assert status["status"] == report["outcome"] == "succeeded" and status["finished"] is True
    assert status["counts"] == report["counts"] == {"total": 20, "succeeded": 20, "failed": 0}
    assert status["eta_seconds"] == 0
    final = store.get_job(job.job_id)
    assert final is not None and final.counts is not None and final.counts.succeeded == 20
    # and a poll run that read the job before its end cannot write "running" over it
    assert job.progress is not None
    late = store.record_progress(
        job.job_id, {}, job.progress, now=int(pipeline.clock.now()) + 10_000, due_before=10**12
    )
    assert late is False and status_json(pipeline)["status"] == "succeeded"


def test_a_job_recorded_before_live_batches_existed_gets_its_progress_too(make_pipeline: Any) -> None:
    from batchdrop.models import BatchProgress, JobProgress, RequestCounts

    # Given a job whose record has no live_batches map (written by an earlier version)
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 0.1})
    pipeline.drop("inbox/progress.jsonl", lines_for(2))
    store = pipeline.services.store
    (job,) = store.recent_jobs(limit=1)
    store._db.update_item(
        TableName=store._table,
        Key={"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}},
        UpdateExpression="REMOVE live_batches",
    )
    batch = BatchProgress(status="in_progress", total=2, completed=1)
    seen = JobProgress(status="running", request_counts=RequestCounts(total=2, completed=1), updated_at=100)

    # When the poller records its progress, twice within the interval
    first = store.record_progress(job.job_id, {"0": batch}, seen, now=100, due_before=40)
    second = store.record_progress(job.job_id, {"0": batch}, seen, now=110, due_before=50)

    # Then the first writes the whole map, the second waits for the interval
    assert (first, second) == (True, False)
    recorded = store.get_job(job.job_id)
    assert recorded is not None and recorded.live_batches == {"0": batch} and recorded.live_at == 100


def test_the_dashboard_figures_are_emitted(make_pipeline: Any, monkeypatch: Any) -> None:
    from collections import Counter

    from batchdrop.flow import completion, polling

    figures: Counter[str] = Counter()
    costs: list[float] = []
    monkeypatch.setattr(polling, "count", lambda metric, value=1: figures.update({metric.value: value}))
    monkeypatch.setattr(completion, "count", lambda metric, value=1: figures.update({metric.value: value}))
    monkeypatch.setattr(completion, "measure", lambda metric, value: costs.append(value))

    # Given three single-line batches and room for two in flight, on a model the price table knows
    pipeline: Pipeline = make_pipeline(
        emulator_settings={"lines_per_second": 0.1}, MAX_LINES_PER_BATCH=1, MAX_BATCHES_IN_FLIGHT=2
    )
    lines = [chat_line(f"d-{i}") for i in range(3)]
    for line in lines:
        line["body"]["model"] = "llama-3.1-8b-instruct-fast"
    pipeline.drop("inbox/progress.jsonl", jsonl(lines))

    # When the poller runs while one shard is held back
    pipeline.step(5)
    # Then it reports two in flight and one waiting
    assert figures["BatchesInFlight"] == 2 and figures["ShardsWaiting"] == 1

    # When the job ends: its lines, tokens and cost are counted once
    pipeline.run()
    assert figures["LinesSucceeded"] == 3 and figures["LinesFailed"] == 0
    assert figures["PromptTokens"] > 0 and figures["CompletionTokens"] > 0
    assert len(costs) == 1 and costs[0] > 0


def test_a_run_writes_at_most_status_jobs_per_run_the_oldest_first(make_pipeline: Any) -> None:
    # Given two running jobs and room for one progress write a run
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 0.005}, STATUS_JOBS_PER_RUN=1)
    pipeline.drop("inbox/one.jsonl", lines_for(2))
    pipeline.drop("inbox/two.jsonl", lines_for(2))
    store = pipeline.services.store

    # When the poller runs once, then again after the interval
    pipeline.step(30)
    written = [job for job in store.recent_jobs(limit=5) if job.live_at is not None]
    pipeline.step(61)

    # Then the first run wrote one job, and the next the other (never written before, so first in line)
    assert len(written) == 1
    assert all(job.live_at is not None for job in store.recent_jobs(limit=5))
