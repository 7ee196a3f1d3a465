"""Usage is summed as results are sorted: succeeded lines by the model that answered, failed lines that
carry usage apart (wasted), lines of other shards not at all."""

from __future__ import annotations

import io
import json

from batchdrop.flow.results import _ResultSorter
from batchdrop.models import ShardResult, TokenUsage


def ok(custom_id: str, model: str, prompt: int, completion: int, cached: int = 0) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    body = {"model": model, "choices": [], "usage": usage}
    return json.dumps({"custom_id": custom_id, "response": {"status_code": 200, "body": body}}).encode()


def test_usage_by_model_and_wasted_apart() -> None:
    result = ShardResult(output_key="o", errors_key="e")
    sorter = _ResultSorter(io.BytesIO(), io.BytesIO(), dict.fromkeys(["a", "b", "c", "d"]), result)
    failed_with_usage = {
        "custom_id": "c",
        "response": {"status_code": 500, "body": {"error": {"code": "model_error"}, "usage": {"prompt_tokens": 9}}},
    }
    lines = [
        ok("a", "m1", 10, 5, cached=4),
        ok("b", "m2", 7, 3),
        json.dumps(failed_with_usage).encode(),
        ok("x", "m1", 1000, 1000),  # not this shard's: counted as unexpected, not in the sums
        json.dumps({"custom_id": "d", "response": None, "error": {"code": "batch_expired"}}).encode(),
    ]
    sorter.write(b"\n".join(lines) + b"\n")
    sorter.finish()

    assert result.usage == {
        "m1": TokenUsage(lines=1, prompt_tokens=10, completion_tokens=5, total_tokens=15, cached_tokens=4),
        "m2": TokenUsage(lines=1, prompt_tokens=7, completion_tokens=3, total_tokens=10),
    }
    assert result.wasted == TokenUsage(lines=1, prompt_tokens=9, total_tokens=9)
    assert (result.succeeded, result.failed) == (2, 2)


def test_a_rewound_download_does_not_count_its_lines_twice() -> None:
    result = ShardResult(output_key="o", errors_key="e")
    sorter = _ResultSorter(io.BytesIO(), io.BytesIO(), dict.fromkeys(["a", "b"]), result)
    sorter.tell()
    sorter.write(ok("a", "m1", 10, 5) + b"\n")  # the download breaks off here and starts again
    sorter.seek(0)
    sorter.write(ok("a", "m1", 10, 5) + b"\n" + ok("b", "m1", 1, 1) + b"\n")
    sorter.finish()
    assert result.usage == {"m1": TokenUsage(lines=2, prompt_tokens=11, completion_tokens=6, total_tokens=17)}
