"""Helpers shared by every tier (imported as `testsupport`; tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"


def load_event(name: str) -> dict:
    """The sample Lambda events under events/, shared with `sam local invoke -e`."""
    return json.loads((EVENTS / name).read_text())


def assert_matches_schema(document: dict, schema_name: str) -> None:
    """Checks a report or event detail against the JSON Schema published under events/schemas/."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {path.name: json.loads(path.read_text()) for path in (EVENTS / "schemas").glob("*.json")}
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    validator = Draft202012Validator(schemas[schema_name], registry=registry)
    errors = sorted(validator.iter_errors(document), key=lambda error: list(error.path))
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]


def a_job(lines: int = 1_000, **changes: Any) -> Any:
    """A job record whose one batch is running (received at t=1,000), with `changes` on top: the CLI's
    and the progress view's tests read such records without a table."""
    from batchdrop.models import InputInfo, Job, JobStatus

    job = Job(
        job_id="job-1",
        status=JobStatus.SUBMITTING,
        input=InputInfo(bucket="b", key="inbox/x.jsonl", version_id=None, etag="e", bytes=10, lines=lines),
        output_prefix="outbox/x/",
        received_at=1_000,
        shard_count=1,
        started_shards={0},
    )
    return job.model_copy(update=changes)
