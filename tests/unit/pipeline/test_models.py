"""Job identity and the names results are filed under."""

from __future__ import annotations

import pytest

from batchdrop.pipeline.models import ObjectRef, input_name


def test_the_job_id_is_the_object_identity() -> None:
    first = ObjectRef("b", "inbox/x.jsonl", version_id="v1", etag="e1")
    assert first.job_id == ObjectRef("b", "inbox/x.jsonl", version_id="v1", etag="other").job_id
    assert first.job_id != ObjectRef("b", "inbox/x.jsonl", version_id="v2", etag="e1").job_id
    assert first.job_id != ObjectRef("b2", "inbox/x.jsonl", version_id="v1").job_id


def test_without_versioning_the_etag_tells_uploads_apart() -> None:
    quoted = ObjectRef("b", "inbox/x.jsonl", etag='"abc"')
    assert quoted.job_id == ObjectRef("b", "inbox/x.jsonl", etag="abc").job_id
    assert quoted.job_id != ObjectRef("b", "inbox/x.jsonl", etag="abd").job_id


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("inbox/x.jsonl", "x"),
        ("inbox/team a/q+1 ü.jsonl", "team a/q+1 ü"),
        ("inbox/x.jsonl.gz", "x"),
        ("inbox/x.json", None),
        ("inbox/x.jsonl.bak", None),
        ("inbox/.jsonl", None),
        ("inbox/a/../b.jsonl", None),
        ("inbox//b.jsonl", None),
        ("inbox/bad\x07name.jsonl", None),
        ("outbox/x.jsonl", None),
    ],
)
def test_input_names(key: str, name: str | None) -> None:
    assert input_name(key, "inbox/") == name


def test_submitted_keys_outside_the_inbox_are_named_by_their_path_but_never_the_pipelines_own() -> None:
    reserved = ("outbox/", "work/")
    assert input_name("exports/2026/x.jsonl", "inbox/", reserved_prefixes=reserved) == "exports/2026/x"
    assert input_name("inbox/x.jsonl", "inbox/", reserved_prefixes=reserved) == "x"
    assert input_name("outbox/x/output.jsonl", "inbox/", reserved_prefixes=reserved) is None
    assert input_name("work/j/shards/0.jsonl", "inbox/", reserved_prefixes=reserved) is None
