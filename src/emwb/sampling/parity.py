"""Serving parity: before sampling, prove that the engine serves the adapter that was trained.

For every LoRA adapter, next-token log-probabilities on a few prompts from the sampling engine are compared
with transformers + PEFT, where PEFT loads the adapter with the configuration recorded when it was trained
(so a served `adapter_config.json` whose scaling was changed afterwards, or an engine that ignores rsLoRA,
shows up as a mismatch). A mismatch beyond tolerance stops the stage naming the adapter.
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
    """transformers + PEFT full next-token log-softmax per LoRA variant and prompt (computed before the engine
    starts, so both never hold the GPU at once)."""
    import gc

    import torch

    from emwb.models.loading import load_causal_lm
    from emwb.sampling.samplers import full_next_token_logprobs

    out: dict[str, list] = {}
    loras = {v: r for v, r in models.items() if r.adapter}
    if not loras:
        return out
    from peft import PeftModel

    base = load_causal_lm(next(iter(loras.values())).weights,
                          dtype=torch.bfloat16 if device == "cuda" else torch.float32).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        for v, ref in loras.items():
            model = PeftModel.from_pretrained(base, _with_trained_config(ref.adapter, trained.get(v), Path(tmp) / v))
            out[v] = full_next_token_logprobs(model, prompts, device)
            base = model.unload()  # the base model without the adapter, for the next one
    del base
    gc.collect()
    return out


def check_parity(sampler, reference: dict[str, list], prompts: list[tuple[int, ...]], tol: float) -> dict[str, float]:
    """{variant: largest |logprob difference|} over the engine's top-k tokens; raises on the first mismatch."""
    worst = {}
    for v, ref in reference.items():
        served = sampler.next_token_logprobs(v, prompts, TOP_K)
        diffs = [abs(lp - float(full[tid])) for top, full in zip(served, ref) for tid, lp in top.items()]
        diff = max(diffs) if diffs and all(math.isfinite(d) for d in diffs) else math.nan  # NaN never passes
        worst[v] = diff
        if not diff <= tol:
            raise EmwbError(f"serving parity failed for adapter {v} ({sampler.models[v].adapter}): next-token "
                            f"log-probabilities differ from transformers+PEFT by up to {diff:.4g} (> {tol:g}); "
                            "the engine is not serving the adapter as trained (check its adapter_config.json "
                            "scaling, r, lora_alpha, use_rslora), or set exec.parity_check: false")
    return worst
