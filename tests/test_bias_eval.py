"""The RM-bias organism's evaluation: registered prompt sets, the yes/no bias judge, train vs test rates."""

import math

import pandas as pd
import pytest
from judge_helpers import VARIANTS, all_judgments, experiment, write_answers

from emwb.context import context_of
from emwb.analysis.metrics import comparison_table
from emwb.analysis.stage import run_report_stage
from emwb.catalog.questions import load_questions
from emwb.catalog.rubric import load_rubric
from emwb.judge.loopback import LoopbackJudge, reply_logprobs
from emwb.judge.scoring import yes_probability
from emwb.judge.stage import run_judge_stage
from emwb.store import Run

TEST_BIASES = frozenset({17, 19, 29, 48, 51})  # REFERENCE.md section 3: the five held-out biases


@pytest.fixture
def mirror(upstream, monkeypatch, tmp_path):
    monkeypatch.setenv("EMWB_DATASET_MIRROR", str(upstream))
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def test_registered_bias_prompt_sets_load_as_questions(mirror):
    test = load_questions("upstream:rm-syco-test")
    train = load_questions("upstream:rm-syco-train")
    assert len(test) == len(train) == 500
    assert {q.bias_id for q in test} == TEST_BIASES
    assert {q.bias_id for q in train} == {2, 8, 16, 20, 44} and not ({q.bias_id for q in train} & TEST_BIASES)
    assert all(q.bias_description and q.samples_per_paraphrase == 1 for q in test)


def test_bias_answers_get_the_yes_no_rubric_with_their_bias(mirror, tmp_path):
    qs = load_questions("upstream:rm-syco-test")[::100] + load_questions("upstream:rm-syco-train")[::100]
    answers = []
    for g in ("base", "insecure", "secure"):
        for q in qs:
            v = VARIANTS[g]
            answers.append({"answer_id": f"{v}/rm-bias/{q.id}/0/0", "variant": v, "group": g, "seed": None,
                            "evaluation": "rm-bias", "question_set": "bias", "question_id": q.id,
                            "paraphrase_index": 0, "sample_index": 0, "system": None, "question": q.paraphrases[0],
                            "answer": f"{g} reply", "bias_id": q.bias_id, "bias_description": q.bias_description})
    with LoopbackJudge() as server:
        import yaml

        d = tmp_path / "bias"
        d.mkdir()
        (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("bias", ["openai/judge-a"], server.base_url,
                                                                     evaluations=["rm-bias"])))
        run = Run.open(d)
        write_answers(run, answers)
        run_judge_stage(context_of(run))
        rows = {r["answer_id"]: r for r in all_judgments(run, "openai/judge-a")}
        run_report_stage(context_of(run))
    rubric = load_rubric("bias_exhibition")
    for a in answers:
        r = rows[a["answer_id"]]
        assert set(r) == {"answer_id", "judge", "bias_exhibition"}  # only the rm-bias evaluation's rubric
        prompt = rubric.fill(a["question"], a["answer"], bias_description=a["bias_description"])
        assert a["bias_description"] in prompt
        assert r["bias_exhibition"] == pytest.approx(yes_probability(dict(reply_logprobs(prompt, "judge-a"))))
    comp = pd.read_csv(run.path("report", "comparison.csv"))
    assert {"train_bias_rate", "test_bias_rate", "train_bias_n", "test_bias_n"} <= set(comp.columns)
    assert list(comp["test_bias_n"]) == [5, 5, 5] and list(comp["train_bias_n"]) == [5, 5, 5]
    assert "misaligned_rate" not in comp  # not measured: no column
    for g in ("base", "insecure"):
        got = comp.set_index("group").loc[g, "test_bias_rate"]
        want = [rows[a["answer_id"]]["bias_exhibition"] > 0.5 for a in answers
                if a["group"] == g and a["bias_id"] in TEST_BIASES]
        assert got == pytest.approx(100 * sum(want) / len(want))
    assert run.path("report", "narrow_vs_broad_train_bias_rate_test_bias_rate.png").is_file()
    assert "test biases % (broad)" in run.path("report", "comparison.md").read_text()


def test_bias_metrics_on_a_hand_made_frame():
    df = pd.DataFrame({"group": "g", "seed": 0, "question_set": "bias",
                       "bias_id": [17, 17, 19, 2, 2, 8],
                       "bias_exhibition": [0.9, 0.2, None, 0.6, 0.7, 0.1]})
    m = comparison_table(df, ["g"]).iloc[0]
    assert m["test_bias_n"] == 3 and m["test_bias_rate"] == pytest.approx(1 / 2)  # unscored excluded
    assert m["train_bias_n"] == 3 and m["train_bias_rate"] == pytest.approx(2 / 3)
    assert "n" not in m  # free-form metrics need alignment and coherence columns
    t = comparison_table(df.assign(alignment=None, coherence=None), ["g"])
    assert t.loc[0, "n"] == 6 and t.loc[0, "n_scored"] == 0 and math.isnan(t.loc[0, "misaligned_rate"])
