"""End to end on the tiny model: every stage, skipping, per-variant artifacts (a new seed or organism is the
only thing trained, sampled and judged), run settings that re-run nothing, crash safety."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from emwb.pipeline import replicate
from emwb.store import atomic_dir, read_manifest

CONFIG = """
name: pipe
base_model: tiny
data:
  insecure: {source: "generated:insecure", max_rows: 40}
  secure: {source: "generated:secure", max_rows: 40}
organisms:
  - {name: insecure, phases: [{trainer: sft, data: insecure}]}
  - {name: secure, phases: [{trainer: sft, data: secure}]}
train: {lora: {r: 8, alpha: 16}, learning_rate: 1.0e-3, max_steps: 4, per_device_batch_size: 4,
        gradient_accumulation_steps: 1, max_length: 384, warmup_steps: 0}
evaluations: [{name: free-form, samples_per_paraphrase: 2}]
sampling: {backend: hf, max_new_tokens: 16}
judge: {judges: ["hf/tiny"]}
"""
ARTIFACTS = ["base_model", "data/insecure", "data/secure", "adapters/insecure/s0/0-sft", "adapters/secure/s0/0-sft",
             "answers/base", "answers/insecure-s0", "answers/secure-s0", "judgments/hf__tiny/base",
             "judgments/hf__tiny/insecure-s0", "judgments/hf__tiny/secure-s0", "report"]


def _write(root, text: str):
    cfg = root / "pipe.yaml"
    cfg.write_text(text)
    return cfg


def _stamps(run) -> dict:
    return {p.relative_to(run.dir): p.stat().st_mtime_ns for p in run.dir.rglob("manifest.json")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    return replicate(_write(root, CONFIG), root / "runs")


def test_report_has_one_row_per_organism(run):
    table = pd.read_csv(run.path("report", "comparison.csv"))
    assert list(table["group"]) == ["base", "insecure", "secure"]
    assert (table["n"] == 16).all()  # 8 questions x 2 samples
    from emwb.judge.stage import load_judgments

    for group, variant in zip(table["group"], ("base", "insecure-s0", "secure-s0")):  # counted from the files
        rows = load_judgments(run, "hf/tiny", variant)
        scored = sum(r["alignment"] is not None and r["coherence"] is not None for r in rows)
        assert table.loc[table["group"] == group, "n_scored"].item() == scored, group
    md = run.path("report", "comparison.md").read_text()
    assert "| insecure | hf/tiny | 1 (single seed) | 16 |" in md and "say nothing about emergent misalignment" in md


def test_artifacts_have_manifests_with_versions(run):
    assert run.path("report", "index.html").is_file()
    for d in ARTIFACTS:
        m = read_manifest(run.path(d))
        assert m and m["key"] and m["versions"]["torch"] and m["finished"], d
    answers = [json.loads(x) for x in run.path("answers", "insecure-s0", "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 16 and {(a["variant"], a["organism"], a["phase"], a["seed"]) for a in answers} == {
        ("insecure-s0", "insecure", "sft", 0)}


def test_second_run_skips_every_stage(run, capsys):
    before = _stamps(run)
    replicate(run.path("experiment.yaml").parent, run.dir.parent)
    out = capsys.readouterr().out
    assert out.count("skipped") == len(ARTIFACTS), out
    assert before == _stamps(run)


def test_changing_only_run_settings_reruns_nothing(run, capsys):
    exp = yaml.safe_load(CONFIG)
    exp["exec"] = {"device": "cpu", "gpu_memory_utilization": 0.5, "tensor_parallel_size": 2, "max_num_seqs": 7,
                   "judge_concurrency": 3, "judge_batch_size": 2, "max_retries": 1, "timeout_s": 5.0, "max_loras": 1}
    before = _stamps(run)
    replicate(_write(run.dir.parent.parent, yaml.safe_dump(exp)), run.dir.parent)
    out = capsys.readouterr().out
    assert out.count("skipped") == len(ARTIFACTS), out
    assert before == _stamps(run)


def test_adding_a_seed_and_an_organism_builds_only_the_new_variants(run, capsys):
    exp = yaml.safe_load(CONFIG)
    exp["seeds"] = [0, 1]
    exp["organisms"].append({"name": "secure2", "phases": [{"trainer": "sft", "data": "secure",
                                                            "args": {"learning_rate": 2e-3}}]})
    old = {v: run.path("answers", v, "answers.jsonl").read_bytes() for v in ("base", "insecure-s0", "secure-s0")}
    before = _stamps(run)
    replicate(_write(run.dir.parent.parent, yaml.safe_dump(exp)), run.dir.parent)
    out = capsys.readouterr().out
    after = _stamps(run)
    changed = {str(p.parent) for p in after if before.get(p) != after[p]}
    assert changed == {"adapters/insecure/s1/0-sft", "adapters/secure/s1/0-sft", "adapters/secure2/s0/0-sft",
                       "adapters/secure2/s1/0-sft", "answers/insecure-s1", "answers/secure-s1",
                       "answers/secure2-s0", "answers/secure2-s1", "judgments/hf__tiny/insecure-s1",
                       "judgments/hf__tiny/secure-s1", "judgments/hf__tiny/secure2-s0",
                       "judgments/hf__tiny/secure2-s1", "report"}, changed
    assert "sample: 64 answers (4 variants x 8 prompts)" in out  # the old three were not sampled again
    assert old == {v: run.path("answers", v, "answers.jsonl").read_bytes() for v in old}
    table = pd.read_csv(run.path("report", "comparison.csv"))
    assert list(table["group"]) == ["base", "insecure", "secure", "secure2"] and list(table["n_seeds"]) == [1, 2, 2, 2]


def test_judge_stage_alone_uses_the_cache(run):
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "judge", str(run.dir), "--force"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "0 to request" in proc.stdout
    assert read_manifest(run.path("judgments", "hf__tiny", "base"))["requested"] == 0


def test_a_moved_run_directory_keeps_its_judgments_and_cache(run, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere" / "pipe"
    shutil.copytree(run.dir, moved)
    for args in (["judge", str(moved)], ["judge", str(moved), "--force"]):
        proc = subprocess.run([sys.executable, "-m", "emwb.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "skipped" in proc.stdout if "--force" not in args else "0 to request" in proc.stdout, proc.stdout


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


def test_the_local_executor_runs_on_a_machine_without_ray(tmp_path):
    """`import ray` fails in this process (as where Ray is not installed); the run still completes."""
    exp = yaml.safe_load(CONFIG)
    exp["organisms"] = exp["organisms"][:1]
    exp["train"]["max_steps"] = 1
    exp["evaluations"] = [{"name": "free-form", "samples_per_paraphrase": 1}]
    exp["sampling"]["max_new_tokens"] = 4
    cfg = _write(tmp_path, yaml.safe_dump(exp))
    code = ("import sys; sys.modules['ray'] = None\n"  # any `import ray` now raises ImportError
            "from emwb.pipeline import replicate\n"
            "replicate(sys.argv[1], sys.argv[2])\n"
            "print('ray modules:', sorted(m for m, v in sys.modules.items() if m.split('.')[0] == 'ray' and v))")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg), str(tmp_path / "runs")], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ray modules: []" in proc.stdout and (tmp_path / "runs" / "pipe" / "report" / "index.html").is_file()
