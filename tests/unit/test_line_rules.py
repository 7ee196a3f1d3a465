"""The pipeline's validator and the emulator's own rules, each held to the one table of the API's rules."""

from __future__ import annotations

import io

import pytest
from line_rule_cases import CASES, Case

from batchdrop.validation import LineValidator, Problem, iter_physical_lines
from batchdrop_tools.emulator import rules


def _pipeline_verdict(case: Case) -> Problem | None:
    validator = LineValidator(case.endpoint, strict=False)
    for physical in iter_physical_lines(io.BytesIO(case.content)):
        checked = validator.check(physical)
        if isinstance(checked, Problem):
            return checked
    return validator.finish()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_pipeline_refuses_what_the_api_refuses_with_its_words(case: Case) -> None:
    problem = _pipeline_verdict(case)
    if case.refusal is None:
        assert problem is None
        return
    assert problem is not None, "accepted a file the API refuses"
    assert (problem.message, problem.line) == case.refusal
    assert problem.code.value == case.code


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_emulator_refuses_what_the_api_refuses_with_its_words(case: Case) -> None:
    accepted = io.BytesIO()
    refusal, lines = rules.check_file(io.BytesIO(case.content), case.endpoint, size=len(case.content), copy=accepted)
    if case.refusal is None:
        assert refusal is None and lines > 0
        assert accepted.getvalue().count(b"\n") == lines  # the request lines, normalised, are what runs
        return
    assert refusal is not None, "accepted a file the API refuses"
    assert (refusal.message, refusal.line) == case.refusal
