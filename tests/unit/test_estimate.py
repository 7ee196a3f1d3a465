"""The estimate before any batch: input tokens from the messages' text (UTF-8 bytes / 4, rounded up per
line), worst-case output from max_completion_tokens or max_tokens, and its cost at the table's prices."""

from __future__ import annotations

import pytest

from batchdrop.estimate import ModelEstimate, TokenEstimate
from batchdrop.pricing import DEFAULT_PRICES


def test_text_parts_and_roles_all_count_and_each_line_rounds_up() -> None:
    estimate = TokenEstimate()
    estimate.add(
        {
            "model": "gpt-oss-120b",
            "messages": [
                {"role": "system", "content": "abcd"},  # 4 bytes
                {"role": "user", "content": [{"type": "text", "text": "ü"}, {"type": "image_url", "image_url": {}}]},
            ],
            "max_completion_tokens": 50,
            "max_tokens": 999,  # max_completion_tokens is the one the API applies
        }
    )
    estimate.add({"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "a"}], "max_tokens": True})
    assert estimate.by_model["gpt-oss-120b"] == ModelEstimate(
        lines=2, input_tokens=2 + 1, max_output_tokens=50, lines_without_max_tokens=1
    )


def test_cost_is_input_plus_bounded_output_and_null_for_an_unpriced_model() -> None:
    estimate = TokenEstimate()
    estimate.add(
        {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "x" * 4_000_000}], "max_tokens": 10**6}
    )
    estimate.add({"model": "mine", "messages": [{"role": "user", "content": "x"}]})
    total, by_model = estimate.cost(DEFAULT_PRICES)
    assert by_model == {"gpt-oss-120b": pytest.approx(0.15 + 0.60), "mine": None}
    assert total == pytest.approx(0.75)
    assert TokenEstimate().cost(DEFAULT_PRICES) == (None, {})
