"""The emulated account's state: files, batches, create-time validation, and line processing.

One lock guards the records; a second one makes a single thread process at a time, with the record lock
taken per line so requests are served while a batch runs. Lines are streamed from disk and results
appended to disk, so memory does not grow with file size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
from pathlib import Path
from typing import Any, BinaryIO

from batchdrop_tools.emulator import errors, rules
from batchdrop_tools.emulator.backends import Backend, BackendReply
from batchdrop_tools.emulator.clock import Clock
from batchdrop_tools.emulator.errors import ApiError
from batchdrop_tools.emulator.faults import Faults
from batchdrop_tools.emulator.ids import SortableIds
from batchdrop_tools.emulator.lines import (
    BATCH_CANCELLED,
    BATCH_EXPIRED,
    LineFailure,
    error_line,
    failure_from_reply,
    injected_failure,
    success_line,
)
from batchdrop_tools.emulator.settings import EmulatorSettings
from batchdrop_tools.emulator.store import (
    COMPLETION_WINDOW_SECONDS,
    FILE_RETENTION_SECONDS,
    BatchRecord,
    FileRecord,
    RequestCounts,
    StorageDir,
)

_RUNNING = frozenset({"in_progress", "finalizing", "cancelling"})
_CANCELLABLE = frozenset({"validating", "in_progress"})
# floor((t - in_progress_at) * rate) must not lose a line to float rounding (0.3 * 10 = 2.9999...)
_EPSILON = 1e-9


class Engine:
    """Files and batches of one emulated ZeroGPU project, and the processing that moves batches on."""

    def __init__(
        self,
        settings: EmulatorSettings,
        clock: Clock,
        backend: Backend,
        faults: Faults,
        storage: StorageDir,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.backend = backend
        self.faults = faults
        self.storage = storage
        self._lock = threading.RLock()
        self._process_lock = threading.Lock()
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._file_ids = SortableIds(random_chars=14)
        self._batch_ids = SortableIds(random_chars=16)

    # ---- files -------------------------------------------------------------------------------

    def add_upload(self, received: Path, filename: str | None, size: int) -> dict[str, Any]:
        """Adopt an upload already written to disk at `received`."""
        with self._lock:
            now = self.clock.now()
            file_id = self._new_file_id(now)
            path = self.storage.upload_path(file_id)
            os.replace(received, path)
            record = FileRecord(
                id=file_id,
                filename=filename or f"{file_id}.jsonl",
                purpose="batch",
                bytes=size,
                created_at=now,
                path=path,
                expires_at=now + FILE_RETENTION_SECONDS,
            )
            self._files[file_id] = record
            return record.to_json()

    def get_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._live_file(file_id).to_json()

    def open_file_content(self, file_id: str) -> tuple[FileRecord, BinaryIO]:
        """The record and an open handle (the handle survives a concurrent delete)."""
        with self._lock:
            record = self._live_file(file_id)
            try:
                return record, record.path.open("rb")
            except FileNotFoundError:
                raise errors.file_not_found(file_id) from None

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Soft delete: the row stays (marked), the bytes go; running batches read their own copy."""
        with self._lock:
            record = self._live_file(file_id)
            record.deleted = True
            record.path.unlink(missing_ok=True)
            return {"id": file_id, "object": "file", "deleted": True}

    def list_files(self, *, purpose: str | None, order: str, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            records = [f for f in self._files.values() if not f.deleted]
            if purpose is not None:
                records = [f for f in records if f.purpose == purpose]
            descending = order == "desc"
            records.sort(key=lambda f: f.id, reverse=descending)
            if after is not None:
                records = [f for f in records if (f.id < after if descending else f.id > after)]
            return _page([f.to_json() for f in records[: limit + 1]], limit)

    def file_ids(self) -> list[str]:
        with self._lock:
            return [f.id for f in self._files.values() if not f.deleted]

    # ---- batches -----------------------------------------------------------------------------

    def create_batch(self, payload: Any) -> dict[str, Any]:
        """Validate synchronously, as ZeroGPU does; a rejected file still leaves a `failed` batch."""
        if not isinstance(payload, dict):
            raise _create_error("Request body must be a JSON object")
        input_file_id = payload.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise _create_error("input_file_id is required")
        endpoint = payload.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise _create_error("endpoint is required")
        window = payload.get("completion_window")
        if window is not None and window != "24h":
            raise _create_error('completion_window must be "24h"')
        metadata = payload.get("metadata")
        with self._lock:
            upload = self._files.get(input_file_id)
            if upload is None or upload.deleted:
                raise ApiError(404, f"Input file not found: {input_file_id}", code="file_not_found")
            try:
                source = upload.path.open("rb")
            except FileNotFoundError:
                raise ApiError(404, f"Input file object missing: {input_file_id}", code="file_not_found") from None
            now = self.clock.now()
            batch_id = "batch_" + self._batch_ids.new(now)
            batch = BatchRecord(
                id=batch_id,
                endpoint=endpoint,
                input_file_id=input_file_id,
                created_at=now,
                expires_at=now + COMPLETION_WINDOW_SECONDS,
                metadata={} if metadata is None else metadata,
                work_dir=self.storage.batch_dir(batch_id),
                stall_after=self.faults.stall_for_new_batch(),
            )
            batch.work_dir.mkdir(parents=True)
            self._batches[batch_id] = batch
        with source:
            problem, total = _validate_into(source, endpoint, batch.input_path)
        with self._lock:
            now = self.clock.now()
            if problem is not None:
                batch.status = "failed"
                batch.failed_at = now
                batch.errors = [
                    {
                        "code": problem.code,
                        "message": problem.message,
                        "line": problem.line,
                        "param": None,
                    }
                ]
                shutil.rmtree(batch.work_dir, ignore_errors=True)
                raise _create_error(problem.message, problem.line)
            batch.counts.total = total
            if batch.status == "validating":  # not cancelled meanwhile
                batch.status = "in_progress"
                batch.in_progress_at = now
            return batch.to_json()

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            return self._batch(batch_id).to_json()

    def list_batches(self, *, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            now = self.clock.now()
            records = sorted(self._batches.values(), key=lambda b: b.id, reverse=True)
            if after is not None:
                records = [b for b in records if b.id < after]
            return _page([b.to_json(self._listed_counts(b, now)) for b in records[: limit + 1]], limit)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            if batch.status in _CANCELLABLE:
                batch.status = "cancelling"
                batch.cancelling_at = self.clock.now()
            elif batch.status != "cancelling":
                raise ApiError(
                    409,
                    f"Batch {batch_id} cannot be cancelled: its status is {batch.status}",
                    code="batch_not_cancellable",
                )
            return batch.to_json()

    def batch_ids(self) -> list[str]:
        with self._lock:
            return list(self._batches)

    # ---- processing --------------------------------------------------------------------------

    def process(self, *, blocking: bool = True) -> bool:
        """Move every running batch on to `clock.now()`. With blocking=False, return False at once if
        another thread is processing (request handlers use that, so a slow backend never stalls them)."""
        if not self._process_lock.acquire(blocking=blocking):
            return False
        try:
            now = self.clock.now()
            with self._lock:
                running = [b for b in self._batches.values() if b.status in _RUNNING]
            for batch in running:
                self._advance(batch, now)
            return True
        finally:
            self._process_lock.release()

    def _advance(self, batch: BatchRecord, now: float) -> None:
        self._run_due_lines(batch, now)
        with self._lock:
            while True:
                before = batch.status
                if batch.status == "in_progress":
                    self._finish_or_expire(batch, now)
                elif batch.status == "finalizing":
                    assert batch.finalizing_at is not None
                    done_at = batch.finalizing_at + self.settings.finalizing_seconds
                    if now >= done_at:
                        self._publish_results(batch, done_at)
                        batch.status = "completed"
                        batch.completed_at = done_at
                elif batch.status == "cancelling":
                    assert batch.cancelling_at is not None
                    if now > batch.cancelling_at + self.settings.cancelling_seconds:
                        self._fail_remaining_lines(batch, BATCH_CANCELLED)
                        self._publish_results(batch, now)
                        batch.status = "cancelled"
                        batch.cancelled_at = now
                if batch.status == before:
                    return

    def _finish_or_expire(self, batch: BatchRecord, now: float) -> None:
        assert batch.in_progress_at is not None
        rate = self.settings.lines_per_second
        if batch.lines_done >= batch.counts.total:
            batch.status = "finalizing"
            batch.finalizing_at = now if rate is None else min(now, batch.in_progress_at + batch.counts.total / rate)
        elif now >= batch.expires_at:
            self._fail_remaining_lines(batch, BATCH_EXPIRED)
            self._publish_results(batch, batch.expires_at)
            batch.status = "expired"
            batch.expired_at = batch.expires_at

    def _due_lines(self, batch: BatchRecord, now: float) -> int:
        rate = self.settings.lines_per_second
        total = batch.counts.total
        if rate is None or batch.in_progress_at is None:
            return total
        horizon = min(now, batch.expires_at)
        return max(0, min(total, math.floor((horizon - batch.in_progress_at) * rate + _EPSILON)))

    def _lines_allowed(self, batch: BatchRecord, now: float) -> int:
        due = self._due_lines(batch, now)
        return due if batch.stall_after is None else min(due, batch.stall_after)

    def _run_due_lines(self, batch: BatchRecord, now: float) -> None:
        with self._lock:
            if batch.status != "in_progress":
                return
            target = self._lines_allowed(batch, now)
            done = batch.lines_done
            offset = batch.read_offset
        if done >= target:
            return
        rate = self.settings.lines_per_second
        with (
            batch.input_path.open("rb") as source,
            _AppendOnDemand(batch.output_path) as outputs,
            _AppendOnDemand(batch.errors_path) as failures,
        ):
            source.seek(offset)
            for raw in source:
                with self._lock:
                    if batch.status != "in_progress":
                        return
                assert batch.in_progress_at is not None
                ran_at = now if rate is None else batch.in_progress_at + (done + 1) / rate
                line, succeeded = self._run_line(batch.id, raw, ran_at)
                (outputs if succeeded else failures).write(line)
                done += 1
                offset += len(raw)
                with self._lock:
                    batch.lines_done = done
                    batch.read_offset = offset
                    if succeeded:
                        batch.counts.completed += 1
                    else:
                        batch.counts.failed += 1
                if done >= target:
                    return

    def _run_line(self, batch_id: str, raw: bytes, ran_at: float) -> tuple[bytes, bool]:
        document = json.loads(raw)  # validated at create: an object with a custom_id and a body
        custom_id: str = document["custom_id"]
        line_format = self.settings.line_format
        injected = self.faults.line_error_for(custom_id)
        if injected is not None:
            return _encode(error_line(line_format, batch_id, custom_id, injected_failure(injected))), False
        try:
            reply = self.backend.complete(document["body"], custom_id=custom_id, created=int(ran_at))
        except Exception:  # a broken backend must fail the line (as the API's internal_error), not the emulator
            logging.getLogger("batchdrop_tools.emulator").exception("the backend failed on line %s", custom_id)
            reply = BackendReply(
                500,
                {"error": {"message": "The model server could not answer this request after retries."}},
                legacy_code="retries_exhausted",
            )
        if reply.ok:
            return _encode(success_line(line_format, batch_id, custom_id, reply)), True
        return _encode(error_line(line_format, batch_id, custom_id, failure_from_reply(reply))), False

    def _fail_remaining_lines(self, batch: BatchRecord, failure: LineFailure) -> None:
        """Write every line that never ran to the error file (record lock held)."""
        if batch.lines_done >= batch.counts.total or not batch.input_path.exists():
            return
        with batch.input_path.open("rb") as source, batch.errors_path.open("ab") as failures:
            source.seek(batch.read_offset)
            for raw in source:
                custom_id = json.loads(raw)["custom_id"]
                failures.write(_encode(error_line(self.settings.line_format, batch.id, custom_id, failure)))
                batch.counts.failed += 1
                batch.lines_done += 1
                batch.read_offset += len(raw)

    def _publish_results(self, batch: BatchRecord, at: float) -> None:
        """Register the output and error files that have at least one line (record lock held)."""
        for path, is_error, suffix in (
            (batch.output_path, False, "output"),
            (batch.errors_path, True, "errors"),
        ):
            size = path.stat().st_size if path.exists() else 0
            if size == 0:
                continue
            file_id = self._new_file_id(at)
            self._files[file_id] = FileRecord(
                id=file_id,
                filename=f"{batch.id}_{suffix}.jsonl",
                purpose="batch_output",
                bytes=size,
                created_at=at,
                path=path,
                expires_at=at + FILE_RETENTION_SECONDS,
                is_error=is_error,
            )
            if is_error:
                batch.error_file_id = file_id
            else:
                batch.output_file_id = file_id
        batch.input_path.unlink(missing_ok=True)

    # ---- helpers -----------------------------------------------------------------------------

    def _new_file_id(self, now: float) -> str:
        return "file-" + self._file_ids.new(now).lower()

    def _live_file(self, file_id: str) -> FileRecord:
        record = self._files.get(file_id)
        if record is None or record.deleted:
            raise errors.file_not_found(file_id)
        return record

    def _batch(self, batch_id: str) -> BatchRecord:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise errors.batch_not_found(batch_id)
        return batch

    def _listed_counts(self, batch: BatchRecord, now: float) -> RequestCounts:
        lag = self.settings.list_lag_seconds
        if lag <= 0:
            return batch.counts
        if batch.listed_counts is None or batch.listed_at is None or now - batch.listed_at >= lag:
            batch.listed_counts = batch.counts.copy()
            batch.listed_at = now
        return batch.listed_counts


class _AppendOnDemand:
    """An append-mode file opened at the first write, so an empty result never creates a file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._handle is None:
            self._handle = self._path.open("ab")
        self._handle.write(data)

    def __enter__(self) -> _AppendOnDemand:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            self._handle.close()


def _validate_into(source: BinaryIO, endpoint: str, destination: Path) -> tuple[rules.Refusal | None, int]:
    """Streams `source` through the API's rules (rules.py), copying the accepted lines to `destination`.
    Returns the first refusal (ZeroGPU stops there) or None, and the number of lines."""
    with destination.open("wb") as copy:
        return rules.check_file(source, endpoint, size=os.fstat(source.fileno()).st_size, copy=copy)


def _create_error(message: str, line: int | None = None) -> ApiError:
    return ApiError(400, message, code=errors.INVALID_REQUEST, line=line)


def _encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(items) > limit,
    }
