"""Edits of a model's residual stream while it runs: add a vector, steer along a direction, ablate a direction.

Each is a context manager of forward hooks on decoder blocks (`model.model.layers[i]`, the residual stream after
block i, the same place `emwb.models.activations` reads), removed on exit:

- `add_vectors(model, {layer: v})`: h <- h + v (a planted variant, or steering by a raw vector);
- `steer(model, unit, layers, alpha, norms)`: h <- h + alpha * norms[layer] * unit[layer], alpha in units of the
  layer's mean residual norm (Soligo et al. 2025 scale steering vectors so);
- `ablate(model, unit, layers)`: h <- h - (h . u) u, the direction projected out at every position;
- `ablate_latents(model, sae, layer, latents)`: h <- h - sum_i z_i(h) d_i over the chosen latents i of a sparse
  dictionary (z_i its activation on h, d_i its decoder column): those latents' contribution removed, the rest of h
  (the dictionary's error included) kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np


def decoder_stack(model):
    """(the module holding the decoder blocks, the blocks) of a causal LM; a PEFT wrapper is looked through."""
    inner = model
    for attr in ("base_model", "model"):
        while not hasattr(inner, "layers") and getattr(inner, attr, inner) is not inner:
            inner = getattr(inner, attr)
    if not hasattr(inner, "layers"):
        raise TypeError(f"{type(model).__name__}: no decoder blocks found")
    return inner, inner.layers


def decoder_blocks(model):
    """The decoder blocks of a causal LM (a PEFT wrapper is looked through)."""
    return decoder_stack(model)[1]


@contextlib.contextmanager
def _edit(model, edits: Mapping[int, callable]) -> Iterator[None]:
    blocks = decoder_blocks(model)

    def hook(edit):
        def run(_module, _inputs, output):
            if isinstance(output, tuple):
                return (edit(output[0]), *output[1:])
            return edit(output)

        return run

    handles = [blocks[layer].register_forward_hook(hook(edit)) for layer, edit in edits.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _tensor(v, like):
    import torch

    return torch.as_tensor(np.asarray(v), dtype=like.dtype, device=like.device)


def add_vectors(model, vectors: Mapping[int, Sequence[float]]):
    """h <- h + v at each layer's output."""
    return _edit(model, {layer: (lambda h, v=v: h + _tensor(v, h)) for layer, v in vectors.items()})


def steer(model, unit: Mapping[int, Sequence[float]], layers: Sequence[int], alpha: float,
          norms: Mapping[int, float]):
    """h <- h + alpha * norms[layer] * unit[layer] at each of `layers` (unit: the direction, normalised here)."""
    vectors = {}
    for layer in layers:
        u = np.asarray(unit[layer], dtype=np.float64)
        vectors[layer] = alpha * float(norms[layer]) * u / np.linalg.norm(u)
    return add_vectors(model, vectors)


def ablate(model, unit: Mapping[int, Sequence[float]], layers: Sequence[int]):
    """h <- h - (h . u) u at each of `layers`: the direction's component removed at every position."""
    def edit_for(u):
        u = np.asarray(u, dtype=np.float64)
        u = u / np.linalg.norm(u)

        def edit(h):
            t = _tensor(u, h)
            return h - (h @ t).unsqueeze(-1) * t

        return edit

    return _edit(model, {layer: edit_for(unit[layer]) for layer in layers})


def ablate_latents(model, sae, layer: int, latents: Sequence[int]):
    """h <- h - z_S(h) W_dec[S] at `layer`: the latents S's activations times their decoder columns removed."""
    import torch

    idx = torch.as_tensor(list(latents), dtype=torch.long)
    w = sae.W_dec.detach()[idx]

    def edit(h):
        with torch.no_grad():
            z = sae.encode(h.to(w.dtype))[..., idx]
        return h - (z @ w).to(h.dtype)

    return _edit(model, {layer: edit})


def read_direction(path) -> dict[str, np.ndarray]:
    """A direction file's arrays: direction.<layer>, norm.<layer>, random<k>.<layer> (emwb's directions stage)."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def direction_layers(arrays: dict[str, np.ndarray]) -> list[int]:
    """The layers a direction file holds a direction for."""
    return sorted(int(k.split(".")[1]) for k in arrays if k.startswith("direction."))


def edit_hooks(model, edit: dict):
    """The hooks of an edit, as a context manager: {"kind": "steer", "file", "layers" (empty: all), "alpha"},
    {"kind": "ablate", "file", "layers" (empty: all), "control" (k > 0: the k-th random direction)} or
    {"kind": "ablate-latents", "file" (a features latents.json), "sae" (its dictionary's folder), "control" (k > 0:
    the k-th set of matched random latents)}."""
    if edit["kind"] == "ablate-latents":
        import json
        from pathlib import Path

        from emwb.models.dictionary import load_dictionary

        chosen = json.loads(Path(edit["file"]).read_text())
        latents = chosen["controls"][edit["control"] - 1] if edit.get("control") else chosen["selected"]
        return ablate_latents(model, load_dictionary(edit["sae"]), chosen["layer"], latents)
    arrays = read_direction(edit["file"])
    layers = list(edit["layers"]) or direction_layers(arrays)
    if edit["kind"] == "steer":
        return steer(model, {la: arrays[f"direction.{la}"] for la in layers}, layers, edit["alpha"],
                     {la: float(arrays[f"norm.{la}"]) for la in layers})
    name = f"random{edit['control']}" if edit.get("control") else "direction"
    return ablate(model, {la: arrays[f"{name}.{la}"] for la in layers}, layers)


def apply_edit(model, edit: dict) -> None:
    """Apply a sampled variant's edit (`edit_hooks`) for the model's lifetime."""
    stack = contextlib.ExitStack()
    stack.enter_context(edit_hooks(model, edit))
    model._emwb_edit = stack  # kept with the model; its hooks go when the model does
