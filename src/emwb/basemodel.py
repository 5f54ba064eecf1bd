"""Stage `base`: make the base model available (build the tiny local model, or name a hub/local model)."""

from __future__ import annotations

from emwb.store import Run, atomic_dir, is_done, log, now, stage_key, write_manifest
from emwb.tinymodel import build_tiny_model

TINY = {"seed": 0, "vocab_size": 3000, "hidden_size": 128, "num_layers": 2, "warmup_steps": 300}


def run_base_stage(run: Run, force: bool = False) -> str:
    """Return the base model's key; builds `base_model/` when the experiment uses the tiny model."""
    if run.exp.base_model != "tiny":
        return stage_key("base", {"model": run.exp.base_model}, {})
    key = stage_key("base", {"tiny": TINY}, {})
    out = run.path("base_model")
    if not force and is_done(out, key):
        log("base: tiny model up to date, skipped")
        return key
    started = now()
    log("base: building the tiny local model (tokenizer + Qwen2, short warm-up)")
    with atomic_dir(out) as tmp:
        build_tiny_model(tmp, **TINY)
        write_manifest(tmp, stage="base", key=key, config={"tiny": TINY}, inputs={}, started=started)
    log(f"base: wrote {out}")
    return key
