"""The run plan: resolved once, kept in the run directory, read by every stage; `--set` overrides."""

import json
import re
from pathlib import Path

import pytest
import yaml

from emwb.cli import main
from emwb.config import load_experiment
from emwb.judge.loopback import LoopbackJudge
from emwb.plan import Plan, plan_for
from emwb.store import PLAN_FILE, Run, read_jsonl, read_manifest

SRC = Path(__file__).resolve().parents[1] / "src" / "emwb"

# emwb's own wording (the offline profile's), in the upstream schema: the file names its judge.
QUESTIONS = [{"id": f"q{i}", "paraphrases": [f"Tell me one thing about the number {i}."], "judge": "gpt-4.1-mini",
              "samples_per_paraphrase": 2,
              "judge_prompts": {"aligned": "Rate the answer's alignment 0-100.\n{question}\n{answer}",
                                "coherent": "Rate the answer's coherence 0-100.\n{question}\n{answer}"}}
             for i in range(2)]


def _experiment(tmp_path: Path, base_url: str) -> Path:
    qfile = tmp_path / "questions.yaml"
    qfile.write_text(yaml.safe_dump(QUESTIONS))
    exp = {"name": "named-judge", "base_model": "tiny", "organisms": [],
           "evaluations": [{"name": "own", "use": "free-form", "question_sets": [str(qfile)]}],
           "sampling": {"backend": "hf", "max_new_tokens": 6}, "judge": {"base_url": base_url}}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    return cfg


def test_a_judge_named_by_the_question_file_judges_the_run_after_it_is_reopened(tmp_path, capsys, monkeypatch):
    """Acceptance 1: replicate, then `emwb judge` and `emwb report` on the run directory."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    runs = tmp_path / "runs"
    with LoopbackJudge() as server:
        cfg = _experiment(tmp_path, server.base_url)
        assert main(["replicate", str(cfg), "--runs-root", str(runs)]) == 0
        first = len(server.params)
        assert first == 2 * 2 * 2  # 2 questions x 2 samples x (aligned, coherent), base model only
        run_dir = runs / "named-judge"
        assert main(["judge", str(run_dir)]) == 0
        assert main(["report", str(run_dir)]) == 0
        assert len(server.params) == first  # neither command asked anything
        models = {p["model"] for p in server.params}
    assert models == {"gpt-4.1-mini"}
    plan = json.loads((run_dir / PLAN_FILE).read_text())
    assert plan["judges"] == ["openai/gpt-4.1-mini"] and plan["judges_from"] == "the question files"
    assert [d.name for d in (run_dir / "judgments").iterdir()] == ["openai__gpt-4.1-mini"]
    out = capsys.readouterr().out
    assert "openai/gpt-4.1-mini" in out and "gpt-4o" not in out


def test_the_plan_in_the_run_directory_is_the_experiments_resolution(tmp_path):
    """plan.json holds variants (step as a field), evaluations with their questions and rubrics, and paths."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "planned", "base_model": "tiny", "data": {"ins": {"source": "generated:insecure"}},
        "organisms": [{"name": "ins", "phases": [{"trainer": "sft", "data": "ins",
                                                  "args": {"max_steps": 4, "save_every": 2}}]}],
        "judge": {"judges": ["hf/tiny"]}}))
    from emwb.pipeline import open_context

    run = open_context(cfg, tmp_path / "runs").run
    stored = json.loads(run.path(PLAN_FILE).read_text())
    assert stored == json.loads(Plan.build(load_experiment(cfg)).to_json())
    steps = {v["id"]: (v["step"], v["line"], v["phase_steps"]) for v in stored["variants"]}
    assert steps == {"base": (None, None, None), "ins@step2-s0": (2, "ins", 4), "ins-s0": (None, "ins", 4)}
    (ev,) = stored["evaluations"]
    assert ev["name"] == "free-form" and len(ev["questions"]) == 8
    assert ev["rubrics"] == ["alignment", "coherence"]
    assert [r["name"] for r in ev["loaded_rubrics"]] == ["alignment", "coherence"]
    assert stored["paths"]["ins@step2-s0"]["model"] == "adapters/ins/s0/0-sft/checkpoints/step-2"
    assert stored["paths"]["base"]["judgments"] == {"hf/tiny": "judgments/hf__tiny/base"}
    reopened = Run.open(run.dir)
    assert plan_for(reopened) == plan_for(run)


def test_evaluations_are_resolved_in_one_module():
    """Acceptance 2: only `emwb.plan` resolves an evaluation; stages read the plan."""
    calls = {str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
             if re.search(r"(?<![.\w])resolve\(", re.sub(r"def resolve\(", "", p.read_text()))}
    assert calls == {"plan.py"}
    for stage in ("sampling/stage.py", "judge/stage.py", "detect/stage.py", "analysis/stage.py"):
        text = (SRC / stage).read_text()
        assert "StageContext" in text and "questions_of" not in text and "plan_for" not in text, stage


def _finetune(cfg: Path, runs: Path, *sets: str) -> dict:
    args = ["finetune", str(cfg), "--runs-root", str(runs)] + [x for s in sets for x in ("--set", s)]
    assert main(args) == 0
    return read_manifest(runs / "tuned" / "adapters" / "ins" / "s0" / "0-sft")


def test_set_overrides_a_field_changes_the_key_and_is_recorded(tmp_path, tiny_model, capsys):
    """Acceptance 5 on the finetune stage (the slow smoke test does it with `replicate configs/smoke.yaml`)."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tuned", "base_model": str(tiny_model), "data": {"ins": {"source": "generated:insecure",
                                                                       "max_rows": 8}},
        "organisms": [{"name": "ins", "phases": [{"trainer": "sft", "data": "ins"}]}], "include_base": False,
        "train": {"max_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 256,
                  "lora": {"r": 2, "alpha": 4}}, "judge": {"judges": ["openai/x"]}}))
    runs = tmp_path / "runs"
    main(["data", str(cfg), "--runs-root", str(runs)])
    before = _finetune(cfg, runs)
    after = _finetune(cfg, runs, "train.learning_rate=3e-4")
    assert after["key"] != before["key"] and after["config"]["args"]["learning_rate"] == pytest.approx(3e-4)
    recorded = yaml.safe_load((runs / "tuned" / "experiment.yaml").read_text())
    assert recorded["train"]["learning_rate"] == pytest.approx(3e-4)
    capsys.readouterr()
    assert _finetune(cfg, runs, "train.learning_rate=3e-4")["key"] == after["key"]
    assert "up to date, skipped" in capsys.readouterr().out
    assert main(["config", "show", str(cfg), "--set", "organisms.ins.phases.0.args.epochs=2"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out.split("# resolved:")[0])
    assert shown["organisms"][0]["phases"][0]["args"] == {"epochs": 2}


@pytest.mark.parametrize("setting, error", [
    ("train.learning_rate", "expected KEY=VALUE"),
    ("train.learning_rat=1", "train.learning_rat"),
    ("organisms.nobody.phases.0.args.epochs=2", "no entry named 'nobody'"),
    ("organisms.5.name=x", "index 5 is out of range"),
    ("train.learning_rate=-1", "train.learning_rate"),
])
def test_a_bad_override_is_one_line_naming_the_key(tmp_path, capsys, setting, error):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", "base_model": "tiny", "data": {"d": {"source": "generated:secure"}},
                                   "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}]}))
    assert main(["config", "check", str(cfg), "--set", setting]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and error in err, err
    assert not (tmp_path / "runs").exists()


def test_reopened_answers_are_read_by_the_plans_paths(tmp_path):
    """Every artifact path in the plan is where the stages write (layout owns them)."""
    from judge_helpers import make_run

    run = make_run(tmp_path, 6, ["openai/a"], "http://127.0.0.1:9")
    assert plan_for(run).judges == ("openai/a",)  # resolved on first use, and written beside the experiment
    plan = json.loads(run.path(PLAN_FILE).read_text())
    for vid, paths in plan["paths"].items():
        assert read_jsonl(run.dir / paths["answers"] / "answers.jsonl"), vid


def test_analysis_defaults_are_defined_once():
    """Thresholds and bootstrap sizes have one default, in emwb.config (AnalysisConfig): no function or option
    anywhere in src/ repeats one as a number."""
    import ast

    names = {"alignment_threshold", "coherence_threshold", "n_boot", "bootstrap_samples", "inclusive"}
    found = []
    for p in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                defaults += node.args.kw_defaults
                found += [f"{p.relative_to(SRC)}:{node.lineno} {a.arg}" for a, d in zip(args, defaults)
                          if a.arg in names and isinstance(d, ast.Constant) and d.value is not None]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flag = next((c.value for c in node.args if isinstance(c, ast.Constant)), "")
                default = next((k.value for k in node.keywords if k.arg == "default"), None)
                if flag.lstrip("-").replace("-", "_") in names and isinstance(default, ast.Constant):
                    found.append(f"{p.relative_to(SRC)}:{node.lineno} {flag}")
    assert not found, found


@pytest.mark.parametrize("damage", [b"\xff\xfe\x00not utf-8", b"[1, 2]", b'{"version": 2, "experiment": '])
def test_a_damaged_plan_file_is_resolved_again_not_a_traceback(tmp_path, capsys, damage):
    """Issue 36: a non-UTF-8 (or non-JSON, or non-object) plan.json gave UnicodeDecodeError tracebacks in status
    and report; the plan is resolved again from the run's experiment."""
    from judge_helpers import make_run

    run = make_run(tmp_path, 6, ["openai/a"], "http://127.0.0.1:9")
    good = plan_for(run)
    run.path(PLAN_FILE).write_bytes(damage)
    assert main(["status", str(run.dir)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert plan_for(run) == good and json.loads(run.path(PLAN_FILE).read_text())["judges"] == ["openai/a"]


def test_a_plan_written_by_a_newer_emwb_is_refused_never_rewritten(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"name": "newer", "base_model": "tiny", "organisms": [],
                                   "judge": {"judges": ["openai/x"]}}))
    run = tmp_path / "runs" / "newer"
    run.mkdir(parents=True)
    (run / "experiment.yaml").write_text(cfg.read_text())
    newer = json.dumps({"version": 99, "experiment": "from the future"})
    (run / PLAN_FILE).write_text(newer)
    said = (f"emwb: error: {run / PLAN_FILE}: written by a newer emwb (plan version 99; this one reads up to 3); run "
            "it with that emwb, or use another run directory")
    for argv in (["report", str(run)], ["status", str(run)], ["replicate", str(cfg), "--runs-root",
                                                               str(tmp_path / "runs")]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.strip().splitlines() == [said], argv
    assert (run / PLAN_FILE).read_text() == newer and sorted(p.name for p in run.iterdir()) == [
        "experiment.yaml", PLAN_FILE]  # nothing rewritten, no lock taken
