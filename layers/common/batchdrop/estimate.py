"""Before any batch is created: what a job will use and cost at most, from its lines alone.

Input tokens are estimated as the UTF-8 bytes of the messages' text / 4, rounded up per line (no
tokenizer is downloaded at run time; for English prose this is close, for code and non-Latin text it
tends to undercount); the worst-case output is each line's `max_completion_tokens` or `max_tokens`. A
line that sets neither has no upper bound: it is counted in `lines_without_max_tokens`, and only its
input is in the cost estimate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from batchdrop.pricing import PriceTable

METHOD = "input: UTF-8 bytes of the messages' text / 4; output: each line's max_completion_tokens or max_tokens"


class ModelEstimate(BaseModel):
    lines: int = 0
    input_tokens: int = 0
    max_output_tokens: int = 0
    lines_without_max_tokens: int = 0


class TokenEstimate(BaseModel):
    """The sums, by the model each line asks for (kept on the job record: a few entries)."""

    by_model: dict[str, ModelEstimate] = Field(default_factory=dict)

    def add(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        name = model if isinstance(model, str) and model else "unknown"
        entry = self.by_model.get(name)
        if entry is None:
            entry = self.by_model[name] = ModelEstimate()
        entry.lines += 1
        entry.input_tokens += (_text_bytes(body.get("messages")) + 3) // 4
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            entry.max_output_tokens += limit
        else:
            entry.lines_without_max_tokens += 1

    def total(self) -> ModelEstimate:
        total = ModelEstimate()
        for entry in self.by_model.values():
            total.lines += entry.lines
            total.input_tokens += entry.input_tokens
            total.max_output_tokens += entry.max_output_tokens
            total.lines_without_max_tokens += entry.lines_without_max_tokens
        return total

    def cost(self, prices: PriceTable) -> tuple[float | None, dict[str, float | None]]:
        """The most the job can cost at these prices (input, plus the worst-case output where bounded): in
        total over the priced models (None if none is priced), and by model (None: not priced)."""
        return prices.costs(
            {model: (entry.input_tokens, entry.max_output_tokens) for model, entry in sorted(self.by_model.items())}
        )


def _text_bytes(messages: Any) -> int:
    """The UTF-8 bytes of the messages' text (string contents, and the text of content parts)."""
    if not isinstance(messages, list):
        return 0
    size = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            size += len(content.encode("utf-8", "surrogatepass"))
        elif isinstance(content, list):
            for part in content:
                text = part.get("text") if isinstance(part, dict) else None
                if isinstance(text, str):
                    size += len(text.encode("utf-8", "surrogatepass"))
    return size
