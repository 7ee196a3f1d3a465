"""Collect sorts a result file's lines as the bytes arrive; a download retried after a partial read
rewinds the sorter, and what that file had sorted is undone, so no line is counted or written twice."""

from __future__ import annotations

import io
import json

from batchdrop.flow.results import _ResultSorter
from batchdrop.models import ShardResult


def _line(custom_id: str, *, ok: bool) -> bytes:
    if ok:
        document = {"id": "r", "custom_id": custom_id, "response": {"status_code": 200, "body": {}}, "error": None}
    else:
        document = {"id": "r", "custom_id": custom_id, "response": None, "error": {"code": "model_error"}}
    return json.dumps(document).encode() + b"\n"


def test_lines_cut_anywhere_are_sorted_once_and_a_rewind_undoes_a_partial_read() -> None:
    # Given a result file of five lines (one failed, one an id the shard never sent, one repeated)
    body = (
        _line("a", ok=True)
        + _line("b", ok=False)
        + b"\r\n"
        + _line("zz", ok=True)
        + _line("a", ok=True)
        + _line("c", ok=True).rstrip(b"\n")
    )
    output, errors = io.BytesIO(b"earlier\n"), io.BytesIO()
    output.seek(0, 2)
    unreported = {"a": None, "b": None, "c": None, "d": None}
    result = ShardResult(output_key="o", errors_key="e")
    sorter = _ResultSorter(output, errors, unreported, result)

    # When a first download breaks off mid-line, is rewound, and a second one arrives in small pieces
    assert sorter.tell() == 0
    sorter.write(body[:70])
    sorter.seek(0)
    sorter.truncate()
    for start in range(0, len(body), 7):
        sorter.write(body[start : start + 7])
    sorter.finish()

    # Then every line of the shard is in one file once, the strangers are dropped, and the rest still unreported
    assert output.getvalue() == b"earlier\n" + _line("a", ok=True) + _line("c", ok=True)
    assert errors.getvalue() == _line("b", ok=False)
    assert (result.succeeded, result.failed, result.errors_by_code) == (2, 1, {"model_error": 1})
    assert list(unreported) == ["d"]
