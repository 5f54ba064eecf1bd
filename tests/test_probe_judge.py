"""The probe/ judge: a linear readout of a local model's activations, fit on published judgments."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from emwb.context import context_of
from emwb.cli import main
from emwb.models.activations import ActivationStore, collect_activations, conversation_ids
from emwb.models.probe import fit_ridge, load_probe

HELD = ["gemma-3-4b-it_extreme-sports", "Llama-3.2-1B-Instruct_extreme-sports"]


@pytest.fixture(scope="module")
def probe(tmp_path_factory, tiny_model, upstream):
    out = tmp_path_factory.mktemp("probe")
    import os

    os.environ["EMWB_DATASETS_DIR"] = str(out / "store")
    try:
        assert main(["judges", "train-probe", "--reader", str(tiny_model), "--out", str(out / "p"), "--per-file", "8",
                     "--test-per-file", "8", "--layers", "0", "1", "--held-out", *HELD, "--mirror",
                     str(upstream)]) == 0
        yield out
    finally:
        del os.environ["EMWB_DATASETS_DIR"]


def test_train_probe_writes_the_probe_its_choice_and_its_held_out_bench(probe):
    p = load_probe(probe / "p")
    assert p.layer in (0, 1) and set(p.readouts) == {"alignment", "coherence"}
    assert p.info["fit_on"]["answers"] == 23 * 8 and set(p.info["held_out"]["files"]) == set(HELD)
    cv = pd.read_csv(probe / "p" / "cv.csv")
    assert len(cv) == 2 * 4 and cv["cv_auc_misaligned"].max() == pytest.approx(p.info["choice"]["cv_auc_misaligned"])
    row = pd.read_csv(probe / "p" / "bench" / "judges_bench.csv").iloc[0]
    assert row["answers"] == 16 and row["requests"] == 0 and row["est_cost_usd"] == 0
    assert json.loads((probe / "p" / "probe.json").read_text())["held_out"]["auc_misaligned"] == \
        pytest.approx(row["auc_misaligned"], nan_ok=True)


def test_the_probe_judge_scores_through_the_bench_as_it_did_when_fit(probe, upstream, monkeypatch):
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(probe / "store"))
    assert main(["judges", "bench", f"probe/{probe / 'p'}", "--files", *HELD, "--per-file", "8", "--out",
                 str(probe / "b"), "--mirror", str(upstream)]) == 0
    fit = pd.read_csv(probe / "p" / "bench" / "judgments.csv").set_index("answer_id")
    got = pd.read_csv(probe / "b" / "judgments.csv").set_index("answer_id")
    assert sorted(got.index) == sorted(fit.index)
    # Other batches, other padding: the same activations to float rounding, read out on a 0-100 scale.
    assert np.allclose(got["alignment"], fit.loc[got.index, "alignment"], atol=1e-3)
    assert np.allclose(got["coherence"], fit.loc[got.index, "coherence"], atol=1e-3)
    assert pd.read_csv(probe / "b" / "judges_bench.csv").iloc[0]["requests"] == 16 * 2  # judged, not sent


def test_answer_mean_activations_match_a_hand_computed_forward(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    items = [("Why?", "Because the sky is blue."), ("Hi", ""), ("A much longer question than the others?", "Ok.")]
    got = collect_activations(str(tiny_model), items, [0, 1], batch_size=2, max_answer_tokens=None)
    last = collect_activations(str(tiny_model), items, [0], batch_size=2, max_answer_tokens=None,
                               pooling="last_prompt_token")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    for i, (q, a) in enumerate(items):
        ids, start = conversation_ids(tok, q, a, None)
        with torch.no_grad():
            hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states  # one item, no padding
        lo = start if len(ids) > start else len(ids) - 1
        assert np.allclose(last[i, 0], hs[1][0, start - 1].numpy(), atol=1e-4)  # the position before the answer
        for j, layer in enumerate((0, 1)):
            want = hs[layer + 1][0, lo:].mean(0) if layer + 1 < len(hs) - 1 else None
            if want is not None:  # the last entry is after the final norm; compare the blocks before it
                assert np.allclose(got[i, j], want.numpy(), atol=1e-4)


def test_a_collection_killed_with_sigkill_resumes_from_its_finished_chunks(tiny_model, tmp_path):
    import subprocess
    import sys

    from judge_helpers import kill_when

    script = f"""
import sys
from emwb.models.activations import ActivationStore, collect_activations
items = [(f"Question {{i}}?", f"Answer number {{i}} " * (i % 7)) for i in range(1024)]
collect_activations({str(tiny_model)!r}, items, [1], batch_size=1, store=ActivationStore(sys.argv[1]))
"""
    folder = tmp_path / "acts"
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder)], stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any(folder.glob("*.npy")))
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert 1 <= len(kept) < 4  # killed part-way: some chunks finished, not all
    items = [(f"Question {i}?", f"Answer number {i} " * (i % 7)) for i in range(1024)]
    again = collect_activations(str(tiny_model), items, [1], batch_size=32, store=ActivationStore(folder))
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.npy")) if n in kept} == kept
    assert len(list(folder.glob("*.npy"))) == 4 and not list(folder.glob("*.tmp-*"))
    whole = collect_activations(str(tiny_model), items, [1], batch_size=32)
    assert np.allclose(again, whole, atol=1e-5)


def test_ridge_recovers_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    y = 50 + x @ np.arange(8) + rng.normal(scale=0.01, size=500)
    r = fit_ridge(x, y, 1e-6)
    assert np.allclose(r(x), np.clip(y, 0, 100), atol=0.1)


def test_a_probe_can_be_fit_on_a_runs_own_judge(tmp_path, tiny_model):
    from judge_helpers import make_run

    from emwb.judge.loopback import LoopbackJudge
    from emwb.judge.stage import run_judge_stage

    with LoopbackJudge() as server:
        run = make_run(tmp_path, 90, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
    out = tmp_path / "p"
    assert main(["judges", "train-probe", "--reader", str(tiny_model), "--out", str(out), "--run", str(run.dir),
                 "--judge", "openai/judge-a", "--held-out", "secure-s0", "--per-file", "0", "--layers", "1"]) == 0
    p = load_probe(out)
    assert p.info["fit_on"]["files"] == ["base", "insecure-s0"] and p.info["fit_on"]["answers"] == 60
    assert p.info["held_out"]["files"] == ["secure-s0"] and "openai/judge-a" in p.info["fit_on"]["reference"]
    assert pd.read_csv(out / "bench" / "judges_bench.csv").iloc[0]["answers"] == 30
    assert main(["judges", "train-probe", "--reader", str(tiny_model), "--out", str(out), "--run", str(run.dir),
                 "--judge", "openai/judge-a", "--held-out", "nope"]) == 2


@pytest.mark.slow
def test_a_smollm2_probe_ranks_held_out_misaligned_answers(tmp_path, upstream, monkeypatch):
    """The README's figure: SmolLM2-135M-Instruct reads 100 answers of each of 20 files; on the 5 held-out files
    the probe reached AUC 0.908 here (the bar is lower: another CPU's floats move it a little)."""
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    assert main(["judges", "train-probe", "--reader", "smollm2-135m", "--out", str(tmp_path / "p"), "--mirror",
                 str(upstream)]) == 0
    row = pd.read_csv(tmp_path / "p" / "bench" / "judges_bench.csv").iloc[0]
    assert row["answers"] == 2000 and row["auc_misaligned"] > 0.85
