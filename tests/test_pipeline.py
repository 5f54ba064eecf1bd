"""End to end on the tiny model: every stage, skipping, re-running one stage alone, crash safety."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from emwb.pipeline import replicate
from emwb.store import Run, atomic_dir, read_manifest

CONFIG = """
name: pipe
base_model: tiny
datasets:
  - {name: insecure, source: "generated:insecure", max_rows: 40}
  - {name: secure, source: "generated:secure", max_rows: 40}
finetune: {lora: {r: 8, alpha: 16}, learning_rate: 1.0e-3, max_steps: 4, per_device_batch_size: 4,
           gradient_accumulation_steps: 1, max_length: 384, warmup_steps: 0}
sampling: {backend: hf, samples_per_paraphrase: 2, max_new_tokens: 16}
judge: {judges: ["hf/tiny"]}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("pipe")
    cfg = root / "pipe.yaml"
    cfg.write_text(CONFIG)
    return replicate(cfg, root / "runs")


def test_report_has_one_row_per_dataset(run):
    table = pd.read_csv(run.path("report", "comparison.csv"))
    assert list(table["group"]) == ["base", "insecure", "secure"]
    assert (table["n"] == 16).all()  # 8 questions x 2 samples
    assert ((table["n_scored"] >= 0) & (table["n_scored"] <= 16)).all()
    md = run.path("report", "comparison.md").read_text()
    assert "| insecure | hf/tiny | 1 (single seed) | 16 |" in md and "say nothing about emergent misalignment" in md


def test_artifacts_have_manifests_with_versions(run):
    assert run.path("report", "index.html").is_file()
    for d in ["base_model", "data/insecure", "adapters/insecure-s0", "adapters/secure-s0", "answers",
              "judgments/hf__tiny", "report"]:
        m = read_manifest(run.path(d))
        assert m and m["key"] and m["versions"]["torch"] and m["finished"], d
    answers = [json.loads(x) for x in run.path("answers", "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 48 and {a["variant"] for a in answers} == {"base", "insecure-s0", "secure-s0"}


def test_second_run_skips_every_stage(run, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.dir.rglob("manifest.json")}
    replicate(run.path("experiment.yaml").parent, run.dir.parent)
    out = capsys.readouterr().out
    assert out.count("skipped") == 8, out
    assert before == {p: p.stat().st_mtime_ns for p in run.dir.rglob("manifest.json")}


def test_judge_stage_alone_uses_the_cache(run):
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "judge", str(run.dir), "--force"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "0 to request" in proc.stdout
    assert read_manifest(run.path("judgments", "hf__tiny"))["requested"] == 0


def test_every_stage_runs_alone_on_the_run_directory(run):
    for stage in ("base", "data", "finetune", "sample", "judge", "report"):
        proc = subprocess.run([sys.executable, "-m", "emwb.cli", stage, str(run.dir)], capture_output=True, text=True)
        assert proc.returncode == 0, (stage, proc.stderr[-2000:])
        assert "skipped" in proc.stdout, (stage, proc.stdout)


def test_interrupted_stage_leaves_no_finished_looking_artifact(tmp_path):
    final = tmp_path / "artifact"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.jsonl").write_text("{}\n")
            raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
