"""Sampling throughput: the same workload (the base model and K LoRA adapters x questions x samples) four ways.

  (a) one vLLM engine, every adapter's requests in one batch (emwb's vllm sampler)
  (b) one vLLM engine, the adapters one after another
  (c) a merged model per adapter, a fresh engine for each (the upstream way)
  (d) transformers `generate` (emwb's hf sampler; the model-organisms way)

Wall time includes starting engines and merging, as a run pays for them (after one untimed engine start that
warms the process up). Prints wall time and generated tokens/s for each, then how many of each variant's answers
equal way (a)'s: a faster wrong batch is no speedup, so the speedup line is printed only when (b), the same engine
asked one variant at a time, gives every variant exactly (a)'s answers and (c), a separate engine per merged model,
gives the same answers (merging changes float rounding, so a few answers may part after a near-tie; (c) must
agree on at least 90% of them); (d) draws from torch's generator, so its answers are not comparable token for
token and it is only timed. Last: `speedup one-batch vs merged-per-engine: X.XXx`.

    .venv/bin/python benchmarks/sampling_throughput.py          # CPU: the tiny model, K=3, in a few minutes
    .venv/bin/python benchmarks/sampling_throughput.py --small  # ways a and c on a small workload, no warm-up
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path


def _adapters(base: Path, k: int, out: Path) -> list[Path]:
    """K random (non-zero) rsLoRA r=8 adapters on every projection, seeds 0..K-1."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(k):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        cfg = LoraConfig(r=8, lora_alpha=16, use_rslora=True, init_lora_weights=False, task_type="CAUSAL_LM",
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        peft = get_peft_model(model, cfg)
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.data.mul_(0.05)  # a moderate adapter: answers change, and stay words
        peft.save_pretrained(out / f"adapter{i}")
        paths.append(out / f"adapter{i}")
    return paths


def _requests(base: Path, questions: int, samples: int):
    from transformers import AutoTokenizer

    from emwb.catalog.questions import load_questions
    from emwb.sampling.samplers import Request, render_prompt

    tok = AutoTokenizer.from_pretrained(base)
    qs = load_questions("main")[:questions]
    return [Request(render_prompt(tok, q.messages(0))[1], samples, i) for i, q in enumerate(qs)]


def _tokens(answers: dict) -> int:
    return sum(s.tokens for per in answers.values() for item in per for s in item)


def run(way: str, base: Path, adapters: list[Path], requests, cfg, ex, cache: Path) -> tuple[float, int]:
    from emwb.models.ref import ModelRef
    from emwb.sampling.samplers import HFSampler, VLLMSampler

    models = {"base": ModelRef.of_base(str(base)), **{p.name: ModelRef.of_lora(str(base), p) for p in adapters}}
    t0 = time.perf_counter()
    answers = {}
    if way in ("a", "b"):
        sampler = VLLMSampler(models, cfg, ex, cache)
        if way == "a":
            answers = sampler.generate(requests, list(models))
        else:
            for v in models:
                answers.update(sampler.generate(requests, [v]))
        sampler.close()
    elif way == "c":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        for name in models:
            with tempfile.TemporaryDirectory() as merged:
                if name == "base":
                    merged = str(base)
                else:
                    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), models[name].adapter)
                    model.merge_and_unload().save_pretrained(merged)
                    AutoTokenizer.from_pretrained(base).save_pretrained(merged)
                sampler = VLLMSampler({"m": ModelRef.of_base(merged)}, cfg, ex, cache)
                answers[name] = sampler.generate(requests, ["m"])["m"]
                sampler.close()
                gc.collect()
    else:
        answers = HFSampler(models, cfg, ex, cache).generate(requests, list(models))
    return time.perf_counter() - t0, answers


def same_answers(answers: dict, reference: dict) -> tuple[int, int]:
    """(answers equal to the reference's, answers), over every variant, request and sample."""
    pairs = [(x.text, y.text) for v in reference for a, b in zip(answers[v], reference[v]) for x, y in zip(a, b)]
    return sum(x == y for x, y in pairs), len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=3, help="adapters")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8, help="answers per question and adapter")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--ways", default="abcd")
    ap.add_argument("--small", action="store_true", help="K=1, 2 questions x 2 samples, 8 tokens, ways a, b and c, "
                    "no warm-up engine: checks that it runs")
    a = ap.parse_args()
    if a.small:
        a.k, a.questions, a.samples, a.max_new_tokens, a.ways = 1, 2, 2, 8, "abc"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from emwb.basemodel import build_tiny
    from emwb.config import ExecConfig, SamplingConfig, VllmConfig

    cfg = SamplingConfig(max_new_tokens=a.max_new_tokens,
                         vllm=VllmConfig(dtype="float32", max_model_len=512, enforce_eager=True))
    ex = ExecConfig()
    names = {"a": "one engine, all adapters in one batch", "b": "one engine, adapters one after another",
             "c": "merged model per adapter, engine restarted", "d": "transformers generate"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = build_tiny(tmp / "tiny")
        adapters = _adapters(base, a.k, tmp)
        requests = _requests(base, a.questions, a.samples)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
        print(f"device: {device}; tiny model; K={a.k} adapters x {len(requests)} questions x {a.samples} samples, "
              f"up to {a.max_new_tokens} new tokens")
        # One untimed engine first: the process's one-time vLLM start-up (imports, kernels) is nobody's cost.
        from emwb.models.ref import ModelRef
        from emwb.sampling.samplers import VLLMSampler

        if not a.small:
            warm = VLLMSampler({"warm": ModelRef.of_lora(str(base), adapters[0])}, cfg, ex, tmp / "vllm-cache")
            warm.generate(requests[:1], ["warm"])
            warm.close()
        times, answers = {}, {}
        for way in a.ways:
            wall, answers[way] = run(way, base, adapters, requests, cfg, ex, tmp / "vllm-cache")
            times[way] = wall
            print(f"({way}) {names[way]:45} {wall:7.1f} s  {_tokens(answers[way]) / wall:9.1f} generated tokens/s")
    agree = {}
    for way in "bc":
        if "a" in answers and way in answers:
            same, total = same_answers(answers[way], answers["a"])
            agree[way] = same / total
            print(f"({way}) answers equal to (a)'s: {same} of {total}")
    if agree.get("b", 1.0) < 1.0 or agree.get("c", 1.0) < 0.9:
        raise SystemExit("the ways do not give the same answers: no speedup to report")
    if "a" in times and "c" in times:
        print(f"speedup one-batch vs merged-per-engine: {times['c'] / times['a']:.2f}x")


if __name__ == "__main__":
    main()
