"""The emulator, over its HTTP API, answers each case of the shared table as ZeroGPU does."""

from __future__ import annotations

import pytest
from emulator_testkit import Api
from line_rule_cases import CASES, Case

# An empty upload never reaches create: the Files API refuses it first ("File is empty", tested there).
UPLOADABLE = [case for case in CASES if case.content]


@pytest.mark.parametrize("case", UPLOADABLE, ids=[case.name for case in UPLOADABLE])
def test_create_answers_each_case_as_the_api_does(api: Api, case: Case) -> None:
    reply = api.create(case.content, endpoint=case.endpoint)
    if case.refusal is None:
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "in_progress"
        return
    assert reply.status_code == 400, reply.text
    message, line = case.refusal
    error = reply.json()["error"]
    assert (error["message"], error["line"], error["type"]) == (message, line, "invalid_request_error")
