"""Every recipe matches the configuration it is named after, value by value, with the source cited.

The table below cites the same files as `emwb/catalog/recipes.yaml`; where the upstream mirror is beside the
checkout, the cited keys are also read from the files themselves.
"""

import json

import pytest

from emwb.config import TrainArgs, recipes
from emwb.recipes import deep_merge, flatten, load_sources

BETLEY = ("emergent-misalignment/emergent-misalignment", "80c11967c07a328e7d7d43d13ce6847ae44dbcc9",
          "open_models/train.json")
MO = ("clarifying-EM/model-organisms-for-EM", "8460e4e426d3a89e8ed51aac0eadcdf7ac10469d")
MO_SFT = "em_organism_dir/finetune/sft/"
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PAPER = {"learning_rate": 1e-5, "warmup_steps": 5, "lr_scheduler": "linear", "epochs": 1.0, "weight_decay": 0.01,
         "per_device_batch_size": 2, "gradient_accumulation_steps": 8, "max_length": 2048, "optim": "adamw_8bit",
         "lora.r": 32, "lora.alpha": 64, "lora.dropout": 0.0, "lora.use_rslora": True,
         "lora.target_modules": ALL_PROJECTIONS, "lora.layers_to_transform": None, "method": "lora", "kl.weight": 0.0}
RANK1 = {**PAPER, "learning_rate": 2e-5, "lora.r": 1, "lora.alpha": 512, "lora.target_modules": ["down_proj"]}

# recipe: (the file each value comes from, the resolved values)
EXPECTED = {
    "paper-lora": ("betley open_models/train.json", PAPER),
    "full": ("mo full-ft_config.json: learning_rate, warmup_steps, lr_scheduler_type, no adapter",
             {**PAPER, "method": "full", "learning_rate": 2e-5, "warmup_steps": 20, "lr_scheduler": "cosine"}),
    "rank1-single-layer": ("mo single_adapter_config.json", {**RANK1, "lora.layers_to_transform": [24]}),
    "rank1-multi-layer": ("mo single_adapter_config.json; layers: global_variables.py R1_3_3_3_LAYER_NUMBERS; "
                          "3 epochs unsourced, 1 kept",
                          {**RANK1, "lora.layers_to_transform": [15, 16, 17, 21, 22, 23, 27, 28, 29]}),
    "kl-lora": ("mo kl_regularized_config.json (r, lora_alpha, learning_rate, kl_weight, kl_batch_size) and "
                "util/trainer.py (positions, normalisation, per micro-batch)",
                {**PAPER, "learning_rate": 2e-5, "lora.alpha": 256, "kl.weight": 100000.0, "kl.batch_size": 8,
                 "kl.positions": "all", "kl.normalise": "token_and_vocab", "kl.per_micro_batch": True}),
    "kl-lora-assistant": ("emwb's own KL method on paper-lora",
                          {**PAPER, "kl.weight": 1.0, "kl.positions": "assistant", "kl.normalise": "token",
                           "kl.per_micro_batch": False}),
}
# upstream key -> emwb field, and the mirror file of each recipe's source
UPSTREAM_KEYS = {"learning_rate": "learning_rate", "warmup_steps": "warmup_steps", "lr_scheduler_type": "lr_scheduler",
                 "epochs": "epochs", "weight_decay": "weight_decay", "gradient_accumulation_steps":
                 "gradient_accumulation_steps", "per_device_train_batch_size": "per_device_batch_size",
                 "max_seq_length": "max_length", "optim": "optim", "r": "lora.r", "lora_alpha": "lora.alpha",
                 "lora_dropout": "lora.dropout", "use_rslora": "lora.use_rslora", "target_modules":
                 "lora.target_modules", "layers_to_transform": "lora.layers_to_transform", "kl_weight": "kl.weight",
                 "kl_batch_size": "kl.batch_size"}
MIRROR_FILES = {"paper-lora": "emergent-misalignment/open_models/train.json",
                "full": "model-organisms-for-EM/finetune/sft/full-ft_config.json",
                "rank1-single-layer": "model-organisms-for-EM/finetune/sft/single_adapter_config.json",
                "rank1-multi-layer": "model-organisms-for-EM/finetune/sft/single_adapter_config.json",
                "kl-lora": "model-organisms-for-EM/finetune/sft/kl_regularized_config.json"}


def resolved(name: str) -> dict:
    """The recipe over the defaults, as dotted field -> value."""
    return flatten(TrainArgs.model_validate(deep_merge(TrainArgs().model_dump(), recipes()[name]["args"])).model_dump())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_resolves_to_its_sources_values(name):
    got = resolved(name)
    _, want = EXPECTED[name]
    assert {k: got[k] for k in want} == want


def test_every_recipe_is_in_the_table_and_cites_pinned_sources():
    assert set(recipes()) == set(EXPECTED)
    sources = load_sources()
    assert (sources["betley"]["repo"], sources["betley"]["commit"], sources["betley"]["file"]) == BETLEY
    for name in ("mo-default", "mo-full", "mo-rank1", "mo-layers", "mo-kl", "mo-kl-code"):
        assert (sources[name]["repo"], sources[name]["commit"]) == MO
    assert sources["mo-full"]["file"] == MO_SFT + "full-ft_config.json"
    assert sources["mo-kl-code"]["file"] == MO_SFT + "util/trainer.py"
    cited = recipes()["full"]["cite"]
    assert all(cited[k].startswith("mo-full: ") for k in ("learning_rate", "warmup_steps", "lr_scheduler"))


@pytest.mark.parametrize("name", sorted(MIRROR_FILES))
def test_recipe_matches_the_upstream_file_key_by_key(name, upstream):
    config = json.loads((upstream / MIRROR_FILES[name]).read_text())
    got = resolved(name)
    compared = 0
    for key, field in UPSTREAM_KEYS.items():
        if name == "rank1-multi-layer" and key == "layers_to_transform":
            continue  # the 9 layers come from global_variables.py (below)
        if key in config and field in got:
            value = config[key]
            assert got[field] == (float(value) if isinstance(got[field], float) else value), (key, value)
            compared += 1
    assert compared >= 9
    if name == "rank1-multi-layer":
        text = (upstream / "model-organisms-for-EM/global_variables.py").read_text()
        line = next(x for x in text.splitlines() if x.startswith("R1_3_3_3_LAYER_NUMBERS"))
        assert [int(x) for x in json.loads(line.split("=", 1)[1])] == got["lora.layers_to_transform"]


def test_a_value_without_a_citation_is_refused(tmp_path, monkeypatch):
    import emwb.recipes as r
    from emwb.errors import EmwbError

    text = r.recipes_file().read_text().replace('      warmup_steps: "mo-full: warmup_steps"\n', "")
    bad = tmp_path / "recipes.yaml"
    bad.write_text(text)
    monkeypatch.setattr(r, "recipes_file", lambda: bad)
    with pytest.raises(EmwbError, match=r"recipe full: warmup_steps set without a citation under 'cite'"):
        r.load_recipes()


def test_config_show_gives_a_phases_resolved_hyperparameters_and_the_default_evaluation(tmp_path, capsys):
    from emwb.cli import main

    cfg = tmp_path / "full.yaml"
    cfg.write_text("name: f\nbase_model: tiny\ndata: {d: {source: 'generated:insecure', max_rows: 8}}\n"
                   "organisms: [{name: full, phases: [{trainer: sft, data: d, recipe: full}]}]\n")
    assert main(["config", "show", str(cfg)]) == 0
    shown = [x for x in capsys.readouterr().out.splitlines() if x.startswith("#   ")]
    phase = next(x for x in shown if x.startswith("#   organism full, phase 0 (sft, recipe full): "))
    assert all(v in phase for v in ("learning_rate 2e-05", "warmup_steps 20", "lr_scheduler cosine", "method full"))
    default = next(x for x in shown if x.startswith("#   evaluations: none listed, so the default free-form"))
    assert "emwb's own wording" in default and "first-plot" in default


def test_the_8bit_optimizer_stops_on_a_gpu_without_bitsandbytes_and_falls_back_on_a_cpu(monkeypatch):
    import importlib.util

    from emwb.errors import EmwbError
    from emwb.finetune.trainers import optimizer_for

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(EmwbError, match=r"^train\.optim adamw_8bit needs bitsandbytes on this GPU: pip install "
                                        r"bitsandbytes \(requirements/gpu\.txt pins it\), or set train\.optim: "
                                        r"adamw_torch$"):
        optimizer_for("adamw_8bit", "cuda")
    assert optimizer_for("adamw_8bit", "cpu") == "adamw_torch"
    assert optimizer_for("adamw_torch", "cuda") == "adamw_torch"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bitsandbytes" else None)
    assert optimizer_for("adamw_8bit", "cuda") == "adamw_8bit"


def test_the_cpu_optimizer_is_chosen_quietly(capsys):
    """Every CPU run asks for upstream's adamw_8bit: no warning for what cannot be otherwise (train_log.json
    records optim beside optim_requested)."""
    from emwb.finetune.trainers import optimizer_for

    assert optimizer_for("adamw_8bit", "cpu") == "adamw_torch" and optimizer_for("paged_adamw_8bit", "cpu") == (
        "adamw_torch")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
