"""ZeroGPUClient calls: URLs, headers, files, batches, paging, downloads, cancel, lookups and adoption."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import httpx
import pytest
from zerogpu_fakes import API_KEY, BASE, PROJECT_ID, Harness, Script, batch_json, err, file_json, reply

from batchdrop.integrations.zerogpu import (
    AmbiguousRequestError,
    Batch,
    BatchStatus,
    NotFoundError,
    PartialDownloadError,
    UnexpectedResponseError,
    ZeroGPUClient,
    resolve_base_url,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("prod", "https://api.zerogpu.ai"),
        ("staging", "https://staging.api.zerogpu.ai"),
        ("dev", "https://dev.api.zerogpu.ai"),
        ("PROD", "https://api.zerogpu.ai"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://localhost:8080/v1", "http://localhost:8080"),
        ("https://api.zerogpu.ai/v1/", "https://api.zerogpu.ai"),
        ("https://gw.example/zgpu/v1", "https://gw.example/zgpu"),
    ],
)
def test_base_url_names_and_normalisation(given: str, expected: str) -> None:
    assert resolve_base_url(given) == expected


def test_base_url_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        resolve_base_url("production")


@pytest.mark.parametrize("base", ["http://h", "http://h/", "http://h/v1", "http://h/v1/"])
def test_paths_are_v1_whatever_the_base_url(base: str) -> None:
    script = Script([reply(200, batch_json())])
    ZeroGPUClient("k", base_url=base, transport=httpx.MockTransport(script)).retrieve_batch("batch_1")
    assert str(script.requests[0].url) == "http://h/v1/batches/batch_1"


def test_prod_is_the_default_host() -> None:
    script = Script([reply(200, batch_json())])
    ZeroGPUClient("k", transport=httpx.MockTransport(script)).retrieve_batch("batch_1")
    assert str(script.requests[0].url) == "https://api.zerogpu.ai/v1/batches/batch_1"


def test_auth_headers_are_sent(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    harness.client(script).retrieve_batch("b")
    headers = script.requests[0].headers
    assert headers["x-api-key"] == API_KEY
    assert headers["x-project-id"] == PROJECT_ID
    assert "authorization" not in headers
    assert headers["user-agent"].startswith("batchdrop/")


def test_project_header_is_left_out_when_not_configured() -> None:
    script = Script([reply(200, batch_json())])
    ZeroGPUClient("k", base_url=BASE, transport=httpx.MockTransport(script)).retrieve_batch("b")
    assert "x-project-id" not in script.requests[0].headers


def test_ids_are_escaped_in_paths(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    harness.client(script).retrieve_batch("../files/x")
    assert script.requests[0].url.raw_path == b"/v1/batches/..%2Ffiles%2Fx"


def test_repr_never_shows_secrets(harness: Harness) -> None:
    client = harness.client(Script([reply(200)]))
    assert API_KEY not in repr(client)
    assert PROJECT_ID not in repr(client)
    assert API_KEY not in str(client)


def test_empty_api_key_is_refused() -> None:
    with pytest.raises(ValueError):
        ZeroGPUClient("")


def test_context_manager_closes_the_pool() -> None:
    with ZeroGPUClient("k", transport=httpx.MockTransport(Script([reply(200)]))) as client:
        pass
    assert client._http.is_closed


def test_errors_never_carry_the_key(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body_marker = "SENTINEL-PROMPT-TEXT"
    script = Script([httpx.ReadTimeout("t"), err(503), httpx.ConnectError("x"), err(401)])
    client = harness.client(script)
    with pytest.raises(Exception) as info:
        client.create_batch("file-1", metadata={"job_id": body_marker})
    with pytest.raises(Exception) as info2:
        client.upload_file(io.BytesIO(body_marker.encode()), "in.jsonl")
    for exc in (info.value, info2.value, getattr(info.value, "cause", None)):
        for secret in (API_KEY, PROJECT_ID):
            assert secret not in repr(exc)
            assert secret not in str(exc)
    for secret in (API_KEY, PROJECT_ID, body_marker):
        assert secret not in caplog.text


# -- files -----------------------------------------------------------------------------------------


class ChunkRecordingFile(io.BytesIO):
    """A file that remembers how much each read() asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.read_sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.read_sizes.append(size)
        return super().read(size)


def test_upload_is_multipart_and_streamed_in_chunks(harness: Harness) -> None:
    payload = b'{"custom_id":"x","method":"POST"}\n' * 20_000  # ~700 KB
    fileobj = ChunkRecordingFile(payload)
    script = Script([reply(200, file_json(bytes=len(payload)))])
    uploaded = harness.client(script).upload_file(fileobj, "job-1.jsonl")
    request = script.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/v1/files"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="purpose"\r\n\r\nbatch' in request.content
    assert b'filename="job-1.jsonl"' in request.content
    assert payload in request.content
    assert uploaded.bytes == len(payload)
    assert all(size is not None and 0 < size <= 1024 * 1024 for size in fileobj.read_sizes)
    assert len(fileobj.read_sizes) > 2


def test_retrieve_and_delete_file(harness: Harness) -> None:
    script = Script([reply(200, file_json("file-9")), reply(200, {"id": "file-9", "object": "file", "deleted": True})])
    client = harness.client(script)
    assert client.retrieve_file("file-9").id == "file-9"
    assert client.delete_file("file-9").deleted
    assert [r.method for r in script.requests] == ["GET", "DELETE"]


def test_delete_whose_reply_was_lost_counts_as_deleted(harness: Harness) -> None:
    script = Script([httpx.ReadTimeout("lost"), err(404)])
    deleted = harness.client(script).delete_file("file-9")
    assert deleted.deleted and deleted.id == "file-9"


def test_delete_of_an_unknown_file_raises_not_found(harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        harness.client(Script([err(404)])).delete_file("file-9")


def _pages(items: list[dict[str, Any]], page: int):
    """A handler that serves ``items`` in pages of ``page`` with an ``after`` cursor."""

    def handle(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        start = 0 if after is None else [i["id"] for i in items].index(after) + 1
        chunk = items[start : start + page]
        return reply(
            200,
            {
                "object": "list",
                "data": chunk,
                "first_id": chunk[0]["id"] if chunk else None,
                "last_id": chunk[-1]["id"] if chunk else None,
                "has_more": start + page < len(items),
            },
        )

    return handle


def test_list_files_pages_with_after_and_keeps_filters(harness: Harness) -> None:
    files = [file_json(f"file-{i:03d}") for i in range(25)]
    script = Script([_pages(files, 10)])
    listed = list(harness.client(script).list_files(purpose="batch", order="asc", page_size=10))
    assert [f.id for f in listed] == [f["id"] for f in files]
    assert script.calls == 3
    params = [dict(r.url.params) for r in script.requests]
    assert params[0] == {"purpose": "batch", "order": "asc", "limit": "10"}
    assert params[2] == {"purpose": "batch", "order": "asc", "limit": "10", "after": "file-019"}


def test_list_batches_pages_lazily(harness: Harness) -> None:
    batches = [batch_json(f"batch_{i:03d}") for i in range(250)]
    script = Script([_pages(batches, 100)])
    iterator = harness.client(script).list_batches(page_size=100)
    assert next(iterator).id == "batch_000"
    assert script.calls == 1
    assert len([b.id for b in iterator]) == 249
    assert script.calls == 3


def test_list_that_does_not_advance_is_an_error(harness: Harness) -> None:
    page = {"object": "list", "data": [batch_json("b1")], "last_id": "b1", "has_more": True}
    with pytest.raises(UnexpectedResponseError):
        list(harness.client(Script([reply(200, page)])).list_batches())


def test_list_with_has_more_but_no_items_or_cursor_is_an_error(harness: Harness) -> None:
    page = {"object": "list", "data": [], "has_more": True}
    with pytest.raises(UnexpectedResponseError):
        list(harness.client(Script([reply(200, page)])).list_batches())


# -- downloads -------------------------------------------------------------------------------------


class BreakingStream(httpx.SyncByteStream):
    """Yields some chunks and then fails like a dropped connection."""

    def __init__(self, chunks: list[bytes], fail: bool) -> None:
        self.chunks = chunks
        self.fail = fail

    def __iter__(self):
        yield from self.chunks
        if self.fail:
            raise httpx.ReadError("connection reset mid-body")


def _download_script(content: bytes, failures: int) -> Script:
    chunks = [content[i : i + 7] for i in range(0, len(content), 7)]

    def handle(request: httpx.Request) -> httpx.Response:
        broken = len(script.requests) <= failures
        served = chunks[: len(chunks) // 2] if broken else chunks
        return httpx.Response(200, stream=BreakingStream(served, broken))

    script = Script([handle])
    return script


def test_download_streams_into_target(harness: Harness) -> None:
    content = b'{"custom_id":"a"}\n{"custom_id":"b"}\n'
    script = _download_script(content, failures=0)
    target = io.BytesIO()
    assert harness.client(script).download_file_content("file-out", target) == len(content)
    assert target.getvalue() == content
    assert script.requests[0].url.path == "/v1/files/file-out/content"


def test_download_retry_rewinds_and_truncates_a_seekable_target(harness: Harness) -> None:
    content = b"".join(b'{"custom_id":"%d"}\n' % i for i in range(50))
    script = _download_script(content, failures=2)
    target = io.BytesIO()
    target.write(b"HEADER:")
    written = harness.client(script).download_file_content("file-out", target)
    assert written == len(content)
    assert target.getvalue() == b"HEADER:" + content
    assert script.calls == 3


class NoSeek(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def test_download_retry_after_partial_write_to_unseekable_target_raises(harness: Harness) -> None:
    content = b"x" * 100
    script = _download_script(content, failures=1)
    with pytest.raises(PartialDownloadError):
        harness.client(script).download_file_content("file-out", NoSeek())
    assert script.calls == 1


def test_download_retry_before_any_byte_to_unseekable_target_is_fine(harness: Harness) -> None:
    content = b"y" * 30
    script = Script([err(503), lambda r: httpx.Response(200, content=content)])
    target = NoSeek()
    assert harness.client(script).download_file_content("file-out", target) == 30
    assert bytes(target.data) == content


def test_download_stops_mid_stream_when_out_of_time(harness: Harness) -> None:
    from batchdrop.integrations.zerogpu import DeadlineExceededError

    times = iter([5.0, -1.0])
    script = _download_script(b"z" * 100, failures=0)
    client = harness.client(script, remaining_time=lambda: next(times, -1.0))
    with pytest.raises(DeadlineExceededError):
        client.download_file_content("file-out", io.BytesIO())


# -- batches ---------------------------------------------------------------------------------------


def test_create_batch_sends_the_documented_body(harness: Harness) -> None:
    script = Script([reply(200, batch_json(metadata={"job_id": "j1"}))])
    batch = harness.client(script).create_batch("file-1", metadata={"job_id": "j1"})
    request = script.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/batches")
    assert json.loads(request.content) == {
        "input_file_id": "file-1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"job_id": "j1"},
    }
    assert batch.metadata == {"job_id": "j1"}
    assert batch.status is BatchStatus.IN_PROGRESS


def test_create_batch_without_metadata_omits_it(harness: Harness) -> None:
    script = Script([reply(200, batch_json())])
    harness.client(script).create_batch("file-1")
    assert "metadata" not in json.loads(script.requests[0].content)


def test_create_batch_validation_error_exposes_line(harness: Harness) -> None:
    body = {
        "error": {
            "message": 'Line 5 duplicates custom_id "req-1"',
            "type": "invalid_request_error",
            "code": "invalid_request_error",
            "param": None,
            "line": 5,
        }
    }
    from batchdrop.integrations.zerogpu import BadRequestError

    with pytest.raises(BadRequestError) as info:
        harness.client(Script([reply(400, body)])).create_batch("file-1")
    assert info.value.line == 5
    assert info.value.message == 'Line 5 duplicates custom_id "req-1"'


def test_cancel_returns_the_cancelling_batch(harness: Harness) -> None:
    script = Script([reply(200, batch_json(status="cancelling", cancelling_at=1))])
    batch = harness.client(script).cancel_batch("batch_1")
    assert batch.status == BatchStatus.CANCELLING
    assert script.requests[0].url.path == "/v1/batches/batch_1/cancel"


def test_cancel_of_a_terminal_batch_returns_it_via_retrieve(harness: Harness) -> None:
    script = Script([err(409), reply(200, batch_json(status="completed", completed_at=5))])
    batch = harness.client(script).cancel_batch("batch_1")
    assert batch.status == BatchStatus.COMPLETED
    assert batch.is_terminal
    assert [(r.method, r.url.path) for r in script.requests] == [
        ("POST", "/v1/batches/batch_1/cancel"),
        ("GET", "/v1/batches/batch_1"),
    ]
    assert harness.sleeps == []


def test_cancel_of_unknown_batch_raises_not_found(harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        harness.client(Script([err(404)])).cancel_batch("batch_x")


# -- lookups and adoption --------------------------------------------------------------------------


def _batches_newest_first() -> list[dict[str, Any]]:
    return [
        batch_json("batch_c", created_at=300, metadata={"job_id": "j3", "env": "prod"}),
        batch_json("batch_b", created_at=200, metadata={"job_id": "j2"}),
        batch_json("batch_a", created_at=100, metadata=None),
    ]


def test_find_batch_matches_every_given_key(harness: Harness) -> None:
    client = harness.client(Script([_pages(_batches_newest_first(), 1)]))
    assert client.find_batch({"job_id": "j2"}).id == "batch_b"
    assert client.find_batch({"job_id": "j3", "env": "prod"}).id == "batch_c"
    assert client.find_batch({"job_id": "j3", "env": "dev"}) is None


def test_find_batch_stops_at_created_after(harness: Harness) -> None:
    script = Script([_pages(_batches_newest_first(), 1)])
    assert harness.client(script).find_batch({"job_id": "j1"}, created_after=200) is None
    assert script.calls == 3  # it saw batch_a (created 100 < 200) on page 3 and stopped there
    script2 = Script([_pages(_batches_newest_first(), 1)])
    assert harness.client(script2).find_batch({"job_id": "j3"}, created_after=250).id == "batch_c"
    assert script2.calls == 1


def test_find_batch_needs_metadata(harness: Harness) -> None:
    with pytest.raises(ValueError):
        harness.client(Script([reply(200)])).find_batch({})


def test_find_file_by_name_and_size(harness: Harness) -> None:
    files = [
        file_json("file-3", filename="job-2.jsonl", bytes=99, created_at=300),
        file_json("file-2", filename="job-1.jsonl", bytes=50, created_at=200),
        file_json("file-1", filename="job-1.jsonl", bytes=40, created_at=100),
    ]
    script = Script([_pages(files, 2)])
    client = harness.client(script)
    assert client.find_file("job-1.jsonl").id == "file-2"
    assert client.find_file("job-1.jsonl", 40).id == "file-1"
    assert client.find_file("job-1.jsonl", 40, created_after=150) is None
    assert client.find_file("nope.jsonl") is None
    assert dict(script.requests[0].url.params) == {"purpose": "batch", "order": "desc", "limit": "1000"}


class FakeBatchServer:
    """Just enough of POST/GET /v1/batches to test adoption: the first ``lose`` creates lose their reply."""

    def __init__(self, lose: int, apply: bool = True) -> None:
        self.lose = lose
        self.apply = apply
        self.batches: list[dict[str, Any]] = []
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
            body = json.loads(request.content)
            batch = batch_json(f"batch_{self.posts}", metadata=body.get("metadata"))
            if self.apply or self.posts > self.lose:
                self.batches.insert(0, batch)
            if self.posts <= self.lose:
                raise httpx.ReadTimeout("reply lost")
            return reply(200, batch)
        return reply(200, {"object": "list", "data": self.batches, "has_more": False})


def test_create_batch_or_adopt_creates_once_when_all_is_well(harness: Harness) -> None:
    server = FakeBatchServer(lose=0)
    batch = harness.client(Script([server])).create_batch_or_adopt("file-1", {"job_id": "j1"})
    assert batch.id == "batch_1"
    assert server.posts == 1


def test_create_batch_or_adopt_adopts_after_a_lost_reply(harness: Harness) -> None:
    server = FakeBatchServer(lose=1)
    batch = harness.client(Script([server])).create_batch_or_adopt("file-1", {"job_id": "j1"})
    assert batch.id == "batch_1"
    assert batch.metadata == {"job_id": "j1"}
    assert server.posts == 1
    assert len(server.batches) == 1


def test_create_batch_or_adopt_recreates_only_when_nothing_was_created(harness: Harness) -> None:
    server = FakeBatchServer(lose=1, apply=False)
    batch = harness.client(Script([server])).create_batch_or_adopt("file-1", {"job_id": "j1"})
    assert server.posts == 2
    assert [b["id"] for b in server.batches] == [batch.id]


def test_create_batch_or_adopt_is_bounded(harness: Harness) -> None:
    server = FakeBatchServer(lose=99, apply=False)
    with pytest.raises(AmbiguousRequestError):
        harness.client(Script([server])).create_batch_or_adopt("file-1", {"job_id": "j1"}, max_creates=2)
    assert server.posts == 2


def test_create_batch_or_adopt_does_not_adopt_another_jobs_batch(harness: Harness) -> None:
    server = FakeBatchServer(lose=1, apply=False)
    server.batches.append(batch_json("batch_other", metadata={"job_id": "j0"}))
    batch = harness.client(Script([server])).create_batch_or_adopt("file-1", {"job_id": "j1"})
    assert batch.id == "batch_2"


class FakeFileServer:
    def __init__(self, lose: int, apply: bool = True) -> None:
        self.lose = lose
        self.apply = apply
        self.files: list[dict[str, Any]] = []
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
            # The multipart body holds the file between the part headers and the closing boundary.
            part = request.content.split(b"\r\n\r\n", 2)[2]
            size = len(part.rsplit(b"\r\n--", 1)[0])
            record = file_json(f"file-{self.posts}", filename="job-1.jsonl", bytes=size)
            if self.apply or self.posts > self.lose:
                self.files.insert(0, record)
            if self.posts <= self.lose:
                raise httpx.RemoteProtocolError("server disconnected")
            return reply(200, record)
        return reply(200, {"object": "list", "data": self.files, "has_more": False})


def test_upload_file_or_adopt_adopts_by_name_and_size(harness: Harness, tmp_path) -> None:
    path = tmp_path / "input.jsonl"
    path.write_bytes(b'{"custom_id":"1"}\n' * 10)
    server = FakeFileServer(lose=1)
    uploaded = harness.client(Script([server])).upload_file_or_adopt(path, "job-1.jsonl")
    assert uploaded.id == "file-1"
    assert uploaded.bytes == path.stat().st_size
    assert server.posts == 1


def test_upload_file_or_adopt_reuploads_when_nothing_was_stored(harness: Harness) -> None:
    server = FakeFileServer(lose=1, apply=False)
    uploaded = harness.client(Script([server])).upload_file_or_adopt(io.BytesIO(b"abc\n"), "job-1.jsonl")
    assert uploaded.id == "file-2"
    assert server.posts == 2
    assert len(server.files) == 1


def test_upload_file_or_adopt_never_reuploads_an_unseekable_stream(harness: Harness) -> None:
    class Pipe(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            return 0

    server = FakeFileServer(lose=1, apply=False)
    with pytest.raises(AmbiguousRequestError):
        harness.client(Script([server])).upload_file_or_adopt(Pipe(), "job-1.jsonl")
    assert server.posts == 1


def test_batch_model_from_list_keeps_unknown_status(harness: Harness) -> None:
    page = {"object": "list", "data": [batch_json(status="paused")], "has_more": False}
    (batch,) = list(harness.client(Script([reply(200, page)])).list_batches())
    assert isinstance(batch, Batch)
    assert batch.status == "paused"
    assert not batch.is_terminal


def test_client_leaves_httpx_logging_alone(harness: Harness) -> None:
    before = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    harness.client(Script([reply(200, batch_json())])).retrieve_batch("b")
    assert {name: logging.getLogger(name).level for name in ("httpx", "httpcore")} == before
    assert before["httpx"] != logging.DEBUG


def test_list_item_without_id_is_an_unexpected_response(harness: Harness) -> None:
    page = {"object": "list", "data": [{"status": "completed", "secret": "SENTINEL"}], "has_more": False}
    with pytest.raises(UnexpectedResponseError) as info:
        list(harness.client(Script([reply(200, page)])).list_batches())
    assert "SENTINEL" not in str(info.value)


def test_unusable_2xx_on_a_get_is_not_retried(harness: Harness) -> None:
    script = Script([reply(200, {"no": "id"})])
    with pytest.raises(UnexpectedResponseError):
        harness.client(script).retrieve_batch("b")
    assert script.calls == 1
