"""Receiving `POST /v1/files`: multipart parsed by werkzeug, file parts streamed straight to disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import FormDataParser
from werkzeug.http import parse_options_header
from werkzeug.sansio.utils import get_content_length
from werkzeug.wsgi import get_input_stream

from batchdrop_tools.emulator.errors import ApiError
from batchdrop_tools.emulator.store import StorageDir

# Room for the multipart framing and the `purpose` field around a file of exactly the cap.
_MULTIPART_OVERHEAD = 64 * 1024
# A `file` part sent without a filename arrives as a plain field, held in memory up to this size.
_MAX_FIELD_BYTES = 1024 * 1024
_MAX_PARTS = 16


@dataclass(frozen=True)
class Upload:
    """A received upload: its purpose and, when a file part came, where its bytes are on disk."""

    purpose: str | None
    path: Path | None
    filename: str | None
    size: int


class _UploadTooLarge(Exception):
    pass


class _DiskSink:
    """The file object werkzeug writes a file part into: counts bytes and stops past the cap."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.size = 0
        self._limit = limit
        self._file = path.open("w+b")

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._limit:
            raise _UploadTooLarge
        return self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed


def receive_upload(environ: dict[str, Any], storage: StorageDir, max_bytes: int) -> Upload:
    """Parse the multipart body, raising the Files API's 400s and 413; the caller adopts `path`."""
    mimetype, options = parse_options_header(environ.get("CONTENT_TYPE"))
    if mimetype != "multipart/form-data":
        raise ApiError(400, "Content-Type must be multipart/form-data", code="invalid_content_type")
    if not options.get("boundary"):
        raise ApiError(400, "Malformed multipart body: missing boundary", code="invalid_multipart")
    content_length = get_content_length(
        http_content_length=environ.get("CONTENT_LENGTH"),
        http_transfer_encoding=environ.get("HTTP_TRANSFER_ENCODING"),
    )
    if content_length is not None and content_length > max_bytes + _MULTIPART_OVERHEAD:
        raise _too_large(max_bytes)

    sinks: list[_DiskSink] = []

    def open_sink(**_: Any) -> _DiskSink:
        sink = _DiskSink(storage.incoming_file(), max_bytes)
        sinks.append(sink)
        return sink

    parser = FormDataParser(
        stream_factory=open_sink,  # type: ignore[arg-type]
        max_form_memory_size=_MAX_FIELD_BYTES,
        max_form_parts=_MAX_PARTS,
        silent=False,
    )
    keep: _DiskSink | None = None
    try:
        stream = get_input_stream(environ, max_content_length=None)
        _, form, files = parser.parse(stream, mimetype, content_length, options)
        purpose = form.get("purpose")
        if purpose != "batch":
            raise ApiError(
                400,
                f'Invalid purpose {purpose!r}: only "batch" is accepted',
                code="invalid_purpose",
                param="purpose",
            )
        part: FileStorage | None = files.get("file")
        if part is None and "file" in form:
            sink = open_sink()
            sink.write(form["file"].encode())
            part = FileStorage(sink, filename=None, name="file")  # type: ignore[arg-type]
        if part is None:
            raise ApiError(400, "file is required", code="missing_file", param="file")
        keep = next(sink for sink in sinks if sink is part.stream)  # type: ignore[comparison-overlap]
        keep.close()
        if keep.size == 0:
            raise ApiError(400, "File is empty", code="empty_file", param="file")
        return Upload(purpose, keep.path, _basename(part.filename), keep.size)
    except (_UploadTooLarge, RequestEntityTooLarge):
        raise _too_large(max_bytes) from None
    except ValueError as error:
        raise ApiError(400, f"Malformed multipart body: {error}", code="invalid_multipart") from None
    finally:
        for sink in sinks:
            sink.close()
            if sink is not keep or keep.size == 0:
                sink.path.unlink(missing_ok=True)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"File exceeds maximum size of {max_bytes} bytes", code="file_too_large", param="file")


def _basename(filename: str | None) -> str | None:
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return name or None
