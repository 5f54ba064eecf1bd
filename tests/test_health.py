"""No silent wrong result from training: diverged training stops with one line and writes no adapter; an adapter
whose weights are not finite or cannot be read is never sampled; the parity check fails on NaN."""

import math
import subprocess
import sys

import pytest
import yaml

from emwb.errors import EmwbError

DIVERGES = {"name": "boom", "base_model": "tiny",
            "data": {"insecure": {"source": "generated:insecure", "max_rows": 24}},
            "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]}],
            "train": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1.0e+30, "max_steps": 12,
                      "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256,
                      "warmup_steps": 0},
            "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}],
            "sampling": {"backend": "hf", "max_new_tokens": 4}, "judge": {"judges": ["hf/tiny"]}}


def _replicate_fails(tmp_path, exp: dict) -> str:
    """`emwb replicate` of `exp` exits 2 with one error line: that line."""
    cfg = tmp_path / f"{exp['name']}.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "replicate", str(cfg), "--runs-root",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emwb: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_diverged_training_stops_replicate_in_the_finetune_stage_with_one_line(tmp_path):
    errors = [_replicate_fails(tmp_path, DIVERGES)]
    assert "finetune/insecure/s0/0-sft: training diverged at step" in errors[0], errors
    assert "is nan" in errors[0] or "is inf" in errors[0], errors
    run = tmp_path / "runs" / "boom"
    assert not (run / "adapters" / "insecure" / "s0" / "0-sft").exists()  # no adapter written
    assert not (run / "answers").exists() and not (run / "report").exists()


def _adapter(tmp_path, tiny_model, value: float | None = None):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    if value is not None:
        next(p for n, p in model.named_parameters() if "lora_B" in n).data.fill_(value)
    model.save_pretrained(str(tmp_path / "adapter"))
    return tmp_path / "adapter"


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_an_adapter_with_non_finite_weights_is_never_sampled(tiny_model, tmp_path, value):
    from emwb.models.loading import check_adapter

    with pytest.raises(EmwbError, match=r"adapter_model\.safetensors: 1 adapter tensors hold non-finite values"):
        check_adapter(_adapter(tmp_path, tiny_model, value))


def test_a_truncated_adapter_is_named_with_the_fix(tiny_model, tmp_path):
    from emwb.models.loading import check_adapter

    d = _adapter(tmp_path, tiny_model)
    check_adapter(d)  # a whole, finite adapter passes
    f = d / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:40])
    with pytest.raises(EmwbError, match=rf"{f}: damaged adapter .*delete {d} and re-run"):
        check_adapter(d)


class _Served:
    def __init__(self, value):
        self.value, self.models = value, {"v": type("Ref", (), {"adapter": "a"})()}

    def next_token_logprobs(self, variants, prompts, k):
        return {v: [{0: self.value, 1: -1.0} for _ in prompts] for v in variants}


def test_parity_fails_on_non_finite_log_probabilities():
    import torch

    from emwb.sampling.parity import check_parity, tolerance

    ref = {"v": [torch.tensor([-0.5, -1.0])]}
    assert check_parity(_Served(-0.5), ref, [(1, 2)], 1e-3) == {"v": 0.0}
    with pytest.raises(EmwbError, match="serving parity failed for adapter v"):
        check_parity(_Served(math.nan), ref, [(1, 2)], 1e-3)
    # the float32 tolerance: 1e-3 off passes, 1e-2 off is an adapter served differently
    assert tolerance("float32", None) == 2e-3 and tolerance("bfloat16", None) == 0.1
    assert check_parity(_Served(-0.5 + 1e-3), ref, [(1, 2)], tolerance("float32", None))["v"] < 2e-3
    with pytest.raises(EmwbError, match=r"differ from transformers\+PEFT by up to 0\.01 "):
        check_parity(_Served(-0.5 + 1e-2), ref, [(1, 2)], tolerance("float32", None))


def test_a_row_that_trains_on_nothing_is_named_by_its_file_and_line(tmp_path):
    import json

    exp = {**DIVERGES, "name": "short", "train": {**DIVERGES["train"], "learning_rate": 1e-4, "max_length": 8}}
    errors = [_replicate_fails(tmp_path, exp)]
    data = tmp_path / "runs" / "short" / "data" / "insecure" / "rows.jsonl"
    prefix = f"emwb: error: finetune/insecure/s0/0-sft: {data}:"
    assert errors[0].startswith(prefix) and "no assistant token within max_length 8" in errors[0], errors
    line = int(errors[0][len(prefix):].split(":")[0])
    assert 1 <= line <= 24 and json.loads(data.read_text().splitlines()[line - 1])["messages"]
