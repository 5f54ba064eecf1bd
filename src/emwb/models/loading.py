"""Loading models with transformers (+ peft), and the device policy."""

from __future__ import annotations

import json

from emwb.errors import EmwbError, first_line
from emwb.models.ref import ModelRef


def resolve_device(setting: str = "auto") -> str:
    """'cuda' when asked for or available under 'auto', else 'cpu'."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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


def load_ref(ref: ModelRef, device: str = "cpu", dtype=None):
    """(model in eval mode on `device`, tokenizer) for a local ModelRef; a LoRA adapter is applied with peft."""
    if ref.kind == "remote":
        raise EmwbError(f"model {ref.model_id!r} is remote: sample it with a remote sampler")
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = load_causal_lm(ref.weights, **kwargs)
    if ref.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ref.adapter)
    if ref.edit:
        from emwb.models.interventions import apply_edit

        apply_edit(model, json.loads(ref.edit))  # hooks for the model's lifetime
    return model.to(device).eval(), load_tokenizer(ref.weights)


def check_adapter(adapter_dir) -> None:
    """Stop with one line when a LoRA adapter's weights cannot be read (a truncated or damaged file) or hold a
    non-finite value: such an adapter is never sampled."""
    from pathlib import Path

    import torch

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        return  # another format (adapter_model.bin): peft reads it, and the parity check compares it
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged header or a short file
        raise EmwbError(f"{path}: damaged adapter ({first_line(exc)}); delete {path.parent} and re-run to "
                        "train it again") from None
    bad = [k for k, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise EmwbError(f"{path}: {len(bad)} adapter tensors hold non-finite values ({bad[0]}, ...); it is not "
                        f"sampled: delete {path.parent} and re-train with a lower learning rate")
