"""The `judge:` block: which judges, how a reply becomes a score, and what requests are estimated to cost."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emwb.config.base import F, Float, Int, Strict, Url


class JudgeMode(Strict):
    """How one judge's reply becomes a score."""

    scoring: Literal["logprobs", "written"] = F(
        "logprobs", "logprobs: the expected score over the first token's top logprobs (Betley et al.); written: "
                    "the judge writes its score or label, for servers and models that return no logprobs")
    samples: Int = F(5, "written: replies sampled per judgment (one request, n replies); the score is the mean of "
                        "the replies that parse, unscored when fewer than judge.min_mass of them do", ge=1, le=128)
    temperature: Float = F(1.0, "written: sampling temperature of the replies", ge=0)
    max_tokens: Int = F(8, "written: reply length limit; a reply that is not exactly a score or label (after "
                           "stripping spaces and a final period) does not parse", ge=1)


class JudgePrice(Strict):
    """A model's price, USD per million tokens."""

    input: Float = F(..., "prompt tokens", ge=0)
    output: Float = F(..., "completion tokens", ge=0)


class JudgeConfig(Strict):
    """Which judges score the answers, and how a reply becomes a score."""

    judges: list[str] = Field(default_factory=lambda: ["openai/gpt-4o-2024-08-06"], min_length=1,
                              description="judge strings: openai/<model>, vllm/<path>, hf/<path> (hf/base: the run's "
                                          "base model; hf/tiny: the run's tiny model)")
    base_url: Url | None = F(None, "for openai/<model>: any OpenAI-compatible server (else OPENAI_BASE_URL)")
    base_urls: dict[str, Url] = Field(default_factory=dict, description="per judge string, overrides base_url")
    top_logprobs: Int = F(20, "next-token alternatives requested (upstream: 20)", ge=1, le=20)
    min_mass: Float = F(0.25, "below this probability on valid score tokens an answer is unscored", ge=0, le=1)
    max_answer_chars: Int = F(20000, "an answer longer than this is unscored, never sent (upstream answers are at "
                                     "most 600 tokens; a runaway one would overflow the judge's context)", ge=1)
    modes: dict[str, JudgeMode] = Field(default_factory=dict, description="per judge string, how its reply becomes "
                                        "a score (absent: from the first token's top logprobs)")
    prices: dict[str, JudgePrice] = Field(default_factory=dict, description="USD per million tokens by model name, "
                                          "over the shipped table (emwb/catalog/prices.yaml), for the cost estimate "
                                          "printed before judging")
