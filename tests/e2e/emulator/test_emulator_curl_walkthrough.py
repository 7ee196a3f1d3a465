"""The curl + jq walkthrough of the ZeroGPU examples, run by bash against the emulator: only the base URL
(and the poll interval) differ from the docs."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_emulator_kit import API_KEY, PROJECT_ID

from batchdrop_tools.emulator.server import EmulatorServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("curl") is None or shutil.which("jq") is None,
        reason="the curl walkthrough needs curl and jq on PATH (apt-get install -y curl jq)",
    ),
]

# From zerogpu-batch-examples.txt, with `https://api.zerogpu.ai` -> "$ZGPU_BASE_URL" and `sleep 30` ->
# `sleep "$POLL_SECONDS"`. (The docs page shows `-F file=@input.jsonl` mangled by an email obfuscator.)
WALKTHROUGH = r"""
set -euo pipefail
cat > input.jsonl <<'JSONL'
{"custom_id":"q-1","method":"POST","url":"/v1/chat/completions","body":{"model":"<model-id>","messages":[{"role":"user","content":"What is the capital of France?"}]}}
{"custom_id":"q-2","method":"POST","url":"/v1/chat/completions","body":{"model":"<model-id>","messages":[{"role":"user","content":"What is the capital of Germany?"}]}}
{"custom_id":"q-3","method":"POST","url":"/v1/chat/completions","body":{"model":"<model-id>","messages":[{"role":"user","content":"What is the capital of Italy?"}]}}
JSONL
UPLOAD=$(curl -s -X POST "$ZGPU_BASE_URL/v1/files" \
-H "x-api-key: $ZGPU_API_KEY" \
-H "x-project-id: $ZGPU_PROJECT_ID" \
-F purpose=batch \
-F file=@input.jsonl)
echo "$UPLOAD"
INPUT_FILE_ID=$(echo "$UPLOAD" | jq -r '.id')
BATCH=$(curl -s -X POST "$ZGPU_BASE_URL/v1/batches" \
-H "x-api-key: $ZGPU_API_KEY" \
-H "x-project-id: $ZGPU_PROJECT_ID" \
-H "content-type: application/json" \
-d "{
\"input_file_id\": \"$INPUT_FILE_ID\",
\"endpoint\": \"/v1/chat/completions\",
\"completion_window\": \"24h\",
\"metadata\": { \"job\": \"capitals-demo\" }
}")
echo "$BATCH"
BATCH_ID=$(echo "$BATCH" | jq -r '.id')
while true; do
STATUS_JSON=$(curl -s "$ZGPU_BASE_URL/v1/batches/$BATCH_ID" \
-H "x-api-key: $ZGPU_API_KEY" \
-H "x-project-id: $ZGPU_PROJECT_ID")
STATUS=$(echo "$STATUS_JSON" | jq -r '.status')
echo "$STATUS_JSON" | jq -c '{status, request_counts}'
case "$STATUS" in
completed|failed|expired) break ;;
esac
sleep "$POLL_SECONDS"
done
echo "Final status: $STATUS"
OUTPUT_FILE_ID=$(echo "$STATUS_JSON" | jq -r '.output_file_id')
ERROR_FILE_ID=$(echo "$STATUS_JSON" | jq -r '.error_file_id')
if [ "$OUTPUT_FILE_ID" != "null" ]; then
curl -s "$ZGPU_BASE_URL/v1/files/$OUTPUT_FILE_ID/content" \
-H "x-api-key: $ZGPU_API_KEY" \
-H "x-project-id: $ZGPU_PROJECT_ID" \
-o output.jsonl
echo "--- output.jsonl ---"
cat output.jsonl
fi
if [ "$ERROR_FILE_ID" != "null" ]; then
curl -s "$ZGPU_BASE_URL/v1/files/$ERROR_FILE_ID/content" \
-H "x-api-key: $ZGPU_API_KEY" \
-H "x-project-id: $ZGPU_PROJECT_ID" \
-o errors.jsonl
echo "--- errors.jsonl ---"
cat errors.jsonl
fi
jq -r '"\(.custom_id): \(.response.body.choices[0].message.content)"' output.jsonl
"""  # noqa: E501 (the docs' JSONL lines, verbatim)


def test_curl_walkthrough(serve: Callable[..., EmulatorServer], tmp_path: Path) -> None:
    server = serve(lines_per_second=5)
    env = {
        **os.environ,
        "ZGPU_BASE_URL": server.url,
        "ZGPU_API_KEY": API_KEY,
        "ZGPU_PROJECT_ID": PROJECT_ID,
        "POLL_SECONDS": "0.2",
    }
    result = subprocess.run(
        ["bash", "-c", WALKTHROUGH], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    polls = [line for line in lines if line.startswith('{"status":')]
    assert len(polls) >= 2, "the batch should be seen in progress before it completes"
    assert polls[0].startswith('{"status":"in_progress"')
    assert polls[-1] == '{"status":"completed","request_counts":{"total":3,"completed":3,"failed":0}}'
    assert "Final status: completed" in lines
    assert "--- output.jsonl ---" in lines
    assert "--- errors.jsonl ---" not in lines
    assert lines[-3:] == [
        "q-1: echo: What is the capital of France?",
        "q-2: echo: What is the capital of Germany?",
        "q-3: echo: What is the capital of Italy?",
    ]
