"""Feature cards: for chosen latents, the tokens of the stream they fire on most (one per text), each shown in a
window of its text with every token's activation, and the latent's firing rate on the stream."""

from __future__ import annotations

import numpy as np

from emwb.models.token_activations import token_span


def _positions(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each token's position in its text, where its text's run of tokens starts, the run's length) in a chunk
    whose texts' tokens lie together."""
    n = len(owner)
    idx = np.arange(n)
    new = np.r_[True, owner[1:] != owner[:-1]] if n else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(new, idx, 0))
    ends = np.r_[np.flatnonzero(new)[1:], n]
    length = np.repeat(ends - np.flatnonzero(new), np.diff(np.r_[np.flatnonzero(new), n]))
    return idx - start, start, length


def top_contexts(sae, chunks, latents: list[int], per_latent: int = 5, window: int = 12) -> dict[int, list[dict]]:
    """{latent: up to `per_latent` contexts, strongest first}: each {text, position, act, lo, acts (the latent's
    activation on the window's tokens lo...)}, one per text."""
    import torch

    best: dict[int, list[dict]] = {j: [] for j in latents}
    cols = torch.as_tensor(latents, dtype=torch.long)
    with torch.no_grad():
        for c in chunks:
            if not len(c.acts):
                continue
            z = sae.encode(torch.from_numpy(c.acts.astype(np.float32)))[:, cols].numpy()
            pos, start, length = _positions(c.items)
            for k, j in enumerate(latents):
                found = best[j]
                for t in np.argsort(-z[:, k], kind="stable")[: per_latent * 4]:
                    if z[t, k] <= 0 or any(f["text"] == int(c.items[t]) for f in found):
                        continue
                    lo, hi = max(0, pos[t] - window), min(length[t], pos[t] + window + 1)
                    found.append({"text": int(c.items[t]), "position": int(pos[t]), "act": float(z[t, k]),
                                  "lo": int(lo), "acts": [float(a) for a in z[start[t] + lo: start[t] + hi, k]]})
                found.sort(key=lambda f: -f["act"])
                del found[per_latent:]
    return best


def cards(sae, chunks, latents: list[int], texts: list, tok, max_tokens: int, firing: np.ndarray,
          per_latent: int = 5, window: int = 12) -> list[dict]:
    """A card per latent: its firing rate on the stream and its top contexts as decoded tokens with activations."""
    found = top_contexts(sae, chunks, latents, per_latent, window)
    out = []
    for j in latents:
        contexts = []
        for f in found[j]:
            prompt, text = texts[f["text"]]
            ids, start = token_span(tok, prompt, text, max_tokens)
            answer = ids[start:]
            window_ids = answer[f["lo"]: f["lo"] + len(f["acts"])]
            contexts.append({"text": f["text"], "prompt": (prompt or "")[:160], "act": f["act"],
                             "position": f["position"], "tokens": [tok.decode([i]) for i in window_ids],
                             "acts": f["acts"]})
        out.append({"latent": int(j), "firing_rate": float(firing[j]), "contexts": contexts})
    return out
