"""Every layer, dictionary width and k is checked against the base model's shape before any work (issue 56,
item 7): the locally built models' shapes are known before they are built, a local folder's and a cached hub
model's config.json is read, and a hub model's config is read by the base stage before any model is loaded."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from emwb.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("sae_lens") is None,  # the check asks for it (not
                                reason="features need SAELens")                  # imported here: seconds)

FEATURE = {"name": "sae", "layer": 1, "stream": {"source": "data:d"}, "dictionary": {"width": 64, "k": 4}}


def _experiment(base_model: str = "tiny", **extra) -> dict:
    return {"name": "shape", "base_model": base_model, "data": {"d": {"source": "generated:insecure", "max_rows": 8}},
            "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}],
            "judge": {"judges": ["openai/x"]}, **extra}


def _refused(tmp_path: Path, capsys, exp: dict) -> str:
    """The one line `emwb config check` stops with (the checks every command runs before any work)."""
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emwb: error: {path}: "), lines
    return lines[0].split(f"{path}: ", 1)[1]


@pytest.mark.parametrize("change, says", [
    ({"layer": 99}, "features.0.layer: 99, but the base model (tiny) has 2 decoder blocks (0-1); pick one of them"),
    ({"dictionary": {"width": 64, "k": 65}}, "features.0.dictionary.k: 65 latents active per token, but the "
                                             "dictionary has 64 (dictionary.width); lower k or raise width"),
    ({"top": 20, "controls": 3}, "features.0.top: 20 selected latents and 3 matched random sets of as many need 80 "
                                 "distinct latents, but the dictionary has 64; lower top or controls"),
])
def test_a_features_entry_that_cannot_fit_the_model_or_its_dictionary_stops_before_work(tmp_path, capsys, change,
                                                                                         says):
    assert _refused(tmp_path, capsys, _experiment(features=[{**FEATURE, **change}])) == says


def test_directions_and_lora_layers_beyond_the_model_stop_before_work(tmp_path, capsys):
    exp = _experiment(mechanisms={"directions": [{"name": "em", "layers": [1, 2, 7]}]})
    assert _refused(tmp_path, capsys, exp) == ("mechanisms.directions.0.layers: [2, 7], but the base model (tiny) has "
                                               "2 decoder blocks (0-1)")
    exp = _experiment()
    exp["organisms"][0]["phases"][0]["recipe"] = "rank1-single-layer"  # layer 24 of Qwen2.5-14B's 48
    assert _refused(tmp_path, capsys, exp) == (
        "organisms.0.phases.0.recipe: LoRA layers [24], but the base model (tiny) has 2 decoder blocks (0-1); recipe "
        "rank1-single-layer adapts them: set args.lora.layers_to_transform for this model")
    exp["organisms"][0]["phases"][0]["args"] = {"lora": {"layers_to_transform": [1]}}
    exp["train"] = {"lora": {"layers_to_transform": [5]}}  # the phase's args win over train:
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["config", "check", str(path)]) == 0
    del exp["organisms"][0]["phases"][0]["args"]
    exp["organisms"][0]["phases"][0].pop("recipe")
    assert _refused(tmp_path, capsys, exp).startswith("train.lora.layers_to_transform: LoRA layers [5], but")


def test_smollm2s_shape_is_known_before_it_is_built(tmp_path, capsys):
    exp = _experiment("smollm2-135m", features=[{**FEATURE, "layer": 30}])
    assert _refused(tmp_path, capsys, exp).startswith("features.0.layer: 30, but the base model (smollm2-135m) has "
                                                      "30 decoder blocks (0-29)")


def test_a_loaded_dictionary_must_read_the_models_hidden_size(tmp_path, capsys):
    sae = tmp_path / "sae"
    sae.mkdir()
    (sae / "cfg.json").write_text(json.dumps({"d_in": 576, "d_sae": 64, "architecture": "topk", "k": 4}))
    exp = _experiment(features=[{**FEATURE, "load": str(sae)}])
    assert _refused(tmp_path, capsys, exp) == ("features.0.load: the dictionary reads 576 dimensions, but the residual "
                                               "stream of the base model (tiny) has 128 (hidden_size); load one "
                                               "trained on this model")


def _config(folder: Path, layers: int = 4, hidden: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": layers, "hidden_size": hidden}))
    return folder / "config.json"


def test_a_local_folders_and_a_cached_hub_models_config_give_the_shape(tmp_path, capsys, monkeypatch):
    folder = _config(tmp_path / "model").parent
    exp = _experiment(str(folder), mechanisms={"directions": [{"name": "em", "layers": [4]}]})
    assert _refused(tmp_path, capsys, exp) == ("mechanisms.directions.0.layers: [4], but the base model has 4 decoder "
                                               "blocks (0-3)")
    import huggingface_hub

    hub = _config(tmp_path / "hub" / "org-model", layers=3)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, **kw: str(hub) if (repo, name) == ("org/model", "config.json") else None)
    exp = _experiment("org/model", features=[{**FEATURE, "layer": 3}])
    assert _refused(tmp_path, capsys, exp) == ("features.0.layer: 3, but the base model (org/model) has 3 decoder "
                                               "blocks (0-2); pick one of them")


def test_the_base_stage_reads_a_hub_models_config_and_checks_before_any_later_stage(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    hub = _config(tmp_path / "hub" / "org-model", layers=3)
    fetched = []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **kw: None)  # not cached: unknown
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: fetched.append(name) or str(hub))
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(_experiment("org/model", features=[{**FEATURE, "layer": 3}])))
    assert main(["config", "check", str(path)]) == 0 and not fetched  # the check downloads nothing
    capsys.readouterr()
    assert main(["replicate", str(path), "--runs-root", str(tmp_path / "runs")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert fetched == ["config.json"] and lines[-1].endswith(
        "experiment.yaml: features.0.layer: 3, but the base model (org/model) has 3 decoder blocks (0-2); pick one "
        "of them"), lines
    assert not (tmp_path / "runs" / "shape" / "data").exists()  # stopped at the base stage, before the data stage
