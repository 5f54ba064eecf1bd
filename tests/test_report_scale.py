"""The report's first figure, its console line, and its per-question parts on many questions (issue 56 items 12
and 13). The time and size of a 20,000-question report: benchmarks/report_scale.py (not a timed test)."""

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from judge_helpers import make_run

from emwb.analysis.stage import run_report_stage
from emwb.context import context_of
from emwb.judge.loopback import LoopbackJudge
from emwb.judge.stage import run_judge_stage


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def _smoke_like(tmp_path):
    """A smoke-shaped report context: the tiny model judging itself on free-form, a judge-free narrow detector."""
    from emwb.analysis.metrics import METRICS, Settings, comparison_table
    from emwb.config import AnalysisConfig

    rng = np.random.default_rng(0)
    rows = []
    for g, flagged in (("base", 0.4), ("insecure", 0.9), ("secure", 0.1)):
        for i in range(40):
            rows.append({"group": g, "evaluation": "free-form", "question_id": f"q{i % 8}", "alignment": 90.0,
                         "coherence": 80.0, "code-patterns": np.nan})
            rows.append({"group": g, "evaluation": "held-out-code", "question_id": f"c{i}", "alignment": np.nan,
                         "coherence": np.nan, "code-patterns": float(rng.random() < flagged)})
    df = pd.DataFrame(rows).assign(seed=0, judge="hf/tiny")
    evals = {"free-form": [METRICS.get(n) for n in ("misaligned_rate", "em_share", "coherent_share", "n")],
             "held-out-code": [METRICS.get("pattern_rate")]}
    comp = comparison_table(df, ["base", "insecure", "secure"], Settings(), evals).assign(judge="hf/tiny")
    run = SimpleNamespace(exp=SimpleNamespace(analysis=AnalysisConfig(), base_model="tiny"))
    return SimpleNamespace(run=run, comp=comp, evals=evals, settings=Settings(), judges=["hf/tiny"], out=tmp_path,
                           head=df, diffs=None), df


def test_the_first_figure_is_the_headlines_columns_the_measured_one_first(tmp_path):
    """The lead figure was the tiny judge's (all-zero) misaligned % per question, and the judge-free narrow column
    had no figure: now it is the headline's rate columns side by side with their CIs, the judge-free one first,
    the self-judged one marked a pipeline check, each organism's marker linking to its answers."""
    from emwb.analysis.headline import headline_figure

    ctx, df = _smoke_like(tmp_path)
    caption, svg = headline_figure(ctx)
    text = (tmp_path / svg).read_text()
    titles = [t for t in re.findall(r"<text[^>]*>([^<]*)</text>", text) if t.startswith(("narrow:", "broad:"))]
    assert titles[0].startswith("narrow: vulnerable-pattern code %") and "(no judge)" in text
    assert titles[1].startswith("broad: misaligned %") and "pipeline check" in text
    assert len(re.findall(r"<a [^>]*href=\"#answers\?group=", text)) == 6  # 3 organisms x 2 panels
    assert "judge-free column first" in caption


def test_the_report_leads_with_that_figure_and_lists_only_the_sections_that_made_something(tmp_path, capsys):
    """The console listed all 16 registered sections for a report that has 5; now only those that produced a
    table, figure, part or file. The page's lead figure is the headline figure, inline."""
    with LoopbackJudge() as server:
        run = make_run(tmp_path, 30, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
        capsys.readouterr()
        run_report_stage(context_of(run))
    out = capsys.readouterr()
    line = next(x for x in out.out.splitlines() if "report: wrote" in x)
    assert line.endswith("and 5 sections (headline, differences, by-question-set, per-question, free-form)"), line
    assert "report:" in out.err and "section" in out.err  # the progress bar (stderr)
    page = run.path("report", "index.html").read_text()
    lead = re.search(r"<figure id='lead-figure'>(.*?)</figure>", page, re.S).group(1)
    assert "broad: misaligned %" in lead and "per question" not in lead
    assert "per_question_free-form.png" in page  # the per-question figure is one of the others


def test_many_questions_cap_the_per_question_table_figure_and_examples(tmp_path, monkeypatch):
    """A 20,000-question set took most of a run in the per-question parts and wrote a 35 MB page: above the cap,
    the table, its tests and the figure hold the questions that differ most from base (the others' counts in
    per_question_all.csv, a note says so), and the examples the questions with the lowest alignment."""
    from emwb.analysis import questions

    monkeypatch.setattr(questions, "TABLE_CAP", 3)
    monkeypatch.setattr(questions, "FIGURE_CAP", 2)
    monkeypatch.setattr(questions, "EXAMPLES_CAP", 2)
    with LoopbackJudge() as server:
        run = make_run(tmp_path, 240, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    out = run.path("report")
    every = pd.read_csv(out / "per_question_all.csv")
    assert len(every) == 24 and set(every["question_id"]) == {f"q{i}" for i in range(8)}
    table = pd.read_csv(out / "per_question.csv")
    assert len(table) == 9 and table["question_id"].nunique() == 3
    rates = every.pivot(index="question_id", columns="group", values="misaligned_rate")
    gap = rates.drop(columns="base").sub(rates["base"], axis=0).abs().max(axis=1).sort_values(ascending=False)
    assert list(dict.fromkeys(table["question_id"])) == list(gap.index[:3])  # the largest differences, in order
    shown = table[table["group"] == "insecure"].set_index("question_id")
    assert list(shown["misaligned_rate"]) == pytest.approx(list(rates.loc[shown.index, "insecure"]))
    page = out.joinpath("index.html").read_text()
    assert "Per question (free-form): 8 questions; the table, its tests against base and the figure" in page
    assert "the 2 of 8 that differ most from base" in page
    assert page.count("<summary>q") == 2 * 3  # examples: 2 questions per organism
    assert "The 2 of 8 questions whose answers reach the lowest alignment" in page


def test_untested_cells_count_in_the_correction_with_p_1():
    """Leaving cells out of the tests never loosens the Benjamini-Hochberg correction: they count with p = 1."""
    from emwb.analysis.differences import cell_tests
    from emwb.analysis.metrics import METRICS, Settings

    rows = []
    for g, bad in (("base", 0), ("insecure", 6)):
        for q in range(2):
            rows += [{"group": g, "evaluation": "e", "question_id": f"q{q}", "paraphrase_index": 0, "seed": 0,
                      "alignment": 10.0 if i < bad * (q + 1) else 90.0, "coherence": 90.0} for i in range(14)]
    df = pd.DataFrame(rows)
    table = pd.DataFrame([{"group": g, "evaluation": "e", "question_id": f"q{q}"} for g in ("base", "insecure")
                          for q in range(2)])
    evals = {"e": [METRICS.get("misaligned_rate")]}
    alone = cell_tests(table, df, "question_id", evals, Settings(permutations=200))
    among = cell_tests(table, df, "question_id", evals, Settings(permutations=200), untested=1000)
    assert alone["misaligned_rate_vs_base_sig"].eq(True).any()
    assert not among["misaligned_rate_vs_base_sig"].eq(True).any()
