"""One table of ZeroGPU's create-time rules, from the wire reference (section 1.4): a file -> the API's
exact 400 message and line, and the code the submit function reports for it. Both implementations, the
pipeline's validator (batchdrop.validation) and the emulator's own (batchdrop_tools.emulator.rules), are
held to it, so a divergence between them fails a test instead of passing twice.

`refusal` None: the API creates the batch (the line is fine as far as the API is concerned).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHAT = "/v1/chat/completions"
MAX_LINE_BYTES = 1_048_576


def line(custom_id: str = "a", **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "zgpu-small", "messages": [{"role": "user", "content": "hi"}]},
    }
    fields.update(overrides)
    return json.dumps({key: value for key, value in fields.items() if value is not ...}).encode()


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    refusal: tuple[str, int | None] | None
    """The API's message and line, or None when it accepts the file."""
    code: str | None
    """The pipeline validator's code under the API's rules (`strict=False`), or None; strict mode, which
    submit runs, refuses more and names encodings by their own codes (tests/unit/pipeline/test_validation.py)."""
    endpoint: str = CHAT


OK = line("a") + b"\n" + line("b") + b"\n"

CASES = [
    Case("a valid file", OK, None, None),
    Case("CRLF, a BOM and blank lines", b"\xef\xbb\xbf" + line("a") + b"\r\n\r\n" + line("b") + b"\r\n", None, None),
    Case("lowercase method", line("a", method="post") + b"\n", None, None),
    Case("no final newline", line("a"), None, None),
    Case("an empty file", b"", ("Input file contains no JSONL lines", None), "empty_file"),
    Case("blank lines only", b"\n  \n\n", ("Input file contains no JSONL lines", None), "empty_file"),
    Case("not JSON", line("a") + b"\n{not json\n", ("Line 2 is not valid JSON", 2), "invalid_json"),
    Case("a blank line counts", b"\n{oops\n", ("Line 2 is not valid JSON", 2), "invalid_json"),
    Case("NaN is not JSON", b'{"custom_id": "a", "x": NaN}\n', ("Line 1 is not valid JSON", 1), "invalid_json"),
    Case("invalid UTF-8", b'{"custom_id": "\xff"}\n', ("Line 1 is not valid JSON", 1), "invalid_json"),
    Case("a lone surrogate", b'{"custom_id": "\\ud800"}\n', ("Line 1 is not valid JSON", 1), "invalid_json"),
    Case("an array line", b"[1, 2]\n", ("Line 1 must be a JSON object", 1), "not_an_object"),
    Case("a string line", b'"text"\n', ("Line 1 must be a JSON object", 1), "not_an_object"),
    Case("a number line", line("a") + b"\n42\n", ("Line 2 must be a JSON object", 2), "not_an_object"),
    Case("a null line", b"null\n", ("Line 1 must be a JSON object", 1), "not_an_object"),
    Case("a true line", b"true\n", ("Line 1 must be a JSON object", 1), "not_an_object"),
    Case("no custom_id", line(custom_id=...) + b"\n", ("Line 1 is missing custom_id", 1), "missing_custom_id"),
    Case("an empty custom_id", line("") + b"\n", ("Line 1 is missing custom_id", 1), "missing_custom_id"),
    Case("a number custom_id", line(7) + b"\n", ("Line 1 is missing custom_id", 1), "missing_custom_id"),  # type: ignore[arg-type]
    Case(
        "a duplicate custom_id",
        line("a") + b"\n" + line("b") + b"\n" + line("a") + b"\n",
        ('Line 3 duplicates custom_id "a"', 3),
        "duplicate_custom_id",
    ),
    Case("method GET", line("a", method="GET") + b"\n", ('Line 1 method must be "POST"', 1), "invalid_method"),
    Case("no method", line("a", method=...) + b"\n", ('Line 1 method must be "POST"', 1), "invalid_method"),
    Case("no url", line("a", url=...) + b"\n", ("Line 1 is missing url", 1), "missing_url"),
    Case(
        "another endpoint's url",
        line("a", url="/v1/embeddings") + b"\n",
        ('Line 1 url "/v1/embeddings" is not an allowed batch endpoint', 1),
        "url_not_allowed",
    ),
    Case(
        "a url with a trailing slash",
        line("a", url=CHAT + "/") + b"\n",
        (f'Line 1 url "{CHAT}/" is not an allowed batch endpoint', 1),
        "url_not_allowed",
    ),
    Case("no body", line("a", body=...) + b"\n", ("Line 1 is missing body", 1), "missing_body"),
    Case("an empty body", line("a", body={}) + b"\n", ("Line 1 is missing body", 1), "missing_body"),
    Case(
        "stream true",
        line("a", body={"model": "m", "stream": True}) + b"\n",
        ("Line 1 has stream=true; streaming is not supported in batch mode", 1),
        "stream_not_supported",
    ),
    Case(
        "a line over 1 MiB",
        line("a") + b"\n" + b'{"custom_id": "b", "pad": "' + b"x" * MAX_LINE_BYTES + b'"}\n',
        (f"Line 2 exceeds maximum size of {MAX_LINE_BYTES} bytes", 2),
        "line_too_large",
    ),
    Case(
        "more than 50,000 lines",
        b"".join(line(f"r-{n}") + b"\n" for n in range(50_001)),
        ("Input file exceeds maximum of 50000 lines", None),
        "too_many_lines",
    ),
    Case(
        "an endpoint the lines do not use",
        OK,
        ('endpoint "/v1/embeddings" does not match the url "/v1/chat/completions" used by the input file', None),
        "endpoint_mismatch",
        endpoint="/v1/embeddings",
    ),
]
