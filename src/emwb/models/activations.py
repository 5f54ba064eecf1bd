"""Residual-stream activations of a local model over (question, answer) conversations.

Per item and chosen layer, one vector: the output of that decoder block averaged over the answer's tokens (an
empty answer: the last prompt token), or, with `pooling="last_prompt_token"`, at the position just before the
answer (what the model holds before it writes). Nothing per token is kept. The conversation is the model's own chat
template: the prompt with its generation prompt, then the answer's tokens (at most `max_answer_tokens`).
Layers past the deepest one asked for are not run. Work goes in chunks saved as they finish (`ActivationStore`),
so a killed collection resumes without redoing finished chunks.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHUNK = 256


def conversation_ids(tok, question: str | None, answer: str, max_answer_tokens: int | None) -> tuple[list[int], int]:
    """(token ids of the conversation, index of the answer's first token); with question None, the answer is a
    plain text read alone (a document: no chat template)."""
    if question is None:
        return tok(answer, add_special_tokens=False).input_ids[:max_answer_tokens], 0
    prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                     add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False).input_ids
    a = tok(answer, add_special_tokens=False).input_ids if answer else []
    return p + a[:max_answer_tokens], len(p)


class ActivationStore:
    """Finished chunks of one collection in a folder: `<key>.npy`, written whole or not at all."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def get(self, key: str) -> np.ndarray | None:
        path = self.folder / f"{key}.npy"
        return np.load(path) if path.is_file() else None

    def put(self, key: str, arr: np.ndarray) -> None:
        from emwb.store import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, arr)
        atomic_write_bytes(self.folder / f"{key}.npy", buf.getvalue())


def collect_activations(model_path: str, items: Sequence[tuple[str, str]], layers: Sequence[int],
                        batch_size: int = 16, device: str = "cpu", max_answer_tokens: int | None = 256,
                        store: ActivationStore | None = None, fingerprint: str = "",
                        desc: str = "activations", model=None, pooling: str = "answer_mean") -> np.ndarray:
    """float32 [items, layers, hidden]: each item's answer-mean residual stream after each layer in `layers`.

    `model`: an already loaded model to read (under whatever hooks are active: a steered, ablated or planted
    variant), else the model at `model_path` is loaded (and run only up to the deepest layer asked for).
    `pooling`: answer_mean (the answer's tokens averaged) or last_prompt_token (the position before the answer)."""
    if pooling not in ("answer_mean", "last_prompt_token"):
        raise ValueError(f"pooling {pooling!r}: answer_mean or last_prompt_token")
    import torch
    from tqdm import tqdm

    from emwb.models.interventions import decoder_stack
    from emwb.models.loading import load_causal_lm, load_tokenizer

    tok = load_tokenizer(model_path)
    encoded = [conversation_ids(tok, q, a, max_answer_tokens) for q, a in items]
    order = sorted(range(len(items)), key=lambda i: len(encoded[i][0]))  # similar lengths batch together
    chunks = [order[s:s + CHUNK] for s in range(0, len(order), CHUNK)]
    setting = json.dumps({"model": fingerprint or model_path, "layers": list(layers), "max": max_answer_tokens,
                          **({"pooling": pooling} if pooling != "answer_mean" else {})})

    def key(chunk: list[int]) -> str:
        h = hashlib.sha256(setting.encode())
        for i in chunk:
            h.update(json.dumps(items[i]).encode())
        return h.hexdigest()[:32]

    out: np.ndarray | None = None
    base = decoder_stack(model)[0] if model is not None else None
    bar = tqdm(total=len(items), desc=desc, mininterval=1.0)
    for chunk in chunks:
        got = store.get(key(chunk)) if store else None
        if got is None:
            if base is None:
                model = load_causal_lm(model_path, dtype=torch.float32).to(device).eval()
                base, blocks = decoder_stack(model)
                base.layers = blocks[: max(layers) + 1]  # deeper blocks are never needed
            got = _forward_chunk(base, [encoded[i] for i in chunk], layers, batch_size,
                                 device if model is None else str(next(base.parameters()).device),
                                 tok.pad_token_id or 0, pooling)
            if store:
                store.put(key(chunk), got)
        if out is None:
            out = np.zeros((len(items), len(layers), got.shape[-1]), np.float32)
        out[chunk] = got
        bar.update(len(chunk))
    bar.close()
    return out if out is not None else np.zeros((0, len(layers), 0), np.float32)


def padded_batch(batch: list[tuple[list[int], int]], pad_id: int):
    """(input ids, attention mask) of conversations right-padded to the longest one."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for j, (x, _) in enumerate(batch):
        ids[j, : len(x)] = torch.tensor(x)
        mask[j, : len(x)] = 1
    return ids, mask


def _forward_chunk(base, encoded: list[tuple[list[int], int]], layers: Sequence[int], batch_size: int, device: str,
                   pad_id: int, pooling: str = "answer_mean") -> np.ndarray:
    import torch

    captured: dict[int, torch.Tensor] = {}
    hooks = [base.layers[layer].register_forward_hook(
        lambda _m, _i, o, layer=layer: captured.__setitem__(layer, o[0] if isinstance(o, tuple) else o))
        for layer in layers]
    rows = []
    try:
        for s in range(0, len(encoded), batch_size):
            batch = encoded[s:s + batch_size]
            ids, mask = padded_batch(batch, pad_id)
            pool = torch.zeros(ids.shape, dtype=torch.float32)
            for j, (x, start) in enumerate(batch):
                if pooling == "last_prompt_token":
                    pool[j, start - 1] = 1.0
                else:
                    lo = start if len(x) > start else len(x) - 1  # an empty answer: the last prompt token
                    pool[j, lo: len(x)] = 1.0 / (len(x) - lo)
            with torch.no_grad():
                base(input_ids=ids.to(device), attention_mask=mask.to(device))
            pooled = [torch.einsum("bt,btd->bd", pool.to(device), captured[layer].float()) for layer in layers]
            rows.append(torch.stack(pooled, dim=1).cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    return np.concatenate(rows).astype(np.float32)
