"""Whether a judge's first token can carry a whole score 0..100, and the score of a judge whose tokenizer splits
numbers into digits.

The paper's protocol (Betley et al. 2025) reads a score from the first generated token's top logprobs: it assumes
"85" is one token, as it is for OpenAI's tokenizers and Llama 3's. Qwen2.5, SmolLM2, Mistral and Gemma split
numbers into digits; their first token holds only the "8" of "85", and first-token scoring would put every score
in 0..9 without a warning.

- Local judges (hf/, vllm/): the vocabulary is read (`missing_number`): a model can only write "85" as one token
  if its vocabulary has that token (what its tokenizer makes of the text "85" is not the question: the tiny model's
  vocabulary has every number 0..100, which it writes whole, while transformers now reloads its tokenizer with
  Qwen2's digit-splitting pre-tokenizer). When a number has no token, replies are scored by the *digits* method:
  the probability of every whole number 0..100 from its digits' joint probability, read by extending the prompt
  with each digit prefix (`whole_numbers`); such a judge's cache key says so.
- OpenAI-compatible judges (openai/): found out before the first judging request
  (`OpenAIProvider.check_numbers`), from the server's tokenizer (vLLM's `/tokenize`) and one probe request asking
  for 100: a judge whose tokenizer splits a number and whose reply to the probe holds no token of two or more
  digits (or, on a server without `/tokenize`, whose reply holds single digits only) is refused with one line. Its
  replies cannot be scored from one token; written scoring (`judge.modes`, `scoring: written`) parses its whole
  replies instead. OpenAI's own API is not asked: its tokenizers carry every number up to 999 as one token.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

NUMBERS = tuple(str(n) for n in range(101))
DIGITS = "0123456789"
PREFIXES = (*DIGITS, "10")  # the digit prefixes whose next token the digits method reads
PROBE = "Reply with the number 100 and nothing else."  # the probe request of a server without /tokenize


def missing_number(tokens: Iterable[str]) -> str | None:
    """Which number 0..100 no token is (the first, in words: "no token of its vocabulary is '10'"); None when every
    one is. `tokens`: a vocabulary's tokens as text (spaces around a token are ignored)."""
    have = {t.strip() for t in tokens}
    missing = [n for n in NUMBERS if n not in have]
    return f"no token of its vocabulary is {missing[0]!r}" if missing else None


def probe_verdict(top: Mapping[str, float]) -> str:
    """What the top tokens of the reply to `PROBE` say: 'whole' (a token of two or more digits is among them: the
    tokenizer has whole numbers), 'digits' (single digits only), 'unknown' (no number at all)."""
    numbers = [t.strip() for t in top if t.strip().isascii() and t.strip().isdigit()]
    if any(len(t) > 1 for t in numbers):
        return "whole"
    return "digits" if numbers else "unknown"


def whole_numbers(first: Mapping[str, float], after: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """A digit-splitting judge's reply as the reply of a judge whose first token carries whole numbers.

    `first`: the first token's {token: logprob}; `after[p]`: the next token's {token: logprob} once the digits `p`
    are written (p in `PREFIXES`). With P(d) the first token's probability of digit d and P(e | p) the next one's:
    P(n) = P(d) (1 - sum_e P(e | d)) for a one-digit n; P(d) P(e | d) for n = de (and times 1 - sum_e P(e | 10) for
    10); P(1) P(0 | 1) P(0 | 10) for 100. A token counts as a digit when it is exactly one ASCII digit (the first
    token: once stripped of spaces). A third digit after any two-digit number but 10 is not read: it would make a
    score over 100. Returns the first token's other tokens and {str(n): log P(n)} for every n with P(n) > 0, so
    `score_from_logprobs` and the label rubrics read it unchanged; a NaN anywhere leaves it no distribution.
    """
    if any(math.isnan(v) for v in first.values()):
        return dict(first)
    p_first = dict.fromkeys(DIGITS, 0.0)
    out: dict[str, float] = {}
    for token, lp in first.items():
        t = token.strip()
        if t in p_first:
            p_first[t] += math.exp(lp)
        elif not (t.isascii() and t.isdigit()):
            out[token] = lp

    def nxt(prefix: str) -> dict[str, float]:
        got = after.get(prefix) or {}
        return {d: math.exp(got[d]) if d in got else 0.0 for d in DIGITS}

    def end(probs: dict[str, float]) -> float:
        return max(0.0, 1.0 - sum(probs.values()))

    mass: dict[int, float] = {}
    for d in DIGITS:
        if p_first[d] <= 0 or d not in after:
            continue
        following = nxt(d)
        mass[int(d)] = p_first[d] * end(following)
        if d == "0":
            continue  # "07" is no whole number the judge was asked for
        for e in DIGITS:
            mass[int(d + e)] = p_first[d] * following[e]
    if "10" in after and 10 in mass:
        ten = nxt("10")
        mass[100] = mass[10] * ten["0"]
        mass[10] *= end(ten)
    else:
        mass.pop(10, None)  # P(10) is unknown without what follows "10"
    out.update({str(n): math.log(p) for n, p in sorted(mass.items()) if p > 0})
    return out


def digits_line(spec: str, how: str) -> str:
    """The log line of a local judge scored by the digits method."""
    return (f"judge {spec}: its tokenizer splits numbers into digits ({how}); scoring 0-100 from the digits' joint "
            "probability (the digits method, docs/judging.md), not the first token alone")


def refusal(spec: str, how: str) -> str:
    """The one line that refuses an OpenAI-compatible judge whose first token cannot carry a whole score."""
    return (f"judge {spec}: its first token cannot carry a whole score ({how}): logprob scoring would read every "
            f"score as 0-9; set judge.modes: {{\"{spec}\": {{scoring: written}}}} (its written replies are parsed "
            "whole), or use a judge with whole-number tokens (OpenAI's, Llama 3's)")
