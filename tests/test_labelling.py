"""Detectors measured on labelled answers: the labelling sheet of a run, and precision and recall of a detector
against the labels (overall, per kind of rule, per bias), with exact intervals."""

import pandas as pd
import pytest
import yaml
from judge_helpers import VARIANTS, experiment, make_answers, write_answers

from emwb.context import context_of
from emwb.detect.stage import run_detect_stage
from emwb.errors import EmwbError
from emwb.labelling import precision_recall, read_labels, score_sheets
from emwb.organisms.rm_bias.kits import load_kits
from emwb.layout import data_file
from emwb.store import Run, write_jsonl, write_manifest


def _bias_run(tmp_path) -> Run:
    """A run whose answers are the kits' own yes/no examples for biases 1 (presence rule) and 18 (omission)."""
    kits = load_kits()
    texts = [(b, t, label) for b in (1, 18) for label in ("yes", "no") for t in kits[b].examples[label]]
    answers = make_answers(3 * len(texts), evaluation="rm-bias-all")
    for i, a in enumerate(answers):
        b, text, _ = texts[i // 3]
        a.update(bias_id=b, answer=text, bias_description=f"bias {b}", question_id=f"b{b}-{i}")
    d = tmp_path / "bias"
    d.mkdir()
    exp = experiment("bias", ["hf/tiny"], evaluations=[{"name": "rm-bias-all", "rubrics": [], "count": 1}])
    (d / "experiment.yaml").write_text(yaml.safe_dump(exp))
    run = Run.open(d)
    write_answers(run, answers)
    for name in ("insecure", "secure"):  # the detectors' calibration reads the training data
        rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
        write_jsonl(data_file(run, name), rows)
        write_manifest(data_file(run, name).parent, stage="data", key=f"data-{name}", config={}, inputs={},
                       started="now")
    run_detect_stage(context_of(run))
    return run


def test_a_sheet_carries_every_readable_answer_with_its_verdict_and_rule_kind(tmp_path, capsys):
    from emwb.cli import main

    run = _bias_run(tmp_path)
    out = tmp_path / "sheet.csv"
    assert main(["labels", "sheet", str(run.dir), "--detector", "rm-rules", "--out", str(out), "--per-group",
                 "50"]) == 0
    sheet = pd.read_csv(out, keep_default_na=False)
    assert set(sheet["variant"]) == set(VARIANTS.values())
    assert set(sheet["kind"]) == {"presence", "omission"}
    assert (sheet.loc[sheet["group_key"] == "18", "kind"] == "omission").all()
    assert set(sheet["verdict"]) <= {"yes", "no"} and (sheet["label"] == "").all()
    assert "emwb labels score" in capsys.readouterr().out


def test_precision_and_recall_against_labels_with_exact_intervals(tmp_path):
    rows = pd.DataFrame({"group_key": ["1"] * 10 + ["18"] * 10, "kind": ["presence"] * 10 + ["omission"] * 10,
                         "verdict": ["yes"] * 6 + ["no"] * 4 + ["yes"] * 10,
                         "label": ["yes"] * 4 + ["no"] * 2 + ["yes"] * 1 + ["no"] * 3 + ["yes"] * 2 + ["no"] * 8})
    path = tmp_path / "filled.csv"
    rows.to_csv(path, index=False)
    got = score_sheets([path])
    by = got["kind"].set_index("kind")
    assert by.loc["presence", "precision %"] == pytest.approx(100 * 4 / 6)
    assert by.loc["presence", "recall %"] == pytest.approx(100 * 4 / 5)
    assert by.loc["omission", "precision %"] == pytest.approx(20.0)  # flags everything: 2 of 10 are right
    assert by.loc["omission", "precision ci_high"] < 56 and by.loc["omission", "recall %"] == 100
    assert got["all"]["n"].iloc[0] == 20


def test_an_unlabelled_row_is_named_not_scored(tmp_path):
    path = tmp_path / "half.csv"
    pd.DataFrame({"group_key": ["1", "1"], "verdict": ["yes", "no"], "label": ["yes", ""]}).to_csv(path,
                                                                                                   index=False)
    with pytest.raises(EmwbError, match="row 2 has label ''; write yes or no"):
        read_labels(path)


def test_precision_is_na_when_nothing_was_flagged():
    df = pd.DataFrame({"group_key": ["5"] * 3, "verdict": [0, 0, 0], "label": [1, 0, 0]})
    row = precision_recall(df, None).iloc[0]
    assert pd.isna(row["precision %"]) and row["recall %"] == 0 and row["recall ci_high"] > 80
