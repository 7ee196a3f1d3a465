"""The emulator's records (files and batches) and where their bytes live on disk."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE_RETENTION_SECONDS = 30 * 86400
COMPLETION_WINDOW_SECONDS = 86400

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass
class FileRecord:
    """A stored file: an upload (`batch`) or a batch's output or error file (`batch_output`)."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    path: Path
    expires_at: float | None = None
    is_error: bool = False
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }
        if self.expires_at is not None:
            document["expires_at"] = int(self.expires_at)
        if self.is_error:
            document["is_error"] = True
        return document


@dataclass
class RequestCounts:
    """A batch's `request_counts`."""

    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}

    def copy(self) -> RequestCounts:
        return RequestCounts(self.total, self.completed, self.failed)


@dataclass
class BatchRecord:
    """A batch and its processing state. Times are float seconds; the wire shows whole seconds."""

    id: str
    endpoint: str
    input_file_id: str
    created_at: float
    expires_at: float
    metadata: Any
    work_dir: Path
    status: str = "validating"
    completion_window: str = "24h"
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    expired_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None
    counts: RequestCounts = field(default_factory=RequestCounts)
    lines_done: int = 0
    read_offset: int = 0
    listed_counts: RequestCounts | None = None
    listed_at: float | None = None
    stall_after: int | None = None
    """A stall fault: the batch runs this many lines, then makes no progress (Faults.stall_batches)."""

    @property
    def input_path(self) -> Path:
        """The validated lines, one per line, copied at create (so deleting the upload changes nothing)."""
        return self.work_dir / "input.jsonl"

    @property
    def output_path(self) -> Path:
        return self.work_dir / "output.jsonl"

    @property
    def errors_path(self) -> Path:
        return self.work_dir / "errors.jsonl"

    def to_json(self, counts: RequestCounts | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": _seconds(self.in_progress_at),
            "expires_at": int(self.expires_at),
            "finalizing_at": _seconds(self.finalizing_at),
            "completed_at": _seconds(self.completed_at),
            "failed_at": _seconds(self.failed_at),
            "expired_at": _seconds(self.expired_at),
            "cancelling_at": _seconds(self.cancelling_at),
            "cancelled_at": _seconds(self.cancelled_at),
            "request_counts": (counts or self.counts).to_json(),
            "metadata": self.metadata,
        }


class StorageDir:
    """The directory tree: `files/` (uploads), `batches/<id>/` (work copy, output, errors), `incoming/`."""

    def __init__(self, root: str | Path | None) -> None:
        self._owned = root is None
        self.root = Path(tempfile.mkdtemp(prefix="zerogpu-emulator-")) if root is None else Path(root)
        for sub in ("files", "batches", "incoming"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def upload_path(self, file_id: str) -> Path:
        return self.root / "files" / f"{file_id}.jsonl"

    def batch_dir(self, batch_id: str) -> Path:
        return self.root / "batches" / batch_id

    def incoming_file(self) -> Path:
        """A fresh path for an upload being received."""
        return self.root / "incoming" / f"{secrets.token_hex(12)}.part"

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)
