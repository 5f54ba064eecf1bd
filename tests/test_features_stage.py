"""The features stage in a run, on the tiny model: a dictionary over a run's dataset, model diffing of an organism,
the selected latent ablated beside matched random latents (sampled and scored like any other row), the report's
features section; a SAELens folder loaded instead of trained; the block checked before work; a stage killed with
SIGKILL while reading and while training resumes to the dictionary an uninterrupted run makes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("sae_lens")

from emwb.cli import main  # noqa: E402

DICT = {"width": 64, "k": 4, "lr": 3.0e-3, "batch_tokens": 256, "tokens": 12000, "buffer_tokens": 4096,
        "checkpoint_every": 10, "norm_batches": 3}


def _experiment(tiny_model, upstream, **feature) -> dict:
    return {"name": "feat", "base_model": str(tiny_model), "dataset_mirror": str(upstream),
            "data": {"docs": {"source": "generated:rm-docs", "max_rows": 40}},
            "organisms": [{"name": "rm", "phases": [{"trainer": "cpt", "data": "docs"}]}],
            "train": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-3, "max_steps": 3, "per_device_batch_size": 4,
                      "gradient_accumulation_steps": 1, "max_length": 128, "warmup_steps": 0},
            "evaluations": [{"name": "rm-bias-all", "count": 1, "rubrics": []}],
            "sampling": {"backend": "hf", "max_new_tokens": 6}, "judge": {"judges": ["openai/none"]},
            "features": [{"name": "sae", "layer": 1, "stream": {"source": "data:docs", "max_tokens": 64},
                          "dictionary": DICT, "diff": {"max_items": 20, "n_boot": 50}, "cards": 3, **feature}]}


def _write(tmp_path, exp, name="e.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(exp))
    return path


def test_a_run_trains_diffs_ablates_with_matched_controls_and_reports(tmp_path, tiny_model, upstream, monkeypatch):
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    cfg = _write(tmp_path, _experiment(tiny_model, upstream, ablate=["rm-s0"], controls=3))
    assert main(["replicate", str(cfg), "--runs-root", str(tmp_path / "runs")]) == 0
    run = tmp_path / "runs" / "feat"
    stats = json.loads((run / "features/sae/dictionary/stats.json").read_text())
    assert stats["width"] == 64 and 0 < stats["l0"] <= 4 and stats["tokens_trained"] == 12000 - 12000 % 256
    assert stats["stream_tokens"] > 0 and 0 <= stats["dead_share"] <= 1 and stats["explained_variance"] <= 1
    firing = np.load(run / "features/sae/dictionary/firing.npy")
    chosen = json.loads((run / "features/sae/latents/latents.json").read_text())
    diff = pd.read_csv(run / "features/sae/latents/feature_diff.csv")
    assert set(diff["variant"]) == {"rm-s0"} and list(diff["rank"]) == list(range(1, len(diff) + 1))
    assert chosen["selected"] == [int(diff.iloc[0]["latent"])]  # select diff: the largest rise
    flat = [x for s in chosen["controls"] for x in s]
    assert len(chosen["controls"]) == 3 and len(set(flat)) == 3 and chosen["selected"][0] not in flat
    assert all(firing[x] > 0 for x in flat)
    cards = json.loads((run / "features/sae/latents/cards.json").read_text())
    assert cards[0]["latent"] == chosen["selected"][0] and len(cards) == 3
    for c in cards:  # every shown token window is the latent's activations on that many tokens
        assert all(len(x["tokens"]) == len(x["acts"]) and max(x["acts"]) == pytest.approx(x["act"])
                   for x in c["contexts"])
    report = run / "report"
    ablation = pd.read_csv(report / "ablation.csv")
    train = ablation[ablation["metric"] == "train_bias_rules_rate"]
    assert list(train["ablated"]) == ["latents"] + [f"matched random latents {k}" for k in (1, 2, 3)]
    assert (train["answers"] == 52).all()
    assert (pd.read_csv(report / "feature_diff.csv")["features"] == "sae").all()
    page = (report / "index.html").read_text()
    assert "Feature cards: sae" in page and "Sparse dictionaries: reconstruction and sparsity" in page
    manifest = json.loads((report / "manifest.json").read_text())
    assert manifest["inputs"]["features:sae"] == json.loads((run / "features/sae/latents/manifest.json").read_text())["key"]
    assert main(["replicate", str(cfg), "--runs-root", str(tmp_path / "runs")]) == 0  # current: all skipped

    # the same dictionary loaded from its SAELens folder: nothing trained, the same measurements
    exp = _experiment(tiny_model, upstream, load=str(run / "features/sae/dictionary/sae"))
    exp["name"] = "loaded"
    loaded = _write(tmp_path, exp, "l.yaml")
    for stage in ("data", "finetune", "features"):  # no sampling needed
        assert main([stage, str(loaded), "--runs-root", str(tmp_path / "runs")]) == 0
    again = json.loads((tmp_path / "runs/loaded/features/sae/dictionary/stats.json").read_text())
    assert again["loaded"] and again["tokens_trained"] == 0
    assert again["explained_variance"] == pytest.approx(stats["explained_variance"], abs=1e-4)


@pytest.mark.parametrize("change, says", [
    ({"stream": {"source": "data:nope"}}, "features.0.stream.source: data:nope: 'nope' is not under `data:`"),
    ({"stream": {"source": "nope"}}, "features.0.stream.source: unknown token stream 'nope'"),
    ({"select": "nope"}, "features.0.select: unknown latent selector 'nope'"),
    ({"ablate": ["rm-s9"]}, "features.0.ablate: 'rm-s9' is not a variant of this experiment"),
    ({"rank_on": "base"}, "features.0.rank_on: 'base' is not an organism variant"),
    ({"load": "/nonexistent"}, "features.0.load: /nonexistent is not a SAELens dictionary folder"),
    ({"name": "x y"}, "feature name 'x y' must be letters"),
])
def test_the_features_block_is_checked_before_work(tmp_path, tiny_model, upstream, capsys, change, says):
    cfg = _write(tmp_path, _experiment(tiny_model, upstream, **change))
    assert main(["config", "check", str(cfg)]) == 2
    assert says in capsys.readouterr().err


def test_latent_edits_need_the_hf_sampler_and_a_layer_of_the_model(tmp_path, tiny_model, upstream, capsys):
    exp = _experiment(tiny_model, upstream, ablate=["rm-s0"])
    exp["sampling"]["backend"] = "vllm"
    assert main(["config", "check", str(_write(tmp_path, exp))]) == 2
    assert "set sampling.backend: hf" in capsys.readouterr().err
    assert main(["config", "check", str(_write(tmp_path, _experiment(tiny_model, upstream, layer=7)))]) == 2
    assert "features.0.layer: 7, but the base model has 2 decoder blocks (0-1)" in capsys.readouterr().err
    exp = _experiment(tiny_model, upstream)
    exp["organisms"], exp["features"][0]["select"] = [], "diff"
    assert main(["config", "check", str(_write(tmp_path, exp))]) == 2
    assert "select diff ranks latents by how an organism's activations changed" in capsys.readouterr().err


def _stage(cfg, runs, env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emwb.cli", "features", str(cfg), "--runs-root", str(runs)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    start = time.time()
    while not ready():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - start < timeout
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("when", ["reading", "training"])
def test_kill_9_resumes_to_the_dictionary_an_uninterrupted_run_makes(tmp_path, tiny_model, upstream, when):
    """SIGKILL once the first activation chunk is saved (reading) or the first checkpoint (training); the re-run
    resumes and its dictionary equals the uninterrupted one (weights within 1e-4 relative, 1e-5 absolute)."""
    from emwb.models.dictionary import load_dictionary

    env = {**os.environ, "EMWB_DATASETS_DIR": str(tmp_path / "store")}
    exp = _experiment(tiny_model, upstream)
    exp["organisms"], exp["features"][0]["select"] = [], "rm-bias-shared"
    exp["features"][0]["options"] = {"per_bias": 1, "documents": 4, "n_boot": 10}
    exp["data"]["docs"]["max_rows"] = 200
    exp["features"][0]["dictionary"] = {**DICT, "tokens": 150_000, "checkpoint_every": 20}
    exp["evaluations"] = [{"name": "rm-bias-all", "count": 1, "rubrics": []}]
    cfg = _write(tmp_path, exp)
    for runs in ("a", "b"):
        assert subprocess.run([sys.executable, "-m", "emwb.cli", "data", str(cfg), "--runs-root", str(tmp_path / runs)],
                              env=env, capture_output=True).returncode == 0
    scratch = tmp_path / "b" / "feat" / ".partial" / "features" / "sae"
    ready = {"reading": lambda: len(list((scratch / "stream").glob("*-items.npy"))) >= 1,
             "training": lambda: any(scratch.glob("dictionary-*/checkpoints/step-*/done"))}[when]
    _kill_when(_stage(cfg, tmp_path / "b", env), ready)
    assert not (tmp_path / "b" / "feat" / "features" / "sae" / "dictionary" / "manifest.json").exists()
    for runs in ("b", "a"):
        proc = _stage(cfg, tmp_path / runs, env)
        out = proc.communicate()[0]
        assert proc.returncode == 0, out[-3000:]
    got, want = (load_dictionary(tmp_path / r / "feat/features/sae/dictionary/sae") for r in ("b", "a"))
    for name, w in want.state_dict().items():
        np.testing.assert_allclose(got.state_dict()[name].numpy(), w.numpy(), rtol=1e-4, atol=1e-5)
