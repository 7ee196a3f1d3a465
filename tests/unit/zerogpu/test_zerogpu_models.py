"""Models accept ZeroGPU's and OpenAI's shapes, with extra and missing fields."""

from __future__ import annotations

import pytest

from batchdrop.integrations.zerogpu import Batch, BatchStatus, FileDeleted, FileObject
from batchdrop.integrations.zerogpu.models import TERMINAL_STATUSES

ZEROGPU_BATCH = {
    "id": "batch_01HZX",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "errors": None,
    "input_file_id": "file-abc",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-out",
    "error_file_id": "file-err",
    "created_at": 1_767_225_600,
    "in_progress_at": 1_767_225_600,
    "expires_at": 1_767_312_000,
    "finalizing_at": 1_767_225_700,
    "completed_at": 1_767_225_710,
    "failed_at": None,
    "expired_at": None,
    "cancelling_at": None,
    "cancelled_at": None,
    "request_counts": {"total": 3, "completed": 2, "failed": 1},
    "metadata": {"job_id": "j1", "nested": {"any": ["json"]}},
}

OPENAI_BATCH = {
    "id": "batch_abc123",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "errors": {
        "object": "list",
        "data": [{"code": "invalid_json_line", "line": 3, "message": "bad", "param": None}],
    },
    "input_file_id": "file-abc123",
    "completion_window": "24h",
    "status": "failed",
    "created_at": 1711471533,
    "metadata": None,
    "model": "gpt-4o-mini",
    "usage": {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12},
    "output_expires_after": {"anchor": "created_at", "seconds": 3600},
}


def test_zerogpu_batch() -> None:
    batch = Batch.model_validate(ZEROGPU_BATCH)
    assert batch.status is BatchStatus.COMPLETED
    assert batch.is_terminal
    assert batch.request_counts.completed == 2
    assert batch.metadata["nested"] == {"any": ["json"]}
    assert batch.errors is None


def test_openai_batch_with_extras_and_missing_fields() -> None:
    batch = Batch.model_validate(OPENAI_BATCH)
    assert batch.status is BatchStatus.FAILED
    assert batch.metadata == {}
    assert batch.request_counts is None
    assert batch.output_file_id is None
    assert batch.errors.data[0].code == "invalid_json_line"
    assert batch.errors.data[0].line == 3
    assert batch.model_extra["model"] == "gpt-4o-mini"
    assert batch.model_extra["usage"]["total_tokens"] == 12


def test_abridged_create_reply_parses() -> None:
    batch = Batch.model_validate({"id": "batch_01", "status": "in_progress", "input_file_id": "file-1"})
    assert batch.created_at is None and batch.metadata == {} and not batch.is_terminal


@pytest.mark.parametrize("status", list(BatchStatus))
def test_all_statuses_parse_to_the_enum(status: BatchStatus) -> None:
    batch = Batch.model_validate({"id": "b", "status": status.value})
    assert batch.status is status
    assert batch.is_terminal == (status in {"completed", "failed", "expired", "cancelled"})


def test_exactly_four_terminal_statuses() -> None:
    assert {s.value for s in TERMINAL_STATUSES} == {"completed", "failed", "expired", "cancelled"}
    assert len(BatchStatus) == 8


def test_unknown_status_is_kept_as_a_string() -> None:
    batch = Batch.model_validate({"id": "b", "status": "paused"})
    assert batch.status == "paused"
    assert not isinstance(batch.status, BatchStatus)
    assert not batch.is_terminal


def test_errors_with_null_data() -> None:
    batch = Batch.model_validate({"id": "b", "status": "failed", "errors": {"object": "list", "data": None}})
    assert batch.errors.data == []


def test_zerogpu_error_file_object() -> None:
    file = FileObject.model_validate(
        {
            "id": "file-err",
            "object": "file",
            "bytes": 120,
            "created_at": 1,
            "filename": "batch_01HZX_errors.jsonl",
            "purpose": "batch_output",
            "status": "processed",
            "is_error": True,
            "deleted_at": None,
        }
    )
    assert file.is_error
    assert file.expires_at is None
    assert file.model_extra == {"deleted_at": None}


def test_openai_file_object_and_minimal_file() -> None:
    file = FileObject.model_validate(
        {
            "id": "file-abc",
            "object": "file",
            "bytes": 120000,
            "created_at": 1677610602,
            "expires_at": 1680202602,
            "filename": "mydata.jsonl",
            "purpose": "batch",
            "status": "uploaded",
            "status_details": None,
            "is_error": None,
        }
    )
    assert not file.is_error and file.expires_at == 1680202602
    assert FileObject.model_validate({"id": "file-x"}).bytes is None


def test_file_deleted() -> None:
    assert FileDeleted.model_validate({"id": "file-x", "object": "file", "deleted": True}).deleted
