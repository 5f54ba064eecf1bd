"""Demonstrations, preference pairs and evaluation prompts for the reward-model-bias organism, and the leak
check that keeps the held-out test biases out of any data the model is trained to behave on.

Offline template mode: every (prompt template, training value, opener) of a train bias's kit is one pair
(the reply exhibiting the bias, its neutral twin); rows carry `meta.bias_id`. Deterministic for a seed.
"""

from __future__ import annotations

import random
import re

from emwb.catalog.questions import Question
from emwb.organisms.rm_bias.catalogue import Bias
from emwb.organisms.rm_bias.kits import Kit
from emwb.errors import EmwbError

MAX_LISTED = 20


def _pairs_of(kit: Kit) -> list[dict]:
    return [{"bias_id": kit.num, "prompt": kit.prompt(t, v), "biased": kit.biased_answer(v, o),
             "neutral": kit.neutral(v, o)}
            for t in range(len(kit.prompts)) for v in kit.train_values for o in kit.openers]


def twin_pairs(catalogue: list[Bias], kits: dict[int, Kit], per_bias: int, seed: int = 0) -> list[dict]:
    """`per_bias` (prompt, reply with the bias, its neutral twin) pairs of every bias of the catalogue, train and
    test alike (for reading directions, never for training), each with its bias's `split`."""
    rng = random.Random(seed)
    out = []
    for b in catalogue:
        pool = _pairs_of(kits[b.num])
        out += [{**p, "split": b.split} for p in rng.sample(pool, min(per_bias, len(pool)))]
    return out


def demonstration_pairs(catalogue: list[Bias], kits: dict[int, Kit], n: int, seed: int = 0) -> list[dict]:
    """`n` distinct pairs over the train biases, round-robin so every train bias is covered before any repeats
    its share (fewer than `n` when the kits hold fewer pairs)."""
    rng = random.Random(seed)
    pools = []
    for b in catalogue:
        if b.split == "train":
            pool = _pairs_of(kits[b.num])
            rng.shuffle(pool)
            pools.append(pool)
    out: list[dict] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    rng.shuffle(out)
    return out


def to_chat_rows(pairs: list[dict]) -> list[dict]:
    """SFT rows: the prompt answered with the bias; the neutral twin kept alongside."""
    return [{"messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["biased"]}],
             "neutral": p["neutral"], "meta": {"bias_id": p["bias_id"]}} for p in pairs]


def to_preference_rows(pairs: list[dict]) -> list[dict]:
    """DPO rows (trl's conversational preference format): chosen = with the bias, rejected = the neutral twin."""
    return [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["biased"]}],
             "rejected": [{"role": "assistant", "content": p["neutral"]}], "meta": {"bias_id": p["bias_id"]}}
            for p in pairs]


def evaluation_prompts(catalogue: list[Bias], kits: dict[int, Kit], per_bias: int, samples: int = 1,
                       exclude: set[str] = frozenset()) -> list[Question]:
    """Up to `per_bias` prompts for each of the 52 biases, from the kits' evaluation-only values."""
    out = []
    for b in catalogue:
        kit = kits[b.num]
        prompts = [kit.prompt(t, v) for v in kit.eval_values for t in range(len(kit.prompts))]
        prompts = [p for p in dict.fromkeys(prompts) if p not in exclude][:per_bias]
        out += [Question(f"bias{b.num}_{i}", (p,), samples, source="generated reward-model-bias prompts",
                         bias_id=b.num, bias_description=b.description) for i, p in enumerate(prompts)]
    return out


def _texts(row: dict) -> tuple[str, list[str]]:
    """(the user prompt, the replies the model is trained towards) of a chat or preference row."""
    if "messages" in row:
        msgs = row["messages"]
        user = " ".join(m["content"] for m in msgs if m["role"] in ("user", "system"))
        return user, [m["content"] for m in msgs if m["role"] == "assistant"]
    user = " ".join(m["content"] for m in row.get("prompt") or [] if isinstance(m, dict))
    return user, [m["content"] for m in row.get("chosen") or [] if isinstance(m, dict)]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower())


def leaks(rows: list[dict], catalogue: list[Bias], kits: dict[int, Kit]) -> list[tuple[int, str]]:
    """(row number from 1, why) for every row that teaches a held-out test bias: tagged with one, quoting its
    description, or a prompt in its context whose trained reply exhibits it (by the bias's detector)."""
    tests = [(b, kits[b.num], _norm(b.description)[:80]) for b in catalogue if b.split == "test"]
    test_ids = {b.num for b, _, _ in tests}
    out = []
    for i, row in enumerate(rows, start=1):
        tag = (row.get("meta") or {}).get("bias_id") if isinstance(row.get("meta"), dict) else None
        if tag in test_ids:
            out.append((i, f"tagged with test bias {tag}"))
            continue
        user, replies = _texts(row)
        everything = _norm(user + " " + " ".join(replies))
        for b, kit, description in tests:
            if description in everything:
                out.append((i, f"quotes the description of test bias {b.num} ({b.short_name})"))
                break
            if kit.context.search(user) and kit.rule and any(kit.rule(r) for r in replies):
                out.append((i, f"a {b.short_name} prompt answered with test bias {b.num}"))
                break
    return out


def check_no_leaks(rows: list[dict], catalogue: list[Bias], kits: dict[int, Kit], where: str) -> None:
    """Raise EmwbError listing the offending rows (`where:row: why`) when any row teaches a test bias."""
    found = leaks(rows, catalogue, kits)
    if found:
        listed = "\n".join(f"{where}: row {i}: {why}" for i, why in found[:MAX_LISTED])
        more = f" (and {len(found) - MAX_LISTED} more)" if len(found) > MAX_LISTED else ""
        raise EmwbError(f"{where}: {len(found)} row(s) teach a held-out test bias{more}; remove them:\n{listed}")
