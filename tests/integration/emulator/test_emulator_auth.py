"""Auth (§1.1, §4.1), x-request-id on every reply, preflight, unknown routes."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from emulator_testkit import AUTH, Api

REQUEST_ID = re.compile(r"^req_[0-9a-f]{24}$")
PROJECT = AUTH["x-project-id"]


def _missing_headers_body() -> dict[str, object]:
    error = {
        "message": "Missing authentication headers",
        "type": "authentication_error",
        "code": None,
        "param": None,
    }
    return {"error": error}


def test_missing_api_key_is_401_with_the_exact_envelope(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={})
    reply = api.client.get("/v1/batches")
    assert reply.status_code == 401
    assert reply.json() == _missing_headers_body()
    assert REQUEST_ID.match(reply.headers["x-request-id"])


def test_bearer_authorization_alone_is_not_enough(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={"Authorization": "Bearer zgpu-test-key"})
    assert api.client.get("/v1/files").status_code == 401


def test_any_key_is_accepted_by_default_and_project_id_is_optional(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={"x-api-key": "anything"})
    assert api.client.get("/v1/batches").status_code == 200
    assert api.client.get("/v1/batches", headers={"x-project-id": "any-project"}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": "zgpu-test-key", "x-project-id": PROJECT}, 200),
        ({"x-api-key": "zgpu-test-key"}, 200),
        ({"x-api-key": "zgpu-wrong", "x-project-id": PROJECT}, 403),
        ({"x-api-key": "zgpu-test-key", "x-project-id": "another-project"}, 403),
        ({"x-project-id": PROJECT}, 401),
    ],
)
def test_configured_key_and_project(make_api: Callable[..., Api], headers: dict[str, str], status: int) -> None:
    api = make_api(headers=headers, api_key="zgpu-test-key", project_id=PROJECT)
    reply = api.client.get("/v1/batches")
    assert reply.status_code == status
    if status == 403:
        assert reply.json()["error"]["message"] == "Invalid credentials"
        assert reply.json()["error"]["type"] == "authentication_error"


def test_require_project_id_makes_a_missing_project_401(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={"x-api-key": "k"}, require_project_id=True)
    reply = api.client.get("/v1/batches")
    assert reply.status_code == 401
    assert reply.json() == _missing_headers_body()
    assert api.client.get("/v1/batches", headers={"x-project-id": PROJECT}).status_code == 200


def test_unauthenticated_preflight_is_204(make_api: Callable[..., Api]) -> None:
    api = make_api(headers={})
    reply = api.client.options("/v1/batches")
    assert reply.status_code == 204
    assert REQUEST_ID.match(reply.headers["x-request-id"])


def test_unknown_route_is_a_json_404(api: Api) -> None:
    reply = api.client.get("/v1/embeddings")
    assert reply.status_code == 404
    assert set(reply.json()["error"]) == {"message", "type", "code", "param"}
    assert REQUEST_ID.match(reply.headers["x-request-id"])


def test_wrong_method_is_a_json_405(api: Api) -> None:
    reply = api.client.put("/v1/batches")
    assert reply.status_code == 405
    assert reply.json()["error"]["type"] == "invalid_request_error"


def test_every_reply_has_a_fresh_request_id(api: Api) -> None:
    batch = api.create_ok(api.questions(2))
    replies = [
        api.client.get("/v1/batches"),
        api.client.get(f"/v1/batches/{batch['id']}"),
        api.client.get("/v1/batches/batch_unknown"),
        api.client.get("/v1/files"),
        api.client.get("/v1/files/file-unknown"),
        api.client.post("/v1/batches", json={}),
    ]
    ids = [reply.headers["x-request-id"] for reply in replies]
    assert all(REQUEST_ID.match(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)
