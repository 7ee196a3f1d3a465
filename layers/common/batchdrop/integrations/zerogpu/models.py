"""Wire models for files and batches, tolerant of both ZeroGPU's and OpenAI's shapes.

Extra fields are kept (``extra="allow"``) and everything the two APIs do not both guarantee is
optional, so a field added or dropped by the provider never breaks parsing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class BatchStatus(StrEnum):
    """The eight documented batch statuses. Unknown statuses still parse, as plain strings."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
RUNNING_STATUSES = frozenset(
    {BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.FINALIZING, BatchStatus.CANCELLING}
)
CANCELLABLE_STATUSES = frozenset({BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS})
"""A cancel still saves work (later, the batch is about to end anyway)."""
ENDING_STATUSES = frozenset({BatchStatus.FINALIZING, BatchStatus.CANCELLING})


class _WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileObject(_WireModel):
    """A file: an uploaded input (``purpose="batch"``) or a batch's output/error file (``batch_output``)."""

    id: str
    object: str = "file"
    bytes: int | None = None
    created_at: int | None = None
    filename: str | None = None
    purpose: str | None = None
    status: str | None = None
    expires_at: int | None = None
    status_details: str | None = None
    is_error: bool = False

    @field_validator("is_error", mode="before")
    @classmethod
    def _none_is_false(cls, value: Any) -> Any:
        return False if value is None else value


class FileDeleted(_WireModel):
    """The reply to a file delete."""

    id: str
    object: str = "file"
    deleted: bool = False


class BatchRequestCounts(_WireModel):
    """Per-line counts; ``completed + failed == total`` only once the batch is terminal."""

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(_WireModel):
    """One validation error of a ``failed`` batch."""

    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(_WireModel):
    """The ``errors`` list of a ``failed`` batch."""

    object: str | None = "list"
    data: list[BatchError] = Field(default_factory=list)

    @field_validator("data", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class Batch(_WireModel):
    """A batch. ``status`` is a :class:`BatchStatus` when known, else the raw string."""

    id: str
    object: str = "batch"
    endpoint: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str | None = None
    completion_window: str | None = None
    status: Annotated[BatchStatus | str, Field(union_mode="left_to_right")]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed, expired and cancelled: nothing changes afterwards."""
        return self.status in TERMINAL_STATUSES


class ListPage(_WireModel):
    """One page of a list reply (files or batches); items stay raw until the caller parses them."""

    object: str = "list"
    data: list[dict[str, Any]] = Field(default_factory=list)
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
