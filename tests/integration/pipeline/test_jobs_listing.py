"""The operator's listing reads the JobsByDay index: newest first for real, across days, bounded."""

from __future__ import annotations

from pipeline_harness import Pipeline, chat_line, jsonl


def one_line(name: str) -> bytes:
    return jsonl([chat_line(f"{name}-1", "hello")])


def test_jobs_are_listed_newest_first_across_days(pipeline: Pipeline) -> None:
    # Given jobs dropped on two days, in an order unlike their keys'
    pipeline.drop("inbox/b-monday.jsonl", one_line("b"))
    pipeline.clock.advance(600)
    pipeline.drop("inbox/a-monday-later.jsonl", one_line("a"))
    pipeline.clock.advance(86_400)
    pipeline.drop("inbox/c-tuesday.jsonl", one_line("c"))
    pipeline.clock.advance(60)
    pipeline.drop("inbox/d-tuesday-later.jsonl", one_line("d"))

    # When the operator lists them
    listed = [job.input.key for job in pipeline.services.store.recent_jobs(limit=10)]

    # Then the newest comes first, yesterday's after today's
    assert listed == [
        "inbox/d-tuesday-later.jsonl",
        "inbox/c-tuesday.jsonl",
        "inbox/a-monday-later.jsonl",
        "inbox/b-monday.jsonl",
    ]
    # and a limit takes the newest only; days bound how far back it reads
    assert [job.input.key for job in pipeline.services.store.recent_jobs(limit=1)] == ["inbox/d-tuesday-later.jsonl"]
    assert len(list(pipeline.services.store.recent_jobs(limit=10, days=0))) == 2


def test_a_listing_of_hundreds_of_jobs_reads_them_a_hundred_at_a_time(pipeline: Pipeline) -> None:
    from collections import Counter

    from testsupport import a_job

    # Given 250 jobs received a second apart
    store = pipeline.services.store
    now = int(pipeline.services.now())
    for n in range(250):
        store.create_job(a_job(job_id=f"job-{n:032d}", received_at=now - 250 + n))
    calls: Counter[str] = Counter()
    store._db.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))

    # When the operator lists them all
    listed = [job.job_id for job in store.recent_jobs(limit=300)]

    # Then they come newest first, read in three BatchGetItem calls, none one by one
    assert listed == [f"job-{n:032d}" for n in reversed(range(250))]
    assert calls["BatchGetItem"] == 3 and calls["GetItem"] == 0
