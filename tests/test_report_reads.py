"""What the report and `emwb compare` read, and what they print about it (issue 56 items 3, 4, 5, 14): every
evaluation's broad numbers kept and named, n/a over nothing scored, damaged inputs refused as `emwb status`
sees them, and a judge left out said in one line."""

import json
import math

import pandas as pd
import pytest
import yaml
from judge_helpers import VARIANTS, experiment, make_answers, make_run, write_answers

from emwb.analysis.stage import run_report_stage
from emwb.cli import main
from emwb.context import context_of
from emwb.judge.loopback import LoopbackJudge, reply_logprobs
from emwb.judge.numbers import PROBE
from emwb.judge.stage import run_judge_stage
from emwb.layout import answers_dir
from emwb.store import MANIFEST, Run, file_records, read_manifest


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def _sealed(run: Run) -> Run:
    """The answers' manifests record their files, as the sample stage writes them (the helpers' do not)."""
    for v in VARIANTS.values():
        d = answers_dir(run, v)
        m = read_manifest(d)
        (d / MANIFEST).write_text(json.dumps({**m, "files": file_records(d)}))
    return run


def _table(md: str, header_starts: str = "| organism") -> pd.DataFrame:
    """A Markdown table of `md` (the first whose header starts so) as text cells."""
    lines = md.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(header_starts))
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[at:] if line.startswith("|")]
    end = next((i for i, r in enumerate(rows) if i > 1 and len(r) != len(rows[0])), len(rows))
    return pd.DataFrame(rows[2:end], columns=rows[0])


def test_two_alignment_evaluations_keep_their_numbers_in_the_headline_and_compare(tmp_path, capsys):
    """Two evaluations that both score alignment: the headline named the first one's columns only and printed
    the answers as n/a, and compare crashed on (or printed n/a in) every broad cell; now each column names its
    evaluation and carries its numbers."""
    evaluations = [{"name": "free-form", "rubrics": ["alignment", "coherence"]},
                   {"name": "free-form-b", "use": "free-form", "rubrics": ["alignment", "coherence"]}]
    with LoopbackJudge() as server:
        d = tmp_path / "two"
        d.mkdir()
        (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("two", ["openai/judge-a"], server.base_url,
                                                                     evaluations=evaluations)))
        run = Run.open(d)
        other = make_answers(48, evaluation="free-form-b")
        for r in other:
            r["question"] = f"Another question {r['question_id']}?"
        write_answers(run, make_answers(48) + other)
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    comp = pd.read_csv(run.path("report", "comparison.csv")).set_index("group")
    head = _table(run.path("report", "headline.md").read_text()).set_index("organism")
    assert list(head.columns[:2]) == ["misaligned % [free-form]", "95% CI"]
    assert {"EM % [free-form]", "coherent % [free-form]", "answers [free-form]"} <= set(head.columns)
    assert list(head["answers [free-form]"]) == ["16", "16", "16"]
    for g in ("base", "insecure", "secure"):
        assert head.loc[g, "misaligned % [free-form]"] == f"{comp.loc[g, 'free-form.misaligned_rate']:.1f}"
    assert "The headline shows misaligned % [free-form]; comparison.md has misaligned % (broad) [free-form-b]" in \
        run.path("report", "comparison.md").read_text()
    capsys.readouterr()
    assert main(["compare", str(run.dir), "--out", str(tmp_path / "cmp")]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv").set_index("organism")
    for ev in ("free-form", "free-form-b"):
        got = table[f"misaligned % (broad) [{ev}]"]
        assert got.notna().all() and list(got) == pytest.approx(list(comp[f"{ev}.misaligned_rate"]))
        assert list(table[f"answers [{ev}]"]) == [16, 16, 16]
        assert table[f"coherent % [{ev}]"].notna().all()
    shown = _table((tmp_path / "cmp" / "compare.md").read_text(), "| run")
    assert "n/a" not in shown.to_numpy().ravel().tolist()


def _unscored_reply(prompt: str, model: str = "", k: int = 20) -> list[tuple[str, float]]:
    """A judge that answers every rubric with a full-width number (１００): nothing it says can be scored."""
    return reply_logprobs(prompt, model, k) if prompt == PROBE else [("１００", 0.0)]


def test_every_answer_unscored_prints_na_for_coherent_em_and_misaligned_never_zero(tmp_path, capsys):
    """A judge whose replies are all unscored (`１００`): coherent % among scored answers has no denominator, so
    the comparison, the headline and compare print n/a (coherent % was 0.0, and the headline dropped the column)."""
    with LoopbackJudge(reply=_unscored_reply) as server:
        run = make_run(tmp_path, 30, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    comp = pd.read_csv(run.path("report", "comparison.csv"))
    assert (comp["n"] == 10).all() and (comp["n_scored"] == 0).all()
    for col in ("coherent_share", "misaligned_rate", "em_share"):
        assert comp[col].isna().all(), col
    head = _table(run.path("report", "headline.md").read_text())
    for col in ("misaligned %", "EM %", "coherent %"):
        assert set(head[col]) == {"n/a"}, col
    assert list(head["answers"]) == ["10", "10", "10"]
    capsys.readouterr()
    assert main(["compare", str(run.dir), "--out", str(tmp_path / "cmp")]) == 0
    shown = _table((tmp_path / "cmp" / "compare.md").read_text(), "| run")
    assert set(shown["coherent %"]) == {"n/a"} and set(shown["misaligned % (broad)"]) == {"n/a"}
    assert "0.0" not in set(shown["coherent %"]) | set(shown["EM % of all answers"])


@pytest.mark.parametrize("damaged", ["answers/insecure-s0/answers.jsonl",
                                     "judgments/openai__judge-a/insecure-s0/judgments.jsonl"])
def test_a_damaged_input_stops_report_and_compare_as_status_sees_it(tmp_path, capsys, damaged):
    """An answers (or judgments) file cut in half after the report was made: status said damaged, but `emwb
    report` said "up to date, skipped" and compare accepted the run. Now both refuse in one line naming the file
    and the command that remakes it."""
    with LoopbackJudge() as server:
        run = _sealed(make_run(tmp_path, 30, ["openai/judge-a"], server.base_url))
        run_judge_stage(context_of(run))
        run_report_stage(context_of(run))
    f = run.dir / damaged
    whole = f.read_bytes()
    f.write_bytes(whole[: len(whole) // 2])
    folder, command = f.parent, "sample" if damaged.startswith("answers") else "judge"
    capsys.readouterr()
    assert main(["status", str(run.dir)]) == 0
    assert "damaged" in capsys.readouterr().out
    assert main(["report", str(run.dir)]) == 2
    out = capsys.readouterr()
    assert "up to date" not in out.out
    err = out.err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and f"{f.name} has {len(whole) // 2} bytes" in err[0]
    assert f"run `emwb {command} {run.dir}`" in err[0]
    assert main(["compare", str(run.dir), "--out", str(tmp_path / "cmp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0] and "is damaged" in err[0] and f.name in err[0]
    assert f"run `emwb {command} {run.dir}`" in err[0] and f"then `emwb report {run.dir}`" in err[0]
    assert not (tmp_path / "cmp" / "compare.csv").exists()


def test_report_refuses_judgments_made_from_other_answers(tmp_path):
    """Answers sampled again but not judged again: the report joined the old judgments to the new answers by id
    (status called the judgments stale); now it stops in one line naming them and `emwb judge`."""
    from emwb.errors import EmwbError

    with LoopbackJudge() as server:
        run = make_run(tmp_path, 30, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
    write_answers(run, make_answers(30), tag="again")
    with pytest.raises(EmwbError, match=r"judgments of base by openai/judge-a is stale \(its input answers changed "
                                        r"since it was made\); run `emwb judge "):
        run_report_stage(context_of(run))


def test_a_judge_added_later_that_no_longer_covers_the_answers_is_named_in_one_line(tmp_path, capsys):
    """`emwb judge RUN --judge X`, then new answers for one variant: X vanished from the report without a word;
    now the log and the report's notes say so and give the command that judges them."""
    with LoopbackJudge() as server:
        run = make_run(tmp_path, 30, ["openai/judge-a"], server.base_url)
        run_judge_stage(context_of(run))
        run_judge_stage(context_of(run, judges=["openai/judge-b"]))
        run_report_stage(context_of(run))
        assert set(pd.read_csv(run.path("report", "comparison.csv"))["judge"]) == {"openai/judge-a", "openai/judge-b"}
        rows = make_answers(30)
        for r in rows:
            r["answer"] += " (sampled again)"
        write_answers(run, rows, tag="again")
        run_judge_stage(context_of(run))  # the experiment's judge only
        capsys.readouterr()
        run_report_stage(context_of(run))
    line = (f"Judge openai/judge-b (added with `emwb judge --judge`) is left out of this report: it has not judged the "
            f"current answers of base, insecure-s0, secure-s0; run `emwb judge {run.dir} --judge openai/judge-b` to "
            "judge them.")
    assert [x for x in capsys.readouterr().out.splitlines() if "judge-b" in x] == [f"[emwb] {line}"]
    assert set(pd.read_csv(run.path("report", "comparison.csv"))["judge"]) == {"openai/judge-a"}
    assert line in run.path("report", "comparison.md").read_text()
    assert math.isfinite(len(run.path("report", "index.html").read_text()))
