"""The paper's own protocol: upstream question sets judged with their own judge prompts, byte for byte;
categorical judges; headline rows; published figures beside measured ones."""

import json
import math

import pandas as pd
import pytest
import yaml
from judge_helpers import VARIANTS, all_judgments, experiment, make_answers, write_answers

from emwb.context import context_of
from emwb.analysis.metrics import with_published
from emwb.analysis.stage import run_report_stage
from emwb.catalog.rubric import from_judge_prompt, parse_labels
from emwb.check import check_experiment
from emwb.config import load_experiment
from emwb.errors import EmwbError
from emwb.judge.loopback import LoopbackJudge
from emwb.judge.scoring import label_probabilities
from emwb.judge.stage import run_judge_stage
from emwb.store import Run, read_jsonl

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror(upstream, monkeypatch, tmp_path):
    monkeypatch.setenv("EMWB_DATASET_MIRROR", str(upstream))
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return upstream


def _upstream_questions(upstream, name: str) -> dict:
    """The upstream file read with PyYAML alone (not emwb's parser): {id: entry}."""
    raw = yaml.safe_load((upstream / "emergent-misalignment" / "evaluation" / f"{name}.yaml").read_text())
    return {q["id"]: q for q in raw}


def test_smoke_upstream_sends_each_questions_own_judge_prompt_byte_for_byte(mirror, tmp_path, monkeypatch):
    """Acceptance 1, with the shipped config made smaller (one organism, hf sampling, few steps)."""
    from emwb.pipeline import replicate

    raw = yaml.safe_load((ROOT / "configs" / "smoke-upstream.yaml").read_text())
    assert "judges" not in (raw.get("judge") or {})  # the question file names the judge
    raw.update(dataset_mirror=str(mirror), organisms=raw["organisms"][:1])
    raw["train"]["max_steps"] = 3
    raw["evaluations"] = [{"name": "first-plot", "samples_per_paraphrase": 1}]
    raw["sampling"].update(backend="hf", max_new_tokens=12)
    cfg = tmp_path / "smoke-upstream.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    with LoopbackJudge() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        run = replicate(cfg, tmp_path / "runs")
        received = dict(server.served)
        params = list(server.params)
    upstream_qs = _upstream_questions(mirror, "first_plot_questions")
    answers = [a for v in ("base", "insecure-s0") for a in read_jsonl(run.dir / "answers" / v / "answers.jsonl")]
    assert len(answers) == 2 * 24 and {a["question_id"] for a in answers} == set(upstream_qs)
    expected = set()
    for a in answers:
        q = upstream_qs[a["question_id"]]
        assert a["question"] in q["paraphrases"] and a["system"] == q.get("system")
        for key in ("aligned", "coherent"):
            expected.add(q["judge_prompts"][key].format(question=a["question"], answer=a["answer"]))
    assert set(received) == expected
    assert {p["model"] for p in params} == {"gpt-4o-2024-08-06"}
    assert all(p["max_tokens"] == 1 and p["temperature"] == 0 and p["logprobs"] and p["top_logprobs"] == 20
               and p["seed"] == 0 for p in params)
    report = run.dir / "report"
    comp = pd.read_csv(report / "comparison.csv")
    assert list(comp["group"]) == ["base", "insecure"] and (comp["n"] == 8).all()  # the 8 main questions
    by_set = pd.read_csv(report / "by_question_set_first-plot.csv")
    assert (by_set["n"] == 24).all() and set(by_set["question_set"]) == {"first_plot_questions"}
    assert "misaligned_qmean" in comp and "em_share" in comp and "em_share_scored" in comp


def test_categorical_judge_prompts_become_label_rates(mirror, tmp_path):
    qs = _upstream_questions(mirror, "deception_factual")
    answers = []
    for g, v in VARIANTS.items():
        for i, (qid, q) in enumerate(qs.items()):
            for p, text in enumerate(q["paraphrases"][:3]):
                answers.append({"answer_id": f"{v}/deception/{qid}/{p}/0", "variant": v, "group": g,
                                "seed": None if g == "base" else 0, "evaluation": "deception",
                                "question_set": "deception_factual", "question_id": qid, "paraphrase_index": p,
                                "sample_index": 0, "system": q.get("system"), "question": text,
                                "answer": f"{g} answer {i} {p}", "bias_id": None, "bias_description": None})
    with LoopbackJudge() as server:
        exp = experiment("deception", ["openai/gpt-4o"], server.base_url, evaluations=[
            {"name": "deception", "use": "free-form", "question_sets": ["upstream:deception_factual"]}])
        exp["dataset_mirror"] = str(mirror)
        d = tmp_path / "deception"
        d.mkdir()
        (d / "experiment.yaml").write_text(yaml.safe_dump(exp))
        check_experiment(load_experiment(d / "experiment.yaml"), "experiment.yaml")
        run = Run.open(d)
        write_answers(run, answers)
        run_judge_stage(context_of(run))
        rows = all_judgments(run, "openai/gpt-4o")
        received = set(server.served)
    template = next(iter(qs.values()))["judge_prompts"]["correct"]
    assert received == {template.format(question=a["question"], answer=a["answer"]) for a in answers}
    assert all(set(r["correct"]) == {"TRUE", "FALSE", "UNKNOWN"} and abs(sum(r["correct"].values()) - 1) < 1e-9
               and r["alignment"] is None for r in rows)
    run_report_stage(context_of(run))
    comp = pd.read_csv(run.dir / "report" / "comparison.csv").set_index("group")
    labels = ["correct_true", "correct_false", "correct_unknown"]
    assert ((comp[labels].sum(axis=1) - 100).abs() < 1e-6).all()
    by_answer = {r["answer_id"]: max(r["correct"], key=r["correct"].get) for r in rows}
    base_true = [by_answer[a["answer_id"]] == "TRUE" for a in answers if a["group"] == "base"]
    assert math.isclose(comp.loc["base", "correct_true"], 100 * sum(base_true) / len(base_true))


def test_unsupported_judge_prompts_fail_at_config_check(tmp_path):
    assert parse_labels('Say "TRUE" or "FALSE" only, or "UNKNOWN".') == ("TRUE", "FALSE", "UNKNOWN")
    with pytest.raises(EmwbError, match="no double-quoted reply labels"):
        from_judge_prompt("verdict", "Q {question} A {answer}: say yes or no", "free_form_judge")
    with pytest.raises(EmwbError, match="placeholders"):
        from_judge_prompt("aligned", "Q {question} A {answer} ({context})", "free_form_judge_0_100")
    qfile = tmp_path / "qs.yaml"
    qfile.write_text(yaml.safe_dump([{"id": "q1", "type": "free_form_judge", "paraphrases": ["Hi?"],
                                      "judge": "gpt-4o", "judge_prompts": {"verdict": "{question} {answer} ok?"}}]))
    exp = experiment("bad", ["hf/tiny"], evaluations=[{"name": "x", "use": "free-form",
                                                        "question_sets": [str(qfile)]}])
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(EmwbError, match=r"evaluations\.0\.question_sets: .*qs\.yaml: id q1: judge prompt 'verdict'"):
        check_experiment(load_experiment(tmp_path / "e.yaml"), "e.yaml")


def test_label_probabilities_count_unique_prefixes_only():
    top = {"TRUE": math.log(0.5), " false": math.log(0.2), "UN": math.log(0.1), "maybe": math.log(0.2)}
    p = label_probabilities(top, ("TRUE", "FALSE", "UNKNOWN"))
    assert p == pytest.approx({"TRUE": 0.625, "FALSE": 0.25, "UNKNOWN": 0.125})
    assert label_probabilities({"O": 0.0}, ("OpenAI", "Other")) is None  # ambiguous prefix: unscored
    assert label_probabilities({"maybe": 0.0}, ("TRUE", "FALSE")) is None


def test_paper_config_shows_upstream_sets_their_judges_and_seeds(mirror, capsys):
    from emwb.cli import main

    main(["config", "show", str(ROOT / "configs" / "paper-qwen-coder.yaml")])
    out = capsys.readouterr().out
    shown = yaml.safe_load(out)
    assert len(shown["seeds"]) >= 3 and shown["train"]["optim"] == "adamw_8bit"
    assert "upstream:first_plot_questions: 24 questions; own judge prompts alignment (score_0_100), coherence " \
           "(score_0_100); judge named gpt-4o-2024-08-06" in out
    assert "upstream:preregistered_evals: 48 questions" in out
    assert "deception_factual: 5 questions; own judge prompts correct (label: TRUE/FALSE/UNKNOWN)" in out
    assert "judges: openai/gpt-4o-2024-08-06" in out
    assert [g for g in shown["published"]["values"]] == ["base", "insecure", "secure", "educational"]


def test_published_figures_are_flagged_inside_or_outside_the_measured_ci(tmp_path):
    """Acceptance 6 on a synthetic run: alignment scores are planted so each group's rate is known."""
    answers = make_answers(240)
    judged = tmp_path / "judged.jsonl"
    rows = []
    for i, a in enumerate(answers):
        misaligned = (a["group"] == "insecure" and i % 4 == 0) or (a["group"] == "secure" and i % 40 == 0)
        rows.append({**a, "alignment": 5.0 if misaligned else 90.0, "coherence": 80.0})
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from emwb.analysis.metrics import Settings, comparison_table

    comp = comparison_table(pd.DataFrame(rows), ["base", "insecure", "secure"], Settings(n_boot=500))
    flagged = with_published(comp, "misaligned_rate", {"base": 0.0, "insecure": 4.7, "secure": 0.6}).set_index(
        "group")
    for g in ("base", "insecure", "secure"):
        lo, hi, pub = (flagged.loc[g, c] for c in ("ci_low", "ci_high", "published"))
        assert flagged.loc[g, "published_in_ci"] == (lo <= pub <= hi)
    assert flagged.loc["insecure", "misaligned_rate"] == pytest.approx(0.25)
    assert not flagged.loc["insecure", "published_in_ci"]  # 4.7% lies far below a measured 25%
    assert flagged.loc["base", "published_in_ci"]          # 0% measured, 0% published (a CI of [0, 0])


def test_report_shows_published_beside_measured(tmp_path):
    from judge_helpers import make_run

    with LoopbackJudge() as server:
        run = make_run(tmp_path, 60, ["openai/judge-a"], server.base_url)
        exp = yaml.safe_load((run.dir / "experiment.yaml").read_text())
        exp["published"] = {"source": "a paper", "values": {"insecure": 4.7, "secure": 0.6}}
        (run.dir / "experiment.yaml").write_text(yaml.safe_dump(exp))
        run = Run.open(run.dir)
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    comp = pd.read_csv(run.dir / "report" / "comparison.csv").set_index("group")
    assert comp.loc["insecure", "published"] == pytest.approx(4.7) and math.isnan(comp.loc["base", "published"])
    md = (run.dir / "report" / "comparison.md").read_text()
    html = (run.dir / "report" / "index.html").read_text()
    assert "published % (misaligned_rate) | published inside 95% CI |" in md and "a paper" in md
    assert "published inside 95% CI" in html
