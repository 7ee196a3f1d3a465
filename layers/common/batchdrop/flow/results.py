"""A terminal shard's results: the API's output and error files sorted into two files under the work
prefix, so that every input line of the shard ends in exactly one of them.

The shard's own custom_ids are read first (at most one batch's worth); lines the API reported twice are
kept once, lines naming an id the shard does not have are dropped, and ids the API never reported (a
batch that failed or could not be created, a cancelled job, an anomaly) get an error line of ours.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import IO, Any

import orjson
from botocore.exceptions import ClientError

from batchdrop.integrations import s3io
from batchdrop.integrations.shard_copies import ShardSourceMissing, local_shard_copy
from batchdrop.integrations.zerogpu import BatchStatus, ZeroGPUError, parse_result_line
from batchdrop.models import FailureCode, Job, Shard, ShardResult, TokenUsage, add_count
from batchdrop.observability import Metric, count, logger
from batchdrop.services import Services
from batchdrop.validation import iter_physical_lines


class ResultsUnavailable(Exception):
    """A result file of the batch could not be downloaded (the API failed or answered 404)."""

    def __init__(self, file_id: str, cause: ZeroGPUError) -> None:
        super().__init__(f"result file {file_id}: {type(cause).__name__}: {cause}")
        self.cause = cause


UNREPORTED_MESSAGES: dict[str, str] = {
    FailureCode.RESULTS_UNAVAILABLE: (
        "The API did not hand over this batch's results ({detail}); the line's outcome is unknown."
    ),
    FailureCode.BATCH_NOT_FOUND: "{detail}",
    FailureCode.BATCH_TIMED_OUT: "{detail}",
    FailureCode.WAIT_TIMED_OUT: "The line was never submitted: {detail}",
    FailureCode.BATCH_CREATE_FAILED: "The batch for this line could not be created: {detail}",
    FailureCode.BATCH_FAILED: "The batch for this line failed before the line ran: {detail}",
    FailureCode.MISSING_RESULT: "The API reported no result for this line (batch status {detail}).",
    FailureCode.BATCH_CANCELLED: "The job was cancelled before this line ran.",
    FailureCode.INPUT_MISSING: "{detail}",
}


def export_results(shard: Shard, job: Job, services: Services, *, skip_unavailable: bool = False) -> ShardResult:
    """Raises ResultsUnavailable when a result file cannot be downloaded, unless `skip_unavailable`:
    then the lines it would have reported end as `results_unavailable` errors."""
    bucket = job.input.bucket
    base = f"{services.settings.work_prefix}{shard.job_id}/results/{shard.index:05d}"
    result = ShardResult(output_key=f"{base}.output.jsonl", errors_key=f"{base}.errors.jsonl")
    with tempfile.TemporaryDirectory(dir=services.workdir) as directory:
        try:
            unreported = shard_custom_ids(shard, job, directory, services)
        except ShardSourceMissing as error:
            # Neither the work copy nor the input exists any more: the lines cannot be named, only counted.
            logger.error("shard lines lost with their input", extra={"shard": shard.index, "reason": str(error)})
            result.failed = shard.lines
            result.errors_by_code = {FailureCode.INPUT_MISSING: shard.lines}
            for key in (result.output_key, result.errors_key):
                services.s3.put_object(Bucket=bucket, Key=key, Body=b"")
            return result
        output_path, errors_path = os.path.join(directory, "output.jsonl"), os.path.join(directory, "errors.jsonl")
        with open(output_path, "wb") as output, open(errors_path, "wb") as errors:
            unavailable: list[str] = []
            for file_id in (shard.output_file_id, shard.error_file_id):
                if not file_id:
                    continue
                try:
                    _sort_api_file(file_id, output, errors, unreported, result, services)
                except ZeroGPUError as error:
                    if not skip_unavailable:
                        raise ResultsUnavailable(file_id, error) from None
                    unavailable.append(f"{file_id}: {type(error).__name__}")
            code: str
            if unavailable:
                code, detail = FailureCode.RESULTS_UNAVAILABLE, "; ".join(unavailable)
            else:
                code, detail = _unreported_reason(shard)
            for custom_id in unreported:
                errors.write(json.dumps(_error_line(custom_id, code, detail)).encode() + b"\n")
                _count_failure(result, code)
        s3io.upload_file(services.s3, output_path, bucket, result.output_key)
        s3io.upload_file(services.s3, errors_path, bucket, result.errors_key)
    logger.info("shard collected", extra={"shard": shard.index, "succeeded": result.succeeded, "failed": result.failed})
    return result


def shard_custom_ids(shard: Shard, job: Job, directory: str, services: Services) -> dict[str, None]:
    """The shard's custom_ids in input order (a dict as an ordered set): from the list the split wrote
    beside the shard (a few bytes a line), or, if there is none (any more), from the shard's lines."""
    if shard.ids_key is not None:
        path = os.path.join(directory, "custom_ids")
        try:
            s3io.download_file(services.s3, job.input.bucket, shard.ids_key, path)
        except ClientError as error:
            if not s3io.is_missing(error):
                raise
        else:
            with open(path, "rb") as ids:
                listed = {orjson.loads(line): None for line in ids}
            if len(listed) == shard.lines:
                return listed
            logger.warning("the shard's custom_id list is incomplete; reading its lines", extra={"shard": shard.index})
    with open(local_shard_copy(shard, job, directory, services.s3), "rb") as lines:
        return {orjson.loads(physical.content)["custom_id"]: None for physical in iter_physical_lines(lines)}


MAX_RESULT_LINE_BYTES = 64 * 1024 * 1024


def _sort_api_file(
    file_id: str,
    output: IO[bytes],
    errors: IO[bytes],
    unreported: dict[str, None],
    result: ShardResult,
    services: Services,
) -> None:
    """Streams one result file from the API and routes each line by what it says, not by file, as the
    bytes arrive (no copy of the file on disk)."""
    sorter = _ResultSorter(output, errors, unreported, result)
    services.api.download_file_content(file_id, sorter)  # type: ignore[arg-type]  # the file-like part it uses
    sorter.finish()


class _ResultSorter:
    """The target a result file is downloaded into: its bytes are cut into lines and each line sorted into
    output or errors as it arrives. A download retried after a partial read rewinds its target to where it
    started (tell, then seek and truncate): that undoes everything this file sorted so far."""

    def __init__(self, output: IO[bytes], errors: IO[bytes], unreported: dict[str, None], result: ShardResult):
        self._output, self._errors, self._unreported, self._result = output, errors, unreported, result
        self._pieces: list[bytes] = []  # the line not ended yet
        self._pending_bytes = 0
        self._overflow = False  # the current line passed MAX_RESULT_LINE_BYTES: its bytes are dropped
        self._unexpected = 0
        self._start: tuple[int, int, dict[str, None], ShardResult] | None = None

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        """Marks the start (the only place a retried download rewinds to)."""
        self._start = (
            self._output.tell(),
            self._errors.tell(),
            dict(self._unreported),
            self._result.model_copy(deep=True),  # counts, codes and usage as they were
        )
        return 0

    def seek(self, offset: int, whence: int = 0) -> int:
        assert offset == 0 and whence == 0 and self._start is not None, "rewinds to the start only"
        output_at, errors_at, unreported, before = self._start
        for handle, at in ((self._output, output_at), (self._errors, errors_at)):
            handle.seek(at)
            handle.truncate()
        self._unreported.clear()
        self._unreported.update(unreported)
        self._result.succeeded, self._result.failed = before.succeeded, before.failed
        self._result.errors_by_code = dict(before.errors_by_code)
        self._result.usage = {model: tokens.model_copy() for model, tokens in before.usage.items()}
        self._result.wasted = before.wasted.model_copy() if before.wasted else None
        self._pieces, self._pending_bytes, self._overflow, self._unexpected = [], 0, False, 0
        return 0

    def truncate(self, size: int | None = None) -> int:
        return 0  # seek() has undone it all

    def write(self, chunk: bytes) -> int:
        newline = chunk.find(b"\n")
        if newline < 0:  # the line goes on: its pieces are joined once it ends
            if not self._overflow:
                self._pieces.append(chunk)
                self._pending_bytes += len(chunk)
                if self._pending_bytes > MAX_RESULT_LINE_BYTES:
                    self._pieces, self._pending_bytes, self._overflow = [], 0, True
            return len(chunk)
        if self._overflow:
            self._overflow = False
        elif self._pieces:
            self._line(b"".join(self._pieces) + chunk[:newline])
        else:
            self._line(chunk[:newline])
        self._pieces, self._pending_bytes = [], 0
        start = newline + 1
        find = chunk.find
        while (newline := find(b"\n", start)) >= 0:
            self._line(chunk[start:newline])
            start = newline + 1
        if start < len(chunk):
            self._pieces, self._pending_bytes = [chunk[start:]], len(chunk) - start
        return len(chunk)

    def finish(self) -> None:
        if self._pieces and not self._overflow:
            self._line(b"".join(self._pieces))
        self._pieces, self._pending_bytes = [], 0
        if self._unexpected:
            count(Metric.UNEXPECTED_RESULT_LINES, self._unexpected)  # repeats, or ids this shard never sent

    def _line(self, content: bytes) -> None:
        if content.endswith(b"\r"):
            content = content[:-1]
        if not content.strip():
            return
        line = parse_result_line(content)
        if line.custom_id is None or line.custom_id not in self._unreported:
            self._unexpected += 1
            return
        del self._unreported[line.custom_id]
        usage = line.body.get("usage") if line.body else None
        if line.succeeded:
            self._output.write(content)
            self._output.write(b"\n")
            self._result.succeeded += 1
            if isinstance(usage, dict):
                model = line.body.get("model") if line.body else None
                name = model if isinstance(model, str) and model else "unknown"
                self._result.usage.setdefault(name, TokenUsage()).add_reported(usage)
        else:
            self._errors.write(content)
            self._errors.write(b"\n")
            _count_failure(self._result, line.code or "unknown_error")
            if isinstance(usage, dict):
                if self._result.wasted is None:
                    self._result.wasted = TokenUsage()
                self._result.wasted.add_reported(usage)


def _unreported_reason(shard: Shard) -> tuple[str, str]:
    if shard.failure_code:
        return shard.failure_code, shard.failure_message or ""
    if shard.batch_status == BatchStatus.FAILED:
        return FailureCode.BATCH_FAILED, shard.failure_message or "the API failed the batch"
    return FailureCode.MISSING_RESULT, shard.batch_status or "unknown"


def _error_line(custom_id: str, code: str, detail: str) -> dict[str, Any]:
    message = UNREPORTED_MESSAGES.get(code, "{detail}").format(detail=detail)
    return {
        "id": None,
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message, "param": None},
    }


def _count_failure(result: ShardResult, code: str) -> None:
    result.failed += 1
    add_count(result.errors_by_code, code)
