"""What runs each batch line: a deterministic echo model, or a real OpenAI-compatible server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from batchdrop_tools.emulator.ids import stable_hex
from batchdrop_tools.emulator.rules import CHAT_COMPLETIONS_URL, MESSAGE_ROLES


@dataclass(frozen=True)
class BackendReply:
    """The HTTP reply a line got. `legacy_code` overrides the `http_<status>` legacy prefix of a failure."""

    status_code: int
    body: dict[str, Any]
    legacy_code: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


class Backend(Protocol):
    def complete(self, body: dict[str, Any], *, custom_id: str, created: int) -> BackendReply:
        """Run one chat-completion request body."""
        ...

    def close(self) -> None: ...


class EchoBackend:
    """A deterministic fake model: the answer is `echo: <the last user message>`.

    Replies have the full OpenAI `chat.completion` shape with token counts derived from word counts.
    A body without a model or well-formed messages gets a 400, as a real endpoint would."""

    def complete(self, body: dict[str, Any], *, custom_id: str, created: int) -> BackendReply:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _bad_request("you must provide a model parameter", "model")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _bad_request("messages must be a non-empty array", "messages")
        texts: list[str] = []
        question = ""
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
                return _bad_request(
                    f"messages[{index}].role must be one of {', '.join(MESSAGE_ROLES)}", f"messages[{index}]"
                )
            text = _message_text(message.get("content"))
            texts.append(text)
            if message["role"] == "user":
                question = text
        answer = f"echo: {question}"
        prompt_tokens = sum(_token_count(text) + 3 for text in texts)
        completion_tokens = _token_count(answer)
        completion = {
            "id": "chatcmpl-" + stable_hex(custom_id, answer, model, length=29),
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "annotations": []},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": None,
        }
        return BackendReply(200, completion)

    def close(self) -> None:
        pass


class UpstreamBackend:
    """POSTs each line's body to `<base_url>/v1/chat/completions` and records the reply as is."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers=headers,
            transport=transport,
        )

    def complete(self, body: dict[str, Any], *, custom_id: str, created: int) -> BackendReply:
        try:
            reply = self._client.post(CHAT_COMPLETIONS_URL, json=body)
        except httpx.HTTPError as error:
            return BackendReply(
                502,
                {"error": {"message": f"Upstream request failed: {type(error).__name__}: {error}"}},
                legacy_code="retries_exhausted",
            )
        try:
            document = reply.json()
        except ValueError:
            document = None
        if not isinstance(document, dict):
            if 200 <= reply.status_code < 300:
                return BackendReply(502, {"error": {"message": "Upstream returned a body that is not JSON"}})
            document = {"error": {"message": f"Upstream returned HTTP {reply.status_code}"}}
        return BackendReply(reply.status_code, document)

    def close(self) -> None:
        self._client.close()


def _bad_request(message: str, param: str) -> BackendReply:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return BackendReply(400, {"error": error})


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return " ".join(parts)
    return ""


def _token_count(text: str) -> int:
    return len(text.split())
