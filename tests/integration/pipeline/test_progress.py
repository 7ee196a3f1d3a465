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
        job.job_id, {}, job.progress, now=int(pipeline.clock.now()) + 10_000, due_before=10**12, expires_at=10**12
    )
    assert late is False and status_json(pipeline)["status"] == "succeeded"


def test_a_job_of_a_thousand_batches_keeps_its_looks_in_items_and_expressions_that_fit(
    make_pipeline: Any,
) -> None:
    from batchdrop.integrations.store import LIVE_PER_ITEM
    from batchdrop.models import BatchProgress, JobProgress, RequestCounts

    # Given a job of 1,000 shards (an input may have 4,999 batches, and more in its rounds), written by a
    # version that kept its looks on the job's own item (where 190 made an expression over 4 KB, and
    # 5,000 an item over 400 KB)
    pipeline: Pipeline = make_pipeline(emulator_settings={"lines_per_second": 0.1})
    pipeline.drop("inbox/progress.jsonl", lines_for(2))
    store = pipeline.services.store
    (job,) = store.recent_jobs(limit=1)
    key = {"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}}
    store._db.update_item(
        TableName=store._table,
        Key=key,
        UpdateExpression="SET shard_count = :count, live_batches = :legacy",
        ExpressionAttributeValues={":count": {"N": "1000"}, ":legacy": {"M": {"0": {"M": {"status": {"S": "x"}}}}}},
    )
    job = store.get_job(job.job_id)  # the old attribute is ignored
    assert job is not None and job.shard_count == 1_000
    batches = {
        str(index): BatchProgress(round=index // 500, status="in_progress", total=50_000, completed=index * 7)
        for index in range(1_000)
    }
    seen = JobProgress(status="running", request_counts=RequestCounts(total=100_000_000), updated_at=100)
    expressions: list[str] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        expressions.append(params["UpdateExpression"])

    store._db.meta.events.register("provide-client-params.dynamodb.UpdateItem", keep)

    # When a poll run saw every one of them, and another within the interval
    first = store.record_progress(job.job_id, batches, seen, now=100, due_before=40, expires_at=10**10)
    second = store.record_progress(job.job_id, batches, seen, now=110, due_before=50, expires_at=10**10)

    # Then the first wrote them all, in expressions under DynamoDB's 4 KB, and the second nothing
    assert (first, second) == (True, False)
    assert len(expressions) == 1 + 1 + 1_000 // 100  # the job, the refused job, the batches 100 a write
    assert max(len(expression) for expression in expressions) < 4096
    assert store.get_live_batches(job) == batches
    # and neither the job's item nor any of its LIVE# items nears DynamoDB's 400 KB
    items = store._db.query(
        TableName=store._table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"JOB#{job.job_id}"}},
    )["Items"]
    sizes = {item["sk"]["S"]: len(json.dumps(item)) for item in items}
    assert len([sk for sk in sizes if sk.startswith("LIVE#")]) == 1_000 // LIVE_PER_ITEM
    assert max(sizes.values()) < 100_000, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    recorded = store.get_job(job.job_id)
    assert recorded is not None and recorded.live_at == 100 and recorded.progress == seen


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


def test_a_retry_by_hand_counts_only_what_it_changed_on_the_dashboard(make_pipeline: Any, monkeypatch: Any) -> None:
    from collections import Counter

    from batchdrop.flow import completion, redrive

    figures: Counter[str] = Counter()
    costs: list[float] = []
    monkeypatch.setattr(completion, "count", lambda metric, value=1: figures.update({metric.value: value}))
    monkeypatch.setattr(completion, "measure", lambda metric, value: costs.append(value))

    # Given a job of four lines, one refused for good, ended partial, on a model the price table knows
    pipeline: Pipeline = make_pipeline()
    pipeline.emulator.faults.line_errors("invalid_request_error", custom_ids={"d-2"})
    lines = [chat_line(f"d-{i}") for i in range(4)]
    for line in lines:
        line["body"]["model"] = "llama-3.1-8b-instruct-fast"
    pipeline.drop("inbox/progress.jsonl", jsonl(lines))
    pipeline.run()
    assert (figures["LinesSucceeded"], figures["LinesFailed"]) == (3, 1)
    first_tokens, first_cost = figures["PromptTokens"], costs[0]
    assert first_tokens > 0 and first_cost > 0

    # When the fault is fixed and the line retried by hand
    pipeline.emulator.faults.clear()
    (job,) = pipeline.services.store.recent_jobs(limit=1)
    redrive.request_retry(
        pipeline.services.store,
        job.job_id,
        now=pipeline.services.now(),
        s3=pipeline.s3,
        codes=["invalid_request_error"],
    )
    pipeline.run()

    # Then the sums say each line once, where it ended (the recovered line moved), and the retry's one
    # line's tokens and cost were added, not the whole job's again
    assert pipeline.report("progress")["outcome"] == "succeeded"
    assert (figures["LinesSucceeded"], figures["LinesFailed"]) == (4, 0)
    assert first_tokens < figures["PromptTokens"] < 2 * first_tokens
    assert len(costs) == 2 and 0 < costs[1] < first_cost
    assert figures["JobsFinished"] == 2  # each end is announced, and counted


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
