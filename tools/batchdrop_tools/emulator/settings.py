"""The emulator's knobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from batchdrop_tools.emulator.rules import MAX_UPLOAD_BYTES

LineFormat = Literal["zerogpu", "openai"]


@dataclass(frozen=True)
class EmulatorSettings:
    """How the emulated ZeroGPU account behaves.

    api_key: None accepts any non-empty `x-api-key`; otherwise it must be equal (403 if not).
    project_id: None accepts any `x-project-id`; otherwise a given one must be equal (403 if not).
    require_project_id: a missing `x-project-id` gives 401.
    lines_per_second: None runs every line at the first processing step after create; otherwise the
        number of lines done t seconds after `in_progress_at` is floor(t * rate), per batch.
    finalizing_seconds: how long a batch stays `finalizing` once every line ran.
    cancelling_seconds: a cancelled batch stays `cancelling` until the clock has moved past
        `cancelling_at + cancelling_seconds` (so a repeated cancel at the same instant is idempotent).
    line_format: "zerogpu" lines, or "openai" (HTTP failures as `response.status_code` 4xx/5xx with
        `body.error` and `error: null`; success lines carry `"error": null`).
    storage_dir: where files, outputs and error files live; None uses a private temp dir removed by close().
    list_lag_seconds: the batch list shows `request_counts` up to this many seconds old (retrieve is live).
    reply_lost_delay: in server mode, how long a "reply lost" fault stalls before dropping the connection.
    max_upload_bytes: the upload cap (413 `file_too_large` above it); ZeroGPU's is 100 MB.
    manual_processing: batches move on only when asked (`POST /_emulator/process`), never by themselves:
        a benchmark keeps the emulator's own work (answering lines) out of what it measures.
    """

    api_key: str | None = None
    project_id: str | None = None
    require_project_id: bool = False
    lines_per_second: float | None = None
    finalizing_seconds: float = 0.0
    cancelling_seconds: float = 0.0
    line_format: LineFormat = "zerogpu"
    storage_dir: str | Path | None = None
    list_lag_seconds: float = 0.0
    reply_lost_delay: float = 1.0
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    manual_processing: bool = False

    def __post_init__(self) -> None:
        if self.lines_per_second is not None and self.lines_per_second <= 0:
            raise ValueError("lines_per_second must be positive (or None for instant processing)")
        if self.line_format not in ("zerogpu", "openai"):
            raise ValueError(f"unknown line_format {self.line_format!r}")
