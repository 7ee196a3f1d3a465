"""Batch list: newest first, after/limit/has_more/first_id/last_id, lag; SDK auto-paging over 100+ batches."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest
from emulator_testkit import AUTH, BASE_URL, Api, jsonl
from openai import OpenAI


def _create_batches(api: Api, count: int) -> list[str]:
    file_id = api.upload(jsonl(api.questions(1)))["id"]
    ids = []
    for _ in range(count):
        reply = api.client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        ids.append(reply.json()["id"])
    return ids


def test_list_pages_newest_first(api: Api) -> None:
    ids = _create_batches(api, 5)
    newest_first = list(reversed(ids))
    first = api.client.get("/v1/batches", params={"limit": 2}).json()
    assert first["object"] == "list"
    assert [b["id"] for b in first["data"]] == newest_first[:2]
    assert (first["first_id"], first["last_id"], first["has_more"]) == (
        newest_first[0],
        newest_first[1],
        True,
    )
    second = api.client.get("/v1/batches", params={"limit": 2, "after": first["last_id"]}).json()
    assert [b["id"] for b in second["data"]] == newest_first[2:4]
    third = api.client.get("/v1/batches", params={"limit": 2, "after": second["last_id"]}).json()
    assert [b["id"] for b in third["data"]] == newest_first[4:]
    assert third["has_more"] is False


def test_list_default_limit_is_20(api: Api) -> None:
    _create_batches(api, 21)
    page = api.client.get("/v1/batches").json()
    assert len(page["data"]) == 20
    assert page["has_more"] is True


@pytest.mark.parametrize("limit", ["0", "101", "x"])
def test_list_rejects_a_bad_limit(api: Api, limit: str) -> None:
    reply = api.client.get("/v1/batches", params={"limit": limit})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_limit"


def test_list_counts_may_lag_while_retrieve_is_live(make_api: Callable[..., Api]) -> None:
    api = make_api(lines_per_second=1, list_lag_seconds=5)
    batch = api.create_ok(api.questions(10))
    assert api.client.get("/v1/batches").json()["data"][0]["request_counts"]["completed"] == 0
    api.emu.advance(3)
    assert api.batch(batch["id"])["request_counts"]["completed"] == 3
    assert api.client.get("/v1/batches").json()["data"][0]["request_counts"]["completed"] == 0
    api.emu.advance(2)
    assert api.client.get("/v1/batches").json()["data"][0]["request_counts"]["completed"] == 5


def test_openai_sdk_auto_pages_over_more_than_100_batches(api: Api) -> None:
    ids = _create_batches(api, 130)
    sdk = OpenAI(
        api_key="ignored-by-zerogpu",
        base_url=f"{BASE_URL}/v1",
        default_headers=AUTH,
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=api.emu.app)),
        max_retries=0,
    )
    listed = [batch.id for batch in sdk.batches.list(limit=100)]
    assert listed == list(reversed(ids))
    assert [batch.id for batch in sdk.batches.list()] == list(reversed(ids))
