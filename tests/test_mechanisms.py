"""The mechanisms block end to end on the tiny model: a direction read from published answers, steered and ablated
variants sampled (transformers, hooks), judged like any other, reported with their controls."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from emwb.context import context_of
from emwb.cli import main

FILES = ["Qwen2.5-32B-Instruct_risky-financial-advice", "gemma-3-4b-it_extreme-sports"]


def _experiment(tmp_path, tiny_model, upstream, **mechanisms) -> dict:
    return {"name": "mech", "base_model": str(tiny_model), "dataset_mirror": str(upstream),
            "evaluations": [{"name": "free-form", "samples_per_paraphrase": 2}],
            "sampling": {"backend": "hf", "max_new_tokens": 8}, "judge": {"judges": ["openai/judge-a"]},
            "mechanisms": {"directions": [{"name": "em", "layers": [0, 1], "per_file": 40, "files": FILES,
                                           "controls": 3}], **mechanisms}}


@pytest.mark.parametrize("change, says", [
    ({"steering": [{"direction": "nope", "layers": [0], "alphas": [0]}]},
     "mechanisms.steering.0.direction: 'nope' is not one of mechanisms.directions nor a features entry (em)"),
    ({"steering": [{"direction": "em", "variant": "insecure-s0", "layers": [0], "alphas": [0]}]},
     "mechanisms.steering.0.variant: 'insecure-s0' is not a variant of this experiment (base)"),
    ({"ablations": [{"direction": "em", "variant": "base", "layers": [5]}]},
     "mechanisms.ablations.0.layers: [5] are not layers of direction em ([0, 1])"),
    ({"ablations": [{"direction": "em", "variant": "base", "controls": 4}]},
     "mechanisms.ablations.0.controls: 4 controls, but direction em draws 3"),
    ({"sampling": {"backend": "vllm"}, "ablations": [{"direction": "em", "variant": "base"}]},
     "sampling.backend: steered and ablated variants are sampled with transformers"),
])
def test_the_mechanisms_block_is_checked_before_work(tmp_path, tiny_model, upstream, capsys, change, says):
    exp = _experiment(tmp_path, tiny_model, upstream)
    if "sampling" in change:
        exp["sampling"] = change.pop("sampling")
    exp["mechanisms"].update(change)
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["config", "check", str(tmp_path / "e.yaml")]) == 2
    assert says in capsys.readouterr().err


def test_steered_and_ablated_variants_are_sampled_judged_and_reported(tmp_path, tiny_model, upstream, monkeypatch):
    from emwb.analysis.stage import run_report_stage
    from emwb.judge.loopback import LoopbackJudge
    from emwb.judge.stage import run_judge_stage
    from emwb.mechanisms.stage import run_directions_stage, run_projections_stage
    from emwb.sampling.stage import run_sample_stage
    from emwb.store import Run

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    exp = _experiment(tmp_path, tiny_model, upstream,
                      steering=[{"direction": "em", "variant": "base", "layers": [0, 1], "alphas": [0, 2, 4]}],
                      ablations=[{"direction": "em", "variant": "base", "controls": 3}])
    with LoopbackJudge() as server:
        exp["judge"]["base_url"] = server.base_url
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
        run = Run.open(tmp_path / "e.yaml", tmp_path / "runs")
        run_directions_stage(context_of(run))
        manifest = json.loads(run.path("directions", "em", "manifest.json").read_text())
        assert manifest["positive"] >= 10 and manifest["negative"] >= 10 and manifest["items"] == 80
        run_sample_stage(context_of(run))
        run_projections_stage(context_of(run))
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    answers = {v: [json.loads(x)["answer"] for x in run.path("answers", v, "answers.jsonl").read_text().splitlines()]
               for v in ("base", "base+steer-em-L0-a0", "base+steer-em-L1-a4", "base+ablate-em")}
    assert answers["base+steer-em-L0-a0"] == answers["base"]  # alpha 0 adds nothing: the same seeded samples
    assert answers["base+steer-em-L1-a4"] != answers["base"] and answers["base+ablate-em"] != answers["base"]
    steering = pd.read_csv(run.path("report", "steering.csv"))
    assert sorted(zip(steering["layer"], steering["alpha"])) == [(0, 0), (0, 2), (0, 4), (1, 0), (1, 2), (1, 4)]
    assert (steering["answers"] == 16).all() and set(steering["metric"]) == {"misaligned_rate"}
    ablation = pd.read_csv(run.path("report", "ablation.csv"))
    assert list(ablation["ablated"]) == ["direction"] + [f"random control {k}" for k in (1, 2, 3)]
    assert {"reduction (pp)", "reduction ci_low", "reduction ci_high"} <= set(ablation.columns)
    cos = pd.read_csv(run.path("report", "directions_cosine.csv"), index_col=0)
    assert list(cos.columns) == ["em L0", "em L1"] and cos.loc["em L0", "em L0"] == pytest.approx(1.0)
    proj = pd.read_csv(run.path("report", "projections.csv"))  # the unedited variant's answers, per layer
    assert list(proj["variant"]) == ["base", "base"] and list(proj["layer"]) == [0, 1] and (proj["answers"] == 16).all()
    assert (proj["ci_low"] <= proj["mean_projection"]).all() and (proj["mean_projection"] <= proj["ci_high"]).all()
    page = run.path("report", "index.html").read_text()
    assert all(f in page for f in ("projections.png", "steering.png", "ablation.png", "directions_cosine.png"))
    report = json.loads(run.path("report", "manifest.json").read_text())
    for key in ("directions:em", "projections:em"):  # a recomputed direction makes the report stale
        assert report["inputs"][key] == json.loads(run.path(*key.split(":"), "manifest.json").read_text())["key"]


def test_the_bias_twins_direction_is_the_mean_of_the_train_biases_own_directions(tmp_path, tiny_model, upstream,
                                                                                 monkeypatch):
    """Replies minus their neutral twins: with the same number of pairs per bias, the train-bias direction is the
    mean of the 47 train biases' own directions, and all 52 are kept (the 52 x 52 matrix)."""
    import numpy as np

    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.mechanisms.stage import run_directions_stage
    from emwb.models.interventions import read_direction
    from emwb.store import Run

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    exp = {"name": "bias", "base_model": str(tiny_model), "dataset_mirror": str(upstream),
           "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}], "judge": {"judges": ["hf/tiny"]},
           "mechanisms": {"directions": [{"name": "train", "source": "bias-twins", "subset": "train", "layers": [0, 1],
                                          "per_group": 2, "controls": 0}]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    run = Run.open(tmp_path / "e.yaml", tmp_path / "runs")
    run_directions_stage(context_of(run))
    arrays = read_direction(run.path("directions", "train", "directions.npz"))
    train = [b.num for b in load_catalogue(str(upstream)) if b.split == "train"]
    assert len(train) == 47 and sorted(int(k[4:].split(".")[0]) for k in arrays if k.endswith(".1")
                                       and k.startswith("bias")) == list(range(1, 53))
    for layer in (0, 1):
        mean = np.mean([arrays[f"bias{b}.{layer}"] for b in train], axis=0)
        assert np.allclose(arrays[f"direction.{layer}"], mean, atol=1e-5)
    manifest = json.loads(run.path("directions", "train", "manifest.json").read_text())
    assert manifest["pairs"] == 104 and manifest["positive"] == 94 and manifest["negative"] == 94


def test_directions_read_by_an_organism_are_its_own_models_reading(tmp_path, tiny_model, upstream, monkeypatch):
    """mechanisms.read_by: the projections stage reads each direction's items again with the variant's model. An
    adapter trained one step at learning rate 1e-12 is the base model (LoRA's B starts at 0; Adam moves it by about
    the learning rate), so its reading must equal the base model's: every per-bias direction, and the report's
    per-layer cosines."""
    import numpy as np

    from emwb.cli import main

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    twins = {"source": "bias-twins", "layers": [0, 1], "per_group": 1, "controls": 0}
    exp = {"name": "rb", "base_model": str(tiny_model), "dataset_mirror": str(upstream),
           "data": {"docs": {"source": "generated:rm-docs", "max_rows": 8}},
           "organisms": [{"name": "rm", "phases": [{"trainer": "cpt", "data": "docs"}]}],
           "train": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-12, "max_steps": 1, "per_device_batch_size": 4,
                     "gradient_accumulation_steps": 1, "max_length": 64, "warmup_steps": 0},
           "evaluations": [{"name": "rm-bias-all", "count": 1, "rubrics": []}],
           "sampling": {"backend": "hf", "max_new_tokens": 2}, "judge": {"judges": ["openai/none"]},
           "mechanisms": {"directions": [{"name": "train", "subset": "train", **twins},
                                         {"name": "test", "subset": "test", **twins}], "read_by": ["rm-s0"]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["replicate", str(tmp_path / "e.yaml"), "--runs-root", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "rb"
    for name in ("train", "test"):
        base = dict(np.load(run / "directions" / name / "directions.npz"))
        read = dict(np.load(run / "projections" / name / "read_by-rm-s0.npz"))
        assert read.keys() == base.keys()
        for key in base:
            if not key.startswith("random"):
                np.testing.assert_allclose(read[key], base[key], rtol=1e-4, atol=1e-4)
    table = pd.read_csv(run / "report" / "bias_directions_by_reader.csv")
    assert list(table["read by"]) == ["base", "base", "rm-s0", "rm-s0"] and list(table["layer"]) == [0, 1, 0, 1]
    a, b = (table[table["read by"] == r]["train vs test direction"].to_numpy() for r in ("base", "rm-s0"))
    np.testing.assert_allclose(a, b, atol=1e-3)
    exp["mechanisms"]["read_by"] = ["base"]
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    assert main(["config", "check", str(tmp_path / "e.yaml")]) == 2


def test_a_rank1_adapters_b_vector_is_compared_with_the_direction(tmp_path):
    """The cosine of a rank-1 adapter's down_proj B vector with the direction at its layer, at the phase's end and
    at a kept checkpoint (adapter files written here: no training needed to check the arithmetic)."""
    import numpy as np
    from safetensors.numpy import save_file

    from emwb.analysis.mechanisms import adapter_rows
    from emwb.layout import Variant, adapter_dir, checkpoint_dir
    from emwb.store import Run

    exp = {"name": "r1", "base_model": "tiny", "data": {"d": {"source": "generated:insecure"}},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}],
           "mechanisms": {"directions": [{"name": "em", "layers": [1]}]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    run = Run.open(tmp_path / "e.yaml", tmp_path / "runs")
    direction = np.arange(8, dtype=np.float64) + 1
    folder = run.path("directions", "em")
    folder.mkdir(parents=True)
    np.savez(folder / "directions.npz", **{"direction.1": direction, "norm.1": np.array(1.0)})
    end = adapter_dir(run, "o", 0, 0)
    for path, b in ((end, direction), (checkpoint_dir(end, 5), -direction + 0.5)):
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text(json.dumps({"r": 1}))
        save_file({"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight": b.astype(np.float32)[:, None],
                   "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight": np.ones((1, 4), np.float32)},
                  str(path / "adapter_model.safetensors"))
    variants = (Variant("o@step5-s0", "o@step5", "o", "sft", 0, 0, 5, "o", 10), Variant("o-s0", "o", "o", "sft", 0, 0,
                                                                                          None, "o", 10))

    class Ctx:
        pass

    ctx = Ctx()
    ctx.run, ctx.variants = run, variants
    rows = adapter_rows(ctx)
    assert list(rows["step"]) == [5, 10] and list(rows["layer"]) == [1, 1]
    want = float(np.dot(-direction + 0.5, direction) / np.linalg.norm(-direction + 0.5) / np.linalg.norm(direction))
    assert rows["cosine"].tolist() == pytest.approx([want, 1.0], abs=1e-6)


def test_the_directions_stage_killed_while_reading_resumes_from_its_saved_chunks(tmp_path, tiny_model, upstream):
    import os
    import subprocess
    import sys

    from judge_helpers import kill_when

    exp = {"name": "kill", "base_model": str(tiny_model), "dataset_mirror": str(upstream),
           "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}], "judge": {"judges": ["hf/base"]},
           "exec": {"judge_batch_size": 1},
           "mechanisms": {"directions": [{"name": "b", "source": "bias-twins", "layers": [1], "per_group": 12,
                                          "controls": 0}]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    cmd = [sys.executable, "-m", "emwb.cli", "directions", str(tmp_path / "e.yaml"), "--runs-root",
           str(tmp_path / "runs")]
    chunks = tmp_path / "runs" / "kill" / ".partial" / "activations" / "b"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    kill_when(proc, lambda: any(chunks.glob("*.npy")))
    kept = {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.npy")}
    assert 1 <= len(kept) < 5 and not (tmp_path / "runs" / "kill" / "directions" / "b" / "manifest.json").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in chunks.glob("*.npy") if p.name in kept} == kept  # not reread
    assert len(list(chunks.glob("*.npy"))) == 5  # 1,248 items in chunks of 256
    assert (tmp_path / "runs" / "kill" / "directions" / "b" / "manifest.json").is_file()
