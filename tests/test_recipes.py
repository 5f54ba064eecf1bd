"""Training recipes as data: named overrides of `train:`, overridable field by field."""

import pytest
import yaml

from emwb.catalog.codegen import generate_pairs, to_rows
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
