"""What every judge provider is: prompts in, top next-token logprobs out ({token: logprob})."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emwb.config import ExecConfig, JudgeConfig

OnResult = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class JudgeContext:
    cfg: JudgeConfig
    exec: ExecConfig
    base_model_path: str     # what `hf/tiny` and `vllm/tiny` mean
    cache_root: Path
    state_dir: Path | None = None  # where a Batch API judge keeps the ids of its batches in flight


class Provider:
    spec: str
    written = False  # True: replies are written scores (strict parsing), not top logprobs
    output_tokens_each = 1  # completion tokens one request produces (for the cost estimate)
    cost_overrides: dict = {}
    batch = False  # requests go through the Batch API (its discount applies)
    reads_answers = False  # True: `run_items` gets (question, answer, rubric) instead of filled prompts

    def estimate(self, prompts: list[str]):
        """What sending `prompts` costs (said before the first request)."""
        from emwb.judge.cost import estimate_cost

        return estimate_cost(self.spec, prompts, self.output_tokens_each, self.cost_overrides, self.batch)

    def params(self) -> dict:
        """Request parameters that change the reply (part of the cache key)."""
        raise NotImplementedError

    def check_numbers(self) -> None:
        """Stop with one line, before any judging request, when this judge's first token cannot carry a whole score
        0..100 (`emwb.judge.numbers`); nothing to check by default (local judges read their tokenizer)."""

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        """Call `on_result(index, top_logprobs)` as each prompt's reply arrives."""
        raise NotImplementedError

    def run_items(self, items: list[tuple[str, str, str]], on_result: OnResult) -> None:
        """`reads_answers` providers: call `on_result(index, top_logprobs)` for each (question, answer, rubric)."""
        raise NotImplementedError


def merge_logprobs(pairs: list[tuple[str, float]]) -> dict[str, float]:
    """{token: logprob}; tokens that decode to the same string have their probabilities added."""
    out: dict[str, float] = {}
    for token, lp in pairs:
        out[token] = _log_add(out[token], lp) if token in out else lp
    return out


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) without overflow; NaN stays NaN (scoring then leaves the reply unscored)."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf or hi == math.inf else hi + math.log1p(math.exp(lo - hi))


def model_fingerprint(path: str, chunk: int = 1 << 20) -> str:
    """A hub id as is; for a local folder, a hash of its files' names, sizes and first and last megabyte.

    Independent of where the folder lives, so a copied or moved run directory keeps its cached judgments,
    while a rebuilt or replaced model never reuses them.
    """
    p = Path(path)
    if not p.is_dir():
        return path
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
        size = f.stat().st_size
        h.update(f"{f.relative_to(p)}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(chunk))
            if size > 2 * chunk:
                fh.seek(-chunk, 2)
                h.update(fh.read(chunk))
    return "local:" + h.hexdigest()
