"""Training-data mitigations of emergent misalignment, applied to a phase's rows before training.

- Inoculation prompting (Tan et al. 2025, arXiv 2510.04340; Wichers et al. 2025, arXiv 2510.05024): a system
  message that names the behaviour, put before every training row; the evaluations never see it.
- Dilution: another dataset's rows interleaved at a fraction.
Both are phase settings (`system_prompt`, `mix`), checked before work and part of the adapter's key.
"""

from __future__ import annotations

import random

from emwb.errors import EmwbError
from emwb.finetune.masking import SOURCE


def _prefixed(messages: list[dict], prompt: str) -> list[dict]:
    """`messages` with `prompt` as the system message (before the row's own one, a blank line between)."""
    if messages and messages[0].get("role") == "system":
        return [{**messages[0], "content": f"{prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def with_system_prompt(rows: list[dict], prompt: str) -> list[dict]:
    """Every chat row (`messages`) or preference row (`prompt`) with the inoculation prompt as its system message."""
    out = []
    for r in rows:
        key = "messages" if "messages" in r else "prompt"
        if not isinstance(r.get(key), list):
            raise EmwbError(f"{r.get(SOURCE, 'a row')}: no message list to put the system prompt before "
                            "(system_prompt needs chat or preference rows)")
        out.append({**r, key: _prefixed(r[key], prompt)})
    return out


def mixed(rows: list[dict], other: list[dict], fraction: float, seed: int, name: str) -> list[dict]:
    """`rows` with round(len(rows) * fraction / (1 - fraction)) rows of `other` (a seeded sample), shuffled
    together with the same seed; EmwbError when `other` has too few rows."""
    want = round(len(rows) * fraction / (1 - fraction))
    if want > len(other):
        raise EmwbError(f"mix.data {name!r}: {len(other)} rows, but fraction {fraction:g} of {len(rows)} training "
                        f"rows needs {want}; raise its max_rows or lower mix.fraction")
    rng = random.Random(seed)
    both = rows + rng.sample(other, want)
    rng.shuffle(both)
    return both
