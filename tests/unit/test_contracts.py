"""Each published document's model against its JSON Schema in events/schemas/: every field the model
writes is described there, and every field the schema requires is one the model always writes."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel
from testsupport import EVENTS, assert_matches_schema

from batchdrop import contracts
from batchdrop.models import InputInfo, Job, JobStatus, Outcome, RequestCounts, Shard, ShardResult, ShardState
from batchdrop.validation import Problem, ProblemCode

SCHEMAS = {path.name: json.loads(path.read_text()) for path in (EVENTS / "schemas").glob("*.json")}


def _resolve(schema: dict[str, Any], home: str) -> tuple[dict[str, Any], str]:
    while "$ref" in schema:
        target, _, pointer = schema["$ref"].partition("#")
        home = target or home
        node: Any = SCHEMAS[home]
        for part in filter(None, pointer.split("/")):
            node = node[part]
        schema = node
    return schema, home


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (directly, optionally, or as list items), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for argument in typing.get_args(annotation):
            if (model := _model_of(argument)) is not None:
                return model
    return None


def _always_written(model: type[BaseModel]) -> set[str]:
    omitted = getattr(model, "OMITTED_WHEN_NONE", frozenset())
    return {name for name in model.model_fields if name not in omitted}


def _check(model: type[BaseModel], schema: dict[str, Any], home: str, where: str) -> list[str]:
    schema, home = _resolve(schema, home)
    if schema.get("type") == "array" or (isinstance(schema.get("type"), list) and "array" in schema["type"]):
        schema, home = _resolve(schema["items"], home)
    problems = []
    described = set(schema.get("properties", {}))
    written = set(model.model_fields)
    if described != written:
        problems.append(
            f"{where}: only in the model {sorted(written - described)}, only in the schema "
            f"{sorted(described - written)}"
        )
    required = set(schema.get("required", []))
    if not required <= _always_written(model):
        problems.append(f"{where}: required but not always written {sorted(required - _always_written(model))}")
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        if nested is not None and name in schema.get("properties", {}):
            problems += _check(nested, schema["properties"][name], home, f"{where}.{name}")
    return problems


@pytest.mark.parametrize(
    ("model", "schema_name"),
    [
        (contracts.Report, "report.schema.json"),
        (contracts.FinishedDetail, "batch-job-finished.schema.json"),
        (contracts.SubmittedDetail, "batch-job-submitted.schema.json"),
        (contracts.RejectedDetail, "batch-job-rejected.schema.json"),
        (contracts.Status, "status.schema.json"),
        (contracts.RoundFinishedDetail, "batch-job-round-finished.schema.json"),
    ],
)
def test_each_model_is_the_schema_it_publishes(model: type[BaseModel], schema_name: str) -> None:
    assert _check(model, SCHEMAS[schema_name], schema_name, model.__name__) == []


def test_the_check_finds_a_field_the_schema_does_not_describe() -> None:
    class Wider(contracts.SubmittedDetail):
        surprise: int = 0

    assert _check(Wider, SCHEMAS["batch-job-submitted.schema.json"], "batch-job-submitted.schema.json", "Wider")


JOB = Job(
    job_id="job-" + "0" * 32,
    status=JobStatus.FINISHED,
    outcome=Outcome.PARTIAL,
    input=InputInfo(bucket="b", key="inbox/x.jsonl", version_id=None, etag="e", bytes=10, lines=3),
    output_prefix="outbox/x/",
    received_at=1_767_225_600,
    submitted_at=1_767_225_660,
    finished_at=1_767_229_200,
)
SHARD = Shard(
    job_id=JOB.job_id,
    index=0,
    state=ShardState.COLLECTED,
    work_key="work/x/00000.jsonl",
    lines=3,
    bytes=10,
    first_line=1,
    batch_id="batch_1",
    batch_status="completed",
    request_counts=RequestCounts(total=3, completed=2, failed=1),
    result=ShardResult(succeeded=2, failed=1, output_key="o", errors_key="e"),
)


def test_what_the_builders_write_matches_the_schemas() -> None:
    counts = contracts.Counts(total=3, succeeded=2, failed=1)
    report = contracts.finished_report(JOB, [SHARD], counts, {"model_error": 1}).document()
    assert_matches_schema(report, "report.schema.json")
    assert report["outcome"] == "partial" and report["batch_count"] == 1
    assert "validation_error_count" not in report  # left out, not null
    rejected = JOB.model_copy(
        update={"status": JobStatus.REJECTED, "outcome": Outcome.REJECTED, "validation_error_count": 1}
    )
    rejection = contracts.rejection_report(
        rejected,
        lines=3,
        problems=[Problem(ProblemCode.INVALID_JSON, "Line 2 is not valid JSON", 2)],
        problem_count=1,
        errors_by_code={"invalid_json": 1},
        now=1_767_229_200,
    ).document()
    assert_matches_schema(rejection, "report.schema.json")
    assert rejection["outputs"] == {"report": "s3://b/outbox/x/report.json"}
    assert "batch_count" not in rejection
    assert_matches_schema(contracts.finished_detail(JOB, counts, {}).document(), "batch-job-finished.schema.json")
    assert_matches_schema(contracts.rejected_input_detail(rejected).document(), "batch-job-finished.schema.json")
    assert_matches_schema(contracts.submitted_detail(JOB, [SHARD]).document(), "batch-job-submitted.schema.json")
    detail = contracts.rejected_request_detail({"key": "x" * 10_000}, "no bucket", 1_767_229_200).document()
    assert_matches_schema(detail, "batch-job-rejected.schema.json")
    assert detail["request"]["truncated"] is True


def test_status_json_while_running_and_at_the_end_matches_its_schema() -> None:
    from batchdrop.flow import progress
    from batchdrop.models import BatchProgress, LineCounts

    # Given a job of two batches, one running at half of its lines after 100 s, one not started
    running = JOB.model_copy(update={"status": JobStatus.SUBMITTING, "outcome": None, "finished_at": None})
    running = running.model_copy(update={"shard_count": 2, "started_shards": {0, 1}})
    batches = {
        "0": BatchProgress(status="in_progress", total=10, completed=4, failed=1, created_at=1_767_225_700),
        "1": BatchProgress(status="validating", total=10, created_at=1_767_225_700),
    }
    # When its progress is seen 100 s in
    seen = progress.view(running, 1_767_225_800, batches)
    status = contracts.status_document(running, seen).document()

    # Then it is running, counts summed, the time left not known until the second batch has done a line
    assert_matches_schema(status, "status.schema.json")
    assert status["status"] == "running" and status["finished"] is False
    assert status["request_counts"] == {"total": 20, "completed": 4, "failed": 1}
    assert status["eta_seconds"] is None and status["counts"] is None
    # and once both have done lines, the slower one says when: 9 of 10 left at 1 line per 100 s
    batches["1"] = BatchProgress(status="in_progress", total=10, completed=1, created_at=1_767_225_700)
    assert progress.view(running, 1_767_225_800, batches).eta_seconds == 900
    # and with every batch ended, it is collecting
    ended = {key: batch.model_copy(update={"status": "completed"}) for key, batch in batches.items()}
    assert progress.view(running, 1_767_225_900, ended).status == "collecting"

    # When the job has ended
    final = contracts.status_document(
        JOB.model_copy(update={"shard_count": 2}),
        progress.view(JOB.model_copy(update={"shard_count": 2}), 1_767_229_200, ended),
        counts=LineCounts(total=20, succeeded=19, failed=1),
    ).document()
    # Then it says the outcome, as report.json does
    assert_matches_schema(final, "status.schema.json")
    assert final["status"] == "partial" and final["finished"] is True and final["eta_seconds"] == 0
    assert final["counts"] == {"total": 20, "succeeded": 19, "failed": 1}
    assert final["outputs"]["output"].endswith("outbox/x/output.jsonl")


def test_the_live_status_follows_the_job() -> None:
    from batchdrop.flow import progress

    received = JOB.model_copy(update={"status": JobStatus.RECEIVED, "outcome": None})
    assert progress.live_status(received, {}) == "validating"
    submitting = received.model_copy(update={"status": JobStatus.SUBMITTING, "shard_count": 2, "started_shards": {0}})
    assert progress.live_status(submitting, {}) == "submitting"
    waiting = submitting.model_copy(update={"started_shards": {0, 1}, "collected_shards": {0, 1}, "redrive_due_at": 1})
    assert progress.live_status(waiting, {}) == "retrying"
    assert progress.live_status(JOB.model_copy(update={"status": JobStatus.REJECTED}), {}) == "rejected"
