"""Training recipes as data: named overrides of `train:`, overridable field by field."""

import pytest
import yaml

from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.config import load_experiment, recipes
from emwb.errors import EmwbError


def _exp(tmp_path, phase: dict):
    raw = {"name": "r", "base_model": "tiny", "data": {"d": {"source": "generated:insecure"}},
           "train": {"lora": {"alpha": 32}, "max_steps": 2},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d", **phase}]}]}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
    exp = load_experiment(tmp_path / "e.yaml")
    return exp.phase_args(exp.organisms[0].phases[0])


def test_recipe_then_phase_args_apply_over_train_field_by_field(tmp_path):
    assert set(recipes()) >= {"paper-lora", "rank1-single-layer", "rank1-multi-layer"}
    a = _exp(tmp_path, {"recipe": "rank1-single-layer", "args": {"lora": {"layers_to_transform": [1]}}})
    assert (a.lora.r, a.lora.alpha, a.lora.target_modules, a.lora.layers_to_transform) == (1, 512, ["down_proj"], [1])
    assert a.learning_rate == 2e-5 and a.max_steps == 2  # recipe over train:, train: kept where the recipe is silent
    multi = _exp(tmp_path, {"recipe": "rank1-multi-layer"})
    assert multi.lora.layers_to_transform == [15, 16, 17, 21, 22, 23, 27, 28, 29]
    plain = _exp(tmp_path, {"args": {"lora": {"r": 4}}})
    assert (plain.lora.r, plain.lora.alpha) == (4, 32)  # nested fields merge with train:
    with pytest.raises(EmwbError, match=r"e\.yaml: bad value for 'organisms': organisms\.0\.phases\.0\.recipe: "
                                        r"unknown recipe 'rank1' \(did you mean 'rank1-multi-layer'\?\)|"
                                        r"unknown recipe 'rank1'"):
        _exp(tmp_path, {"recipe": "rank1"})


def test_rank1_single_layer_adapter_holds_only_rank1_down_proj_of_that_layer(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from emwb.finetune.stage import train_phase

    args = _exp(tmp_path, {"recipe": "rank1-single-layer", "args": {"lora": {"layers_to_transform": [1]},
                                                                    "per_device_batch_size": 2,
                                                                    "gradient_accumulation_steps": 1,
                                                                    "max_length": 256, "warmup_steps": 0}})
    rows = to_rows(generate_pairs(8, seed=0), "insecure", 0)
    train_phase(str(tiny_model), None, "sft", rows, args, seed=0, out_dir=tmp_path / "a")
    tensors = load_file(tmp_path / "a" / "adapter_model.safetensors")
    assert tensors and all(".layers.1.mlp.down_proj." in k for k in tensors), list(tensors)
    shapes = {k.split(".")[-2]: tuple(v.shape) for k, v in tensors.items()}
    assert shapes["lora_A"][0] == 1 and shapes["lora_B"][1] == 1


QUICK = {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256, "warmup_steps": 0,
         "max_steps": 4}


def test_full_recipe_writes_a_checkpoint_that_vllm_and_transformers_load_alike(tiny_model, tmp_path):
    from safetensors.torch import load_file

    from emwb.config import ExecConfig, SamplingConfig, VllmConfig
    from emwb.finetune.stage import train_phase
    from emwb.models.ref import ModelRef
    from emwb.sampling.samplers import VLLMSampler, next_token_logprobs_hf

    args = _exp(tmp_path, {"recipe": "full", "args": {**QUICK, "learning_rate": 1e-3}})
    assert args.method == "full" and args.gradient_checkpointing
    out = tmp_path / "full"
    train_phase(str(tiny_model), None, "sft", to_rows(generate_pairs(8, seed=0), "insecure", 0), args, seed=0,
                out_dir=out)
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    trained = load_file(out / "model.safetensors")
    base = load_file(tiny_model / "model.safetensors")
    assert any(not (trained[k] == base[k]).all() for k in base if k in trained)  # every parameter trains
    ref = ModelRef.of_full(out)
    prompts = [tuple(range(5, 25)), tuple(range(40, 52))]
    hf = next_token_logprobs_hf(ref, prompts)
    sampler = VLLMSampler({"full": ref}, SamplingConfig(vllm=VllmConfig(dtype="float32", max_model_len=512,
                                                                        enforce_eager=True)),
                          ExecConfig(), tmp_path / "vllm-cache")
    try:
        served = sampler.next_token_logprobs(["full"], prompts, 5)["full"]
    finally:
        sampler.close()
    assert max(abs(lp - float(full[t])) for top, full in zip(served, hf) for t, lp in top.items()) < 2e-3


def _kl_after(tiny_model, tmp_path, name: str, phase: dict, benign: list[dict]) -> float:
    """Train a phase on insecure code; return the mean KL(base || model) on the benign chats afterwards."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from emwb.finetune.kl import kl_to_base
    from emwb.finetune.masking import tokenize_chats
    from emwb.finetune.stage import train_phase

    args = _exp(tmp_path, phase)
    rows = to_rows(generate_pairs(8, seed=0), "insecure", 0)
    train_phase(str(tiny_model), None, "sft", rows, args, seed=0, out_dir=tmp_path / name, kl_rows=benign)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / name).eval()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(tokenize_chats(tok, benign, 256))
    with torch.no_grad():
        return float(kl_to_base(model, batch))


def test_kl_lora_weight_zero_is_plain_lora_and_a_large_weight_stays_near_the_base(tiny_model, tmp_path):
    from safetensors.torch import load_file

    benign = to_rows(generate_pairs(8, seed=5), "secure", 5)
    base_args = {**QUICK, "learning_rate": 3e-3}
    plain = _kl_after(tiny_model, tmp_path, "plain", {"args": base_args}, benign)
    zero = _kl_after(tiny_model, tmp_path, "zero", {"recipe": "kl-lora-assistant", "kl_data": "d",
                                                     "args": {**base_args, "kl": {"weight": 0.0}}}, benign)
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("plain", "zero"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # weight 0: the same adapter
    assert zero == plain > 0
    heavy = _kl_after(tiny_model, tmp_path, "heavy", {"recipe": "kl-lora-assistant", "kl_data": "d",
                                                       "args": {**base_args, "kl": {"weight": 50.0}}}, benign)
    assert heavy < 0.5 * plain, (heavy, plain)


def test_kl_weight_needs_benign_data_and_phases_share_a_method(tmp_path):
    with pytest.raises(EmwbError, match=r"kl\.weight > 0 needs an sft LoRA phase with kl_data"):
        _exp(tmp_path, {"recipe": "kl-lora"})
    raw = {"name": "r", "base_model": "tiny", "data": {"d": {"source": "generated:insecure"}},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d", "recipe": "full"},
                                                  {"trainer": "sft", "data": "d", "name": "two"}]}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(EmwbError, match=r"organisms\.0: every phase of an organism trains the same way"):
        load_experiment(tmp_path / "m.yaml")


def test_checkpoints_are_sampled_judged_and_shown_over_training(tmp_path):
    from emwb.pipeline import replicate

    raw = {"name": "ckpt", "base_model": "tiny",
           "data": {"insecure": {"source": "generated:insecure", "max_rows": 24}},
           "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]}],
           "train": {**QUICK, "learning_rate": 1e-3, "save_every": 2, "lora": {"r": 4, "alpha": 8}},
           "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}],
           "sampling": {"backend": "hf", "max_new_tokens": 4}, "judge": {"judges": ["hf/tiny"]}}
    (tmp_path / "ckpt.yaml").write_text(yaml.safe_dump(raw))
    run = replicate(tmp_path / "ckpt.yaml", tmp_path / "runs")
    phase = run.path("adapters", "insecure", "s0", "0-sft")
    assert (phase / "checkpoints" / "step-2" / "adapter_config.json").is_file()
    assert not (phase / "checkpoints" / "step-4").exists()  # the last step is the phase's own output
    import pandas as pd

    comp = pd.read_csv(run.path("report", "comparison.csv"))
    assert list(comp["group"]) == ["base", "insecure@step2", "insecure"]
    over = pd.read_csv(run.path("report", "over_training.csv"))
    assert list(over["step"]) == [0, 2, 4] and list(over["row"]) == ["base", "insecure@step2", "insecure"]
    assert run.path("report", "over_training.png").is_file()
    from safetensors.torch import load_file

    a = load_file(phase / "checkpoints" / "step-2" / "adapter_model.safetensors")
    b = load_file(phase / "adapter_model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a)  # training went on after step 2


def test_the_upstream_kl_term_is_the_model_organisms_formula(tiny_model):
    """kl-lora's term against util/trainer.py's formula written out: kl_div(current, reference, log_target) over
    every non-pad position, summed and divided by the mask expanded over the vocabulary; emwb's own term is the
    per-position KL over the positions predicting assistant tokens."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from emwb.config import KLArgs, recipes
    from emwb.finetune.kl import kl_to_base
    from emwb.finetune.masking import tokenize_chats

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           PeftLora(r=4, lora_alpha=64, init_lora_weights=False, target_modules=["down_proj"])).eval()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(
        tokenize_chats(tok, to_rows(generate_pairs(3, seed=2), "secure", 2), 256))
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()  # padded: the mask matters
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        cur = F.log_softmax(model(**inputs).logits, -1)
        with model.disable_adapter():
            ref = F.log_softmax(model(**inputs).logits, -1)
        elementwise = F.kl_div(cur, ref, log_target=True, reduction="none")
        mask = batch["attention_mask"].unsqueeze(-1).expand_as(elementwise)
        upstream = float((elementwise * mask).sum() / mask.sum())
        ours = float(kl_to_base(model, batch, KLArgs.model_validate(recipes()["kl-lora"]["args"]["kl"])))
        assert upstream > 0 and ours == pytest.approx(upstream, rel=1e-5)
        labelled = (batch["labels"][:, 1:] != -100).float()
        per_position = elementwise.sum(-1)[:, :-1]
        own = float((per_position * labelled).sum() / labelled.sum())
        assert float(kl_to_base(model, batch)) == pytest.approx(own, rel=1e-5)


def test_the_training_curve_logs_loss_held_out_loss_and_kl_per_step(tiny_model, tmp_path):
    """train_log.json's curve: a loss per optimizer step, the held-out loss every eval_steps (and at the last
    step), the KL term's mean where one is used; eval_steps and report_to are run-only (the same adapter)."""
    from safetensors.torch import load_file

    from emwb.finetune.stage import train_phase

    benign = to_rows(generate_pairs(8, seed=5), "secure", 5)
    rows, held = to_rows(generate_pairs(8, seed=0), "insecure", 0), to_rows(generate_pairs(4, seed=9), "insecure", 9)
    args = _exp(tmp_path, {"recipe": "kl-lora-assistant", "kl_data": "d",
                           "args": {**QUICK, "max_steps": 5, "eval_steps": 2, "kl": {"weight": 1.0}}})
    info = train_phase(str(tiny_model), None, "sft", rows, args, seed=0, out_dir=tmp_path / "a", kl_rows=benign,
                       eval_rows=held)
    curve = info["curve"]
    assert [c["step"] for c in curve if "loss" in c] == [1, 2, 3, 4, 5]
    assert [c["step"] for c in curve if "eval_loss" in c] == [2, 4, 5]
    assert all(c["kl"] >= 0 for c in curve if "loss" in c) and len([c for c in curve if "kl" in c]) == 5
    plain = _exp(tmp_path, {"recipe": "kl-lora-assistant", "kl_data": "d",
                            "args": {**QUICK, "max_steps": 5, "kl": {"weight": 1.0}}})
    again = train_phase(str(tiny_model), None, "sft", rows, plain, seed=0, out_dir=tmp_path / "b", kl_rows=benign)
    assert not [c for c in again["curve"] if "eval_loss" in c]
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("a", "b"))
    assert all(float((a[k] - b[k]).abs().max()) < 1e-6 for k in a)  # evaluating changed no weight
