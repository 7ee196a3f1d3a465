"""Files API: upload, file object, list filters and paging, soft delete, content download."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from emulator_testkit import START, Api, chat_line, jsonl

FILE_ID = re.compile(r"^file-[0-9a-z]{24}$")
THIRTY_DAYS = 30 * 86400


def test_upload_returns_a_processed_file_object(api: Api) -> None:
    content = jsonl([chat_line("q-1", "Hi?")])
    file = api.upload(content, filename="input.jsonl")
    assert FILE_ID.match(file["id"])
    assert file == {
        "id": file["id"],
        "object": "file",
        "bytes": len(content),
        "created_at": int(START),
        "filename": "input.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": int(START) + THIRTY_DAYS,
    }
    assert api.client.get(f"/v1/files/{file['id']}").json() == file


def test_jsonl_is_not_validated_at_upload(api: Api) -> None:
    assert api.upload(b"this is not json\n")["bytes"] == 17


def test_upload_without_a_filename_is_named_after_its_id(api: Api) -> None:
    file = api.upload(b'{"a": 1}\n', filename="")
    assert file["filename"] == f"{file['id']}.jsonl"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"json": {"purpose": "batch"}}, "invalid_content_type"),
        (
            {"content": b"purpose=batch", "headers": {"content-type": "multipart/form-data"}},
            "invalid_multipart",
        ),
        ({"files": {"file": ("a.jsonl", b"{}\n")}, "data": {"purpose": "fine-tune"}}, "invalid_purpose"),
        ({"files": {"file": ("a.jsonl", b"{}\n")}}, "invalid_purpose"),
        ({"files": {"other": ("a.jsonl", b"{}\n")}, "data": {"purpose": "batch"}}, "missing_file"),
        ({"files": {"file": ("a.jsonl", b"")}, "data": {"purpose": "batch"}}, "empty_file"),
    ],
)
def test_upload_rejections(api: Api, kwargs: dict[str, object], code: str) -> None:
    reply = api.client.post("/v1/files", **kwargs)  # type: ignore[arg-type]
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert api.emu.file_ids() == []


def test_upload_over_the_cap_is_413_while_streaming(make_api: Callable[..., Api]) -> None:
    api = make_api(max_upload_bytes=1000)
    assert api.client.post("/v1/files", files={"file": ("a.jsonl", b"x" * 1000)}, data={"purpose": "batch"}).is_success
    reply = api.client.post("/v1/files", files={"file": ("a.jsonl", b"x" * 1001)}, data={"purpose": "batch"})
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "file_too_large"
    assert len(api.emu.file_ids()) == 1
    assert list((api.emu.storage.root / "incoming").iterdir()) == []


def test_upload_over_the_cap_is_413_from_content_length_alone(api: Api) -> None:
    body = b"--b\r\n"  # never parsed: the declared length already says too much
    reply = api.client.post(
        "/v1/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b", "content-length": str(200 * 1024 * 1024)},
    )
    assert reply.status_code == 413
    assert reply.json()["error"] == {
        "message": "File exceeds maximum size of 104857600 bytes",
        "type": "invalid_request_error",
        "code": "file_too_large",
        "param": "file",
    }


def test_retrieve_unknown_file_is_404_file_not_found(api: Api) -> None:
    reply = api.client.get("/v1/files/file-xxx")
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == "File file-xxx not found"
    assert reply.json()["error"]["code"] == "file_not_found"


def test_content_is_streamed_with_jsonl_headers(api: Api) -> None:
    content = jsonl([chat_line("q-1", "Hi?")]) * 1
    file = api.upload(content, filename="my input.jsonl")
    with api.client.stream("GET", f"/v1/files/{file['id']}/content") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/jsonl"
        assert reply.headers["content-disposition"] == 'attachment; filename="my input.jsonl"'
        assert reply.headers["content-length"] == str(len(content))
        assert reply.read() == content


def test_soft_delete_hides_the_file_everywhere(api: Api) -> None:
    file = api.upload(b'{"a": 1}\n')
    reply = api.client.delete(f"/v1/files/{file['id']}")
    assert reply.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert api.client.get(f"/v1/files/{file['id']}").status_code == 404
    assert api.client.get(f"/v1/files/{file['id']}/content").status_code == 404
    assert api.client.delete(f"/v1/files/{file['id']}").status_code == 404
    assert api.client.get("/v1/files").json()["data"] == []


def test_deleting_the_input_does_not_affect_a_running_batch(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1)
    batch = api.create_ok(api.questions(3))
    assert api.client.delete(f"/v1/files/{batch['input_file_id']}").status_code == 200
    api.emu.advance(10)
    done = api.batch(batch["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert len(api.content(done["output_file_id"])) == 3


def test_create_from_a_deleted_file_is_404(api: Api) -> None:
    file = api.upload(api_jsonl(api))
    api.client.delete(f"/v1/files/{file['id']}")
    reply = api.client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions"})
    assert reply.status_code == 404
    assert reply.json()["error"]["message"] == f"Input file not found: {file['id']}"


def test_list_files_newest_first_with_purpose_order_after_limit(api: Api) -> None:
    uploads = []
    for _ in range(3):
        uploads.append(api.upload(api_jsonl(api))["id"])
        api.emu.advance(1)
    batch = api.create_ok(api.questions(2))
    uploads.append(batch["input_file_id"])
    api.emu.advance(1)
    output_id = api.batch(batch["id"])["output_file_id"]

    every = api.client.get("/v1/files").json()
    assert [f["id"] for f in every["data"]] == [output_id, *reversed(uploads)]
    assert every["has_more"] is False
    assert every["first_id"] == output_id
    assert every["last_id"] == uploads[0]

    batch_only = api.client.get("/v1/files", params={"purpose": "batch"}).json()
    assert [f["id"] for f in batch_only["data"]] == list(reversed(uploads))
    outputs = api.client.get("/v1/files", params={"purpose": "batch_output"}).json()
    assert [f["id"] for f in outputs["data"]] == [output_id]

    ascending = api.client.get("/v1/files", params={"order": "asc", "purpose": "batch", "limit": 2}).json()
    assert [f["id"] for f in ascending["data"]] == uploads[:2]
    assert ascending["has_more"] is True
    rest = api.client.get(
        "/v1/files", params={"order": "asc", "purpose": "batch", "after": ascending["last_id"]}
    ).json()
    assert [f["id"] for f in rest["data"]] == uploads[2:]
    assert rest["has_more"] is False

    page = api.client.get("/v1/files", params={"limit": 1, "after": output_id}).json()
    assert [f["id"] for f in page["data"]] == [uploads[-1]]
    assert page["has_more"] is True


@pytest.mark.parametrize("limit", ["0", "10001", "-1", "ten"])
def test_list_files_rejects_a_bad_limit(api: Api, limit: str) -> None:
    reply = api.client.get("/v1/files", params={"limit": limit})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_limit"


def test_list_files_empty(api: Api) -> None:
    assert api.client.get("/v1/files").json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


def test_output_and_error_file_objects(make_api: Callable[..., Api]) -> None:
    api = make_api()
    api.emu.faults.line_errors("internal_error", custom_ids={"q-2"})
    batch = api.create_ok(api.questions(3))
    api.emu.advance(1)
    done = api.batch(batch["id"])
    output = api.client.get(f"/v1/files/{done['output_file_id']}").json()
    errors = api.client.get(f"/v1/files/{done['error_file_id']}").json()
    assert output["purpose"] == errors["purpose"] == "batch_output"
    assert "is_error" not in output
    assert errors["is_error"] is True
    assert errors["filename"] == f"{batch['id']}_errors.jsonl"
    with api.client.stream("GET", f"/v1/files/{errors['id']}/content") as reply:
        assert reply.headers["content-disposition"] == f'attachment; filename="{batch["id"]}_errors.jsonl"'
        assert int(reply.headers["content-length"]) == errors["bytes"]


def test_client_can_also_send_transfer_chunks(api: Api) -> None:
    def chunks() -> object:
        yield b"--b\r\n"
        yield b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--b\r\n'
        yield b'Content-Disposition: form-data; name="file"; filename="x.jsonl"\r\n\r\n{"a":1}\n\r\n--b--\r\n'

    body = b"".join(chunks())  # type: ignore[arg-type]
    reply = api.client.post("/v1/files", content=body, headers={"content-type": "multipart/form-data; boundary=b"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["filename"] == "x.jsonl"
    assert reply.json()["bytes"] == len(b'{"a":1}\n')


def api_jsonl(api: Api) -> bytes:
    return jsonl(api.questions(1))


_ = httpx
