"""Batched sampling with transformers (`sampling.hf_batch` above 1).

On a CPU, decoding one sequence reads every weight once per token, so the time is the memory traffic; decoding
many sequences together costs little more than one. Requests go in fixed groups of `hf_batch` consecutive
prompts (the sample stage's chunks start at multiples of it, so a group never depends on the run-only chunk
size), left-padded, with an attention mask and each row's own positions. Each request's k-th sample is drawn from
its own generator seeded with the request's seed + k, so the other rows of its group change nothing but the
rounding of the batched products. Rows leave the batch, and its cache, when they end their turn. Temperature and
top_p are applied as transformers' warpers apply them; top_k, repetition penalties and min_p are not supported
here (the checks before work say so).
"""

from __future__ import annotations

from collections.abc import Sequence


def next_token(logits, generator, temperature: float, top_p: float) -> int:
    """One token from a row's logits: greedy at temperature 0, else temperature, then top_p (the smallest set
    of tokens whose probability reaches top_p, as transformers' TopPLogitsWarper keeps), then a draw."""
    import torch

    if temperature == 0:
        return int(logits.argmax())
    scores = logits / temperature
    if top_p < 1:
        ordered, order = torch.sort(scores)
        drop = ordered.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[-1] = False
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def _left_padded(prompts: Sequence[Sequence[int]], pad: int):
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def sample_rows(model, eos: int, pad: int, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
                max_new_tokens: int, temperature: float, top_p: float, device: str = "cpu",
                record: list | None = None) -> list[list[int]]:
    """Each row's answer tokens (eos last when it ended its turn); with `record`, each row's (token,
    log-probability) pairs are appended to record[row] as they are drawn."""
    import torch
    from transformers import DynamicCache

    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    ids, mask, pos = _left_padded(prompts, pad)
    cache, alive = DynamicCache(), list(range(len(prompts)))
    out: list[list[int]] = [[] for _ in prompts]
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                           past_key_values=cache, use_cache=True).logits[:, -1, :].float().cpu()
        keep = []
        for k, row in enumerate(alive):
            t = next_token(logits[k], gens[row], temperature, top_p)
            out[row].append(t)
            if record is not None:
                record[row].append((t, float(logits[k].log_softmax(-1)[t])))
            if t != eos:
                keep.append(k)
        if not keep:
            break
        sel = torch.tensor(keep)
        if len(keep) < len(alive):
            cache.batch_select_indices(sel.to(device))
            alive = [alive[k] for k in keep]
        mask = torch.cat([mask[sel], torch.ones(len(keep), 1, dtype=mask.dtype)], dim=1)
        pos = pos[sel, -1:] + 1
        ids = torch.tensor([[out[row][-1]] for row in alive])
    return out


def sample_batched(model, tok, requests: Sequence, batch: int, max_new_tokens: int, temperature: float,
                   top_p: float, device: str = "cpu") -> list[list[tuple[str, str, int]]]:
    """Every request's `n` samples as (text, finish reason, answer tokens), `batch` consecutive requests (objects
    with `token_ids`, `n` and `seed`, as the samplers' `Request`) at a time."""
    from tqdm import tqdm

    eos, pad = tok.eos_token_id, tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[list[tuple[str, str, int]]] = []
    with tqdm(total=len(requests), desc=f"sample (groups of {batch} prompts)", unit="prompt", mininterval=2.0) as bar:
        for s in range(0, len(requests), batch):
            group = requests[s:s + batch]
            rows = [(r, k) for r in group for k in range(r.n)]
            got = sample_rows(model, eos, pad, [r.token_ids for r, _ in rows], [r.seed + k for r, k in rows],
                              max_new_tokens, temperature, top_p, device)
            samples = []
            for toks in got:
                done = bool(toks) and toks[-1] == eos
                toks = toks[:-1] if done else toks
                samples.append((tok.decode(toks, skip_special_tokens=True), "stop" if done else "length", len(toks)))
            for r in group:
                out.append(samples[:r.n])
                samples = samples[r.n:]
            bar.update(len(group))
    return out
