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


def screen_scores(model_path: str, rows: list[dict], arrays: dict, layers: list[int], device: str = "cpu",
                  max_answer_tokens: int = 256) -> list[float]:
    """Each chat row's projection on the direction: its assistant reply's tokens, read by the model at
    `model_path` after its first user turn, averaged, projected on the unit direction per layer in units of
    the layer's mean residual norm, averaged over `layers` (empty: every layer of the direction)."""
    import numpy as np

    from emwb.models.activations import collect_activations
    from emwb.models.interventions import direction_layers

    layers = list(layers) or direction_layers(arrays)
    items = []
    for r in rows:
        messages = r.get("messages")
        if not isinstance(messages, list):
            raise EmwbError(f"{r.get(SOURCE, 'a row')}: screening reads chat rows (messages)")
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        items.append((user, "\n".join(m["content"] for m in messages if m["role"] == "assistant")))
    acts = collect_activations(model_path, items, layers, device=device, max_answer_tokens=max_answer_tokens,
                               desc="screening").astype(np.float64)
    per_layer = []
    for k, layer in enumerate(layers):
        unit = np.asarray(arrays[f"direction.{layer}"], dtype=np.float64)
        per_layer.append(acts[:, k] @ (unit / np.linalg.norm(unit)) / float(arrays[f"norm.{layer}"]))
    return [float(x) for x in np.mean(per_layer, axis=0)]


def screened(rows: list[dict], scores: list[float], drop_fraction: float | None,
             above: float | None) -> tuple[list[dict], list[dict]]:
    """(kept rows, dropped {source, score}): the `drop_fraction` share with the highest scores (ties: the later
    row first), or every row scoring above `above`."""
    order = sorted(range(len(rows)), key=lambda i: (-scores[i], -i))
    if drop_fraction is not None:
        drop = set(order[:round(len(rows) * drop_fraction)])
    else:
        drop = {i for i in range(len(rows)) if scores[i] > above}
    kept = [r for i, r in enumerate(rows) if i not in drop]
    dropped = [{"source": rows[i].get(SOURCE), "score": scores[i]} for i in order if i in drop]
    return kept, dropped
