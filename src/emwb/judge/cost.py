"""What a judge's requests will cost, said before the first is sent: requests, estimated tokens, estimated USD.

Tokens are estimated at 4 characters each plus a few per message (OpenAI's rule of thumb for English; the exact
count needs the model's tokenizer, which is not available offline). Prices are data (emwb/catalog/prices.yaml),
overridden per model by `judge.prices`. Local judges (hf/, vllm/, probe/) cost nothing per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from emwb.config import JudgePrice
from emwb.yamlio import load_yaml

CHARS_PER_TOKEN = 4.0
TOKENS_PER_MESSAGE = 7  # the chat format's own tokens around one user message


@dataclass(frozen=True)
class CostEstimate:
    spec: str
    requests: int
    input_tokens: int
    output_tokens: int
    usd: float | None          # None: no price known for the model
    note: str                  # how the figure was reached

    def line(self) -> str:
        cost = f"${self.usd:,.2f}" if self.usd is not None else "cost unknown"
        return (f"judge {self.spec}: {self.requests:,} requests, ~{self.input_tokens:,} input and "
                f"~{self.output_tokens:,} output tokens, estimated {cost} ({self.note})")


@cache
def shipped_prices() -> tuple[dict[str, JudgePrice], float]:
    raw = load_yaml(Path(str(resources.files("emwb.catalog") / "prices.yaml")))
    return {m: JudgePrice(**p) for m, p in raw["models"].items()}, float(raw["batch_discount"])


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN + 0.5) + TOKENS_PER_MESSAGE


def estimate_cost(spec: str, prompts: list[str], output_tokens_each: int,
                  overrides: dict[str, JudgePrice] | None = None, batch: bool = False) -> CostEstimate:
    """The estimate for sending `prompts` to judge `spec` (`batch`: through the Batch API, at its discount)."""
    kind, _, model = spec.partition("/")
    tokens_in = sum(estimate_tokens(p) for p in prompts)
    tokens_out = output_tokens_each * len(prompts)
    if kind != "openai":
        return CostEstimate(spec, len(prompts), tokens_in, tokens_out, 0.0, "local judge, no charge per request")
    shipped, discount = shipped_prices()
    price = {**shipped, **(overrides or {})}.get(model)
    if price is None:
        return CostEstimate(spec, len(prompts), tokens_in, tokens_out, None,
                            f"no price for {model!r}: add it under judge.prices")
    usd = (tokens_in * price.input + tokens_out * price.output) / 1e6 * (discount if batch else 1.0)
    where = "custom price" if model in (overrides or {}) else "emwb/catalog/prices.yaml"
    return CostEstimate(spec, len(prompts), tokens_in, tokens_out, usd,
                        f"{where}{', Batch API discount' if batch else ''}; tokens estimated at 4 characters each")
