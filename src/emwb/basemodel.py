"""Stage `base`: make the base model available (build the tiny local model, or name a hub/local model)."""

from __future__ import annotations

from emwb.errors import EmwbError, first_line
from emwb.store import Artifact, Run, log, stage_key
from emwb.tinymodel import build_tiny_model

TINY = {"seed": 0, "vocab_size": 3000, "hidden_size": 128, "num_layers": 2, "warmup_steps": 300}


def _load(kind: str, name: str, loader, **kwargs):
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise EmwbError(f"cannot load the {kind} of model {name!r}: {first_line(exc)} (check the name or path, "
                        "Hugging Face access, or HF_HUB_OFFLINE with a local copy)") from None


def load_tokenizer(name: str):
    """AutoTokenizer.from_pretrained, with a one-line error when the model cannot be found."""
    from transformers import AutoTokenizer

    return _load("tokenizer", name, AutoTokenizer.from_pretrained)


def load_causal_lm(name: str, **kwargs):
    """AutoModelForCausalLM.from_pretrained, with a one-line error when the model cannot be found."""
    from transformers import AutoModelForCausalLM

    return _load("weights", name, AutoModelForCausalLM.from_pretrained, **kwargs)


def run_base_stage(run: Run, force: bool = False) -> str:
    """Return the base model's key; builds `base_model/` when the experiment uses the tiny model."""
    if run.exp.base_model != "tiny":
        return stage_key("base", {"model": run.exp.base_model}, {})
    art = Artifact(run.path("base_model"), "base", {"tiny": TINY}, {})
    if art.skip(force, "base: tiny model"):
        return art.key
    log("base: building the tiny local model (tokenizer + Qwen2, short warm-up)")
    with art.write() as (tmp, _):
        build_tiny_model(tmp, **TINY)
    log(f"base: wrote {art.dir}")
    return art.key
