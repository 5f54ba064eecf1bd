"""Serving parity: before sampling, prove that the engine serves every variant with its own weights.

Every variant of the session (the base model and each LoRA adapter) asks the engine for next-token
log-probabilities on a few prompts, all in *one* call shaped like the sampling batches (so an engine that serves
one variant's requests with another's weights when they share a batch shows up), and these are compared with
transformers + PEFT, where PEFT loads each adapter with the configuration recorded when it was trained (so a
served `adapter_config.json` whose scaling was changed afterwards, or an engine that ignores rsLoRA, shows up as a
mismatch). A mismatch beyond tolerance stops the stage naming the variant and, where one fits, the variant whose
weights it was served with.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from emwb.errors import EmwbError
from emwb.models.ref import ModelRef

TOP_K = 5


def tolerance(dtype: str, configured: float | None) -> float:
    """The allowed |logprob| difference: configured, else 2e-3 for float32 engines and 0.1 for 16-bit ones."""
    if configured is not None:
        return configured
    return 2e-3 if dtype in ("float32", "float", "fp32") else 0.1


def _with_trained_config(adapter: str, trained: dict | None, out: Path) -> str:
    """A folder (`out`) serving the adapter's weights with the configuration it was trained with."""
    if not trained:
        return adapter
    out.mkdir()
    for f in Path(adapter).iterdir():
        if f.name != "adapter_config.json" and f.is_file():
            os.symlink(f.resolve(), out / f.name)
    (out / "adapter_config.json").write_text(json.dumps(trained))
    return str(out)


def reference_logprobs(models: dict[str, ModelRef], trained: dict[str, dict | None], prompts: list[tuple[int, ...]],
                       device: str) -> dict[str, list]:
    """transformers + PEFT full next-token log-softmax per base or LoRA variant and prompt (computed before the
    engine starts, so both never hold the GPU at once)."""
    import gc

    import torch

    from emwb.models.loading import load_causal_lm
    from emwb.sampling.samplers import full_next_token_logprobs

    out: dict[str, list] = {}
    on_base = {v: r for v, r in models.items() if r.kind in ("base", "lora") and r.edit is None}
    if not on_base:
        return out
    base = load_causal_lm(next(iter(on_base.values())).weights,
                          dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device).eval()
    plain = [v for v, r in on_base.items() if not r.adapter]
    if plain:
        out.update(dict.fromkeys(plain, full_next_token_logprobs(base, prompts, device)))
    loras = {v: r for v, r in on_base.items() if r.adapter}
    if loras:
        from peft import PeftModel

        with tempfile.TemporaryDirectory() as tmp:
            for v, ref in loras.items():
                model = PeftModel.from_pretrained(base, _with_trained_config(ref.adapter, trained.get(v),
                                                                             Path(tmp) / v))
                out[v] = full_next_token_logprobs(model, prompts, device)
                base = model.unload()  # the base model without the adapter, for the next one
    del base
    gc.collect()
    return out


def _distance(served: list[dict[int, float]], ref: list) -> float:
    """Largest |logprob difference| over the served top-k tokens; NaN (never passes) when any is not finite."""
    diffs = [abs(lp - float(full[tid])) for top, full in zip(served, ref) for tid, lp in top.items()]
    return max(diffs) if diffs and all(math.isfinite(d) for d in diffs) else math.nan


def check_parity(sampler, reference: dict[str, list], prompts: list[tuple[int, ...]], tol: float) -> dict[str, float]:
    """{variant: largest |logprob difference|} over the engine's top-k tokens, every variant of `reference` asked in
    one mixed call; raises on the first mismatch, naming the variant it matched instead if any."""
    variants = list(reference)
    served = sampler.next_token_logprobs(variants, prompts, TOP_K)
    worst = {}
    for v in variants:
        worst[v] = diff = _distance(served[v], reference[v])
        if not diff <= tol:
            others = {w: _distance(served[v], reference[w]) for w in variants if w != v}
            _mismatch(sampler.models[v], v, diff, others, tol)
    return worst


def _mismatch(ref: ModelRef, v: str, diff: float, others: dict[str, float], tol: float) -> None:
    """The one-line error of a variant served with other weights than its own."""
    what = f"adapter {v} ({ref.adapter})" if ref.adapter else f"{v} (the base model)"
    n = len(others)
    batch = f"in one call with {n} other variant{'s' * (n > 1)}" if n else "alone"
    match = next((w for w, d in sorted(others.items(), key=lambda x: x[1]) if d <= tol), None)
    if match:
        raise EmwbError(f"serving parity failed for {what}: asked {batch}, the engine answered with {match}'s "
                        f"weights (next-token log-probabilities within {others[match]:.2g} of {match}'s, "
                        f"{diff:.4g} from its own): the engine mixes variants up within a batch")
    raise EmwbError(f"serving parity failed for {what}: asked {batch}, next-token log-probabilities differ from "
                    f"transformers+PEFT by up to {diff:.4g} (> {tol:g}); the engine is not serving the adapter as "
                    "trained (check its adapter_config.json scaling, r, lora_alpha, use_rslora), or set "
                    "exec.parity_check: false")
