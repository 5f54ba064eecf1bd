"""Training throughput of the `paper-lora` recipe (LoRA r=32, alpha=64, rsLoRA, every projection; Betley et
al. 2025) on randomly initialised models of real shapes: emwb's trainer (trl's SFTTrainer, configured by
emwb.finetune.trainers) beside a plain PyTorch + PEFT loop, same shapes, same batches, same run.

    python benchmarks/train_throughput.py                     # GPU: Qwen2.5-0.5B and Qwen2.5-7B shapes, bf16
    python benchmarks/train_throughput.py --shapes tiny       # CPU: a tiny shape, to check the script runs

No weights are needed or downloaded. Prints tokens/s and peak GPU memory for each (shape, loop), then, last,
the ratio emwb / plain loop for each shape.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

SHAPES = {  # Qwen2.5 configurations (hidden, intermediate, layers, heads, kv heads, vocab), batch x sequence
    "qwen2.5-0.5b": dict(cfg=dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
                         batch=8, seq=1024, checkpointing=False),
    "qwen2.5-7b": dict(cfg=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                                num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
                       batch=4, seq=1024, checkpointing=True),
    "tiny": dict(cfg=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True),
                 batch=2, seq=64, checkpointing=False),
}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _model(shape: dict, device: str, seed: int = 0):
    """A randomly initialised Qwen2 of the shape, in bf16 on GPU (float32 on CPU), with the paper-lora adapter."""
    import torch
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from emwb.config import LoraConfig

    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cfg = Qwen2Config(**shape["cfg"], max_position_embeddings=4096, attn_implementation="sdpa", dtype=dtype)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    if shape["checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig()  # the paper-lora defaults of emwb's config
    return get_peft_model(model, PeftLora(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                          use_rslora=lora.use_rslora, target_modules=list(lora.target_modules),
                                          bias="none", task_type="CAUSAL_LM"))


def _batches(shape: dict, n: int, seed: int = 0) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, shape["cfg"]["vocab_size"], (shape["batch"], shape["seq"]), generator=g) for _ in range(n)]


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _reset(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def plain_loop(shape: dict, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """tokens/s and peak GiB of a hand-written loop: forward with labels, backward, AdamW step."""
    import torch

    _reset(device)
    model = _model(shape, device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.01)
    batches = _batches(shape, steps + warmup)
    t0 = None
    for i, ids in enumerate(batches):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        ids = ids.to(device)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    rate = steps * shape["batch"] * shape["seq"] / (time.perf_counter() - t0)
    peak = _peak_gib(device)
    del model, opt
    return rate, peak


def emwb_trainer(shape: dict, steps: int, warmup: int, device: str, out: Path,
                 trl: dict | None = None) -> tuple[float, float]:
    """tokens/s and peak GiB of emwb's trainer path (`emwb.finetune.trainers`: trl SFTTrainer) on the same batches."""
    from transformers import PreTrainedTokenizerFast, TrainerCallback

    from emwb.config import TrainArgs
    from emwb.finetune.trainers import PhaseJob, _fit, _sft_config

    class Clock(TrainerCallback):
        t0 = t1 = None

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                _sync(device)
                Clock.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup + steps:
                _sync(device)
                Clock.t1 = time.perf_counter()

    _reset(device)
    model = _model(shape, device)
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                  pad_token="<pad>", eos_token="<pad>")
    args = TrainArgs(per_device_batch_size=shape["batch"], gradient_accumulation_steps=1, max_length=shape["seq"],
                     max_steps=steps + warmup, warmup_steps=0, gradient_checkpointing=shape["checkpointing"])
    extra = {"logging_steps": 10_000, "disable_tqdm": True, **(trl or {})}
    job = PhaseJob(model, tok, [], args, extra, 0, out, device, (Clock(),))
    config = _sft_config(job, packing=False)
    rows = [{"input_ids": ids.tolist()} for b in _batches(shape, steps + warmup) for ids in b]  # pre-tokenized
    _fit(job, config, rows)
    rate = steps * shape["batch"] * shape["seq"] / (Clock.t1 - Clock.t0)
    peak = _peak_gib(device)
    del model, job
    return rate, peak


def main() -> None:
    import tempfile

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES),
                    help="default: both Qwen2.5 shapes on GPU, the tiny shape on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on GPU, 3 on CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--trl", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra trl config arguments for emwb's trainer (as a phase's `trl:`), values parsed as YAML")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop (compare trl settings only)")
    ap.add_argument("--small", action="store_true", help="the tiny shape, 1 timed step after 1 warm-up step: "
                    "checks that it runs")
    a = ap.parse_args()
    if a.small:
        a.shapes, a.steps, a.warmup = ["tiny"], 1, 1
    import yaml

    trl = {k: yaml.safe_load(v) for k, _, v in (x.partition("=") for x in a.trl)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = a.shapes or (["qwen2.5-0.5b", "qwen2.5-7b"] if device == "cuda" else ["tiny"])
    steps = a.steps or (20 if device == "cuda" else 3)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}; {steps} timed steps after {a.warmup} warm-up steps"
          + (f"; trl {trl}" if trl else ""))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes:
            shape = SHAPES[name]
            plain = (float("nan"), float("nan")) if a.no_plain else plain_loop(shape, steps, a.warmup, device)
            ours = emwb_trainer(shape, steps, a.warmup, device, Path(tmp) / name, trl)
            results[name] = (plain, ours)
            ckpt = ", gradient checkpointing" if shape["checkpointing"] else ""
            print(f"{name:13} batch {shape['batch']} x {shape['seq']}{ckpt}")
            print(f"  plain PyTorch+PEFT loop: {plain[0]:10.0f} tokens/s, peak {plain[1]:.1f} GiB")
            print(f"  emwb trainer (trl):      {ours[0]:10.0f} tokens/s, peak {ours[1]:.1f} GiB")
    for name, (plain, ours) in results.items():
        print(f"ratio emwb / plain loop, {name}: {ours[0] / plain[0]:.2f}x")


if __name__ == "__main__":
    main()
