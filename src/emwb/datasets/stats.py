"""`emwb datasets stats`: rows, turns, token lengths, duplicates, prompts shared with a paired dataset."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from emwb.catalog.chatjsonl import validate_chat_jsonl


def dataset_path(name_or_path: str) -> Path:
    """A registered dataset name (fetched if needed) or a file path."""
    from emwb.catalog.fetch import fetch, load_registry

    return fetch(name_or_path) if name_or_path in load_registry() else Path(name_or_path)


def _prompt(row: dict) -> str:
    return json.dumps([m for m in row["messages"] if m["role"] != "assistant"], sort_keys=True)


def _percentiles(values: list[int]) -> dict[str, int]:
    v = sorted(values)
    pick = lambda q: v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": v[-1]}


def dataset_stats(name_or_path: str, tokenizer: str | None = None, pair: str | None = None) -> dict:
    path = dataset_path(name_or_path)
    rows = validate_chat_jsonl(path)
    turns = [len(r["messages"]) for r in rows]
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        lengths = [len(tok.apply_chat_template(r["messages"], tokenize=True)) for r in rows]
        unit = "tokens"
    else:
        lengths = [sum(len(m["content"].split()) for m in r["messages"]) for r in rows]
        unit = "words"
    full = Counter(json.dumps(r["messages"], sort_keys=True) for r in rows)
    prompts = Counter(_prompt(r) for r in rows)
    out = {
        "path": str(path), "rows": len(rows),
        "turns": {"min": min(turns), "mean": round(sum(turns) / len(turns), 2), "max": max(turns)},
        "roles": dict(Counter(m["role"] for r in rows for m in r["messages"])),
        f"length_{unit}": _percentiles(lengths),
        "duplicate_rows": sum(c - 1 for c in full.values()),
        "duplicate_prompts": sum(c - 1 for c in prompts.values()),
    }
    if pair:
        other = {_prompt(r) for r in validate_chat_jsonl(dataset_path(pair))}
        out["pair"] = {"with": pair, "shared_prompts": len(set(prompts) & other)}
    return out
