"""What a job cost: its tokens (summed from the result lines) at the prices of a table the operator
controls. The default table is ZeroGPU's public list prices (sync, USD per million tokens, 2026-08; the
batch discount is not quantified, so they are an upper bound); `PriceTable` (a stack parameter, JSON)
adds models or replaces their prices. A model the table does not know is reported with its tokens and
a `null` cost: never a guessed price."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    batch_discount: float = Field(default=0.0, ge=0, lt=1)
    """The share taken off for batch use (0.5: half price)."""

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        full = (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1_000_000
        return full * (1 - self.batch_discount)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(default="USD", min_length=3, max_length=3)
    as_of: str = Field(min_length=1)
    """When the prices were read (reported as `prices_as_of`)."""
    models: dict[str, ModelPrice]

    def price_of(self, model: str) -> ModelPrice | None:
        return self.models.get(model)

    def costs(self, tokens_by_model: Mapping[str, tuple[int, int]]) -> tuple[float | None, dict[str, float | None]]:
        """(input, output) tokens by model at these prices: the total over the priced models (None if
        none is priced), and each model's cost (None: not priced, never a guess)."""
        by_model: dict[str, float | None] = {}
        for model, (input_tokens, output_tokens) in tokens_by_model.items():
            price = self.price_of(model)
            by_model[model] = None if price is None else round(price.cost(input_tokens, output_tokens), 9)
        known = [value for value in by_model.values() if value is not None]
        return (round(sum(known), 9) if known else None), by_model

    def merged_json(self, text: str) -> PriceTable:
        """`merged` with the changes as JSON text."""
        override = json.loads(text)
        if not isinstance(override, dict):
            raise ValueError("it must be a JSON object")
        return self.merged(override)

    def merged(self, override: Mapping[str, Any]) -> PriceTable:
        """This table with the operator's changes: `models` entries added or replaced, `currency` and
        `as_of` replaced when given (`as_of` defaults to "operator" once anything is changed)."""
        extra = set(override) - {"currency", "as_of", "models"}
        if extra:
            raise ValueError(f"unknown keys {sorted(extra)}: a price table has currency, as_of and models")
        changes = override.get("models") or {}
        if not isinstance(changes, Mapping):
            raise ValueError("models must be an object of model name to price")
        models = {}
        for name, price in changes.items():
            try:
                models[name] = ModelPrice.model_validate(price)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"]) or "price"
                raise ValueError(f"models.{name}.{where}: {first['msg']}") from None
        return PriceTable(
            currency=override.get("currency", self.currency),
            as_of=override.get("as_of", "operator" if override else self.as_of),
            models=self.models | models,
        )


def _list(input_per_million: float, output_per_million: float) -> ModelPrice:
    return ModelPrice(input_per_million=input_per_million, output_per_million=output_per_million)


_CLASSIFIERS = (
    "zlm-v2-iab-classify-edge-enriched",
    "zlm-v1-iab-classify-edge",
    "zlm-v1-iab-domain-classifier",
    "deberta-v3-small",
    "gliner-multi-pii-v1",
    "gliner2-base-v1",
    "zlm-v1-moderation-edge",
)

DEFAULT_PRICES = PriceTable(
    currency="USD",
    as_of="2026-08 (ZeroGPU list prices, sync; the batch discount is not published: an upper bound)",
    models={
        "gpt-oss-120b": _list(0.15, 0.60),
        "qwen3-30b-a3b-fp8": _list(0.05, 0.30),
        "glm-5.2": _list(1.10, 3.50),
        "deepseek-v4-flash": _list(0.07, 0.14),
        "llama-3.1-8b-instruct-fast": _list(0.02, 0.05),
        "LFM2.5-1.2B-Instruct": _list(0.02, 0.05),
        "LFM2.5-1.2B-Thinking": _list(0.02, 0.05),
        "t5-small": _list(0.05, 0.40),
        "zlm-v1-multi-iab-classify": _list(0.05, 0.40),
    }
    | {name: _list(0.02, 0.05) for name in _CLASSIFIERS},
)
"""ZeroGPU's model catalog (docs re-checked 2026-08). Embedding models are not batchable, so not here."""
