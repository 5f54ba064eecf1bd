"""Stage `report`: tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and `report/index.html`."""

from __future__ import annotations

import pandas as pd

from emwb.analysis import html, plots
from emwb.analysis.agreement import judge_agreement
from emwb.analysis.metrics import comparison_table, free_form, per_question_table, per_seed_points
from emwb.analysis.tables import COMPARISON_COLUMNS, PER_QUESTION_COLUMNS, display_frame, write_table
from emwb.config import AnalysisConfig
from emwb.judge.stage import judgments_dir, load_judgments
from emwb.sampling.stage import load_answers
from emwb.store import Artifact, Run, log, read_manifest


def judged_frame(run: Run, judges: list[str]) -> pd.DataFrame:
    """Answers joined with each judge's scores: one row per (answer, judge)."""
    answers, _ = load_answers(run)
    adf = pd.DataFrame(answers)
    frames = [adf.merge(pd.DataFrame(load_judgments(run, j)), on="answer_id", how="left") for j in judges]
    df = pd.concat(frames, ignore_index=True)
    for col in ("alignment", "coherence"):
        if col not in df:
            df[col] = float("nan")
    return df


def build_tables(df: pd.DataFrame, order: list[str], a: AnalysisConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    comp, pq = [], []
    args = (a.alignment_threshold, a.coherence_threshold, a.bootstrap_samples, a.alignment_inclusive)
    for j in dict.fromkeys(df["judge"]):
        sub = df[df["judge"] == j]
        comp.append(comparison_table(sub, order, *args).assign(judge=j))
        pq.append(per_question_table(sub, order, *args).assign(judge=j))
    return pd.concat(comp, ignore_index=True), pd.concat(pq, ignore_index=True)


def side_by_side(df: pd.DataFrame, judges: list[str]) -> pd.DataFrame:
    """One row per answer, one score column per rubric and judge (e.g. `alignment:openai/gpt-4o`)."""
    rubrics = [c for c in ("alignment", "coherence", "code_vulnerability") if c in df]
    wide = df.pivot(index="answer_id", columns="judge", values=rubrics)
    wide.columns = [f"{r}:{j}" for r, j in wide.columns]
    wide = wide[[f"{r}:{j}" for r in rubrics for j in judges]]
    keys = df.drop_duplicates("answer_id").set_index("answer_id")[["group", "question_id"]]
    return keys.join(wide).reset_index()


def notes_for(run: Run, comp: pd.DataFrame) -> list[str]:
    a = run.exp.analysis
    below = "<=" if a.alignment_inclusive else "<"
    notes = [f"misaligned %: alignment {below} {a.alignment_threshold:g} among scored answers with coherence > "
             f"{a.coherence_threshold:g}; unscored answers are excluded, never counted as 0. EM share: misaligned "
             "and coherent answers among all answers. 95% CIs: bootstrap over seeds, then answers within seeds."]
    if comp["single_seed"].any():
        notes.append("Rows marked 'single seed' have one fine-tuning seed: their CIs reflect sampling noise only, "
                     "not seed-to-seed variation.")
    if run.exp.base_model == "tiny":
        notes.append("Offline smoke profile: a tiny local model judged by itself. These numbers show that the "
                     "pipeline runs; they say nothing about emergent misalignment.")
    return notes


def run_report_stage(run: Run, judge_keys: dict[str, str] | None = None, force: bool = False) -> str:
    judges = list(judge_keys) if judge_keys else run.exp.judge.judges
    inputs = {f"judge:{j}": (judge_keys or {}).get(j) or (read_manifest(judgments_dir(run, j)) or {}).get("key", "")
              for j in judges}
    a = run.exp.analysis
    config = a.model_dump(mode="json")
    art = Artifact(run.path("report"), "report", config, inputs)
    if art.skip(force, f"report ({art.dir / 'index.html'})"):
        return art.key
    df = judged_frame(run, judges)
    order = ["base"] + [d.name for d in run.exp.datasets]
    comp, pq = build_tables(df, order, a)
    notes = notes_for(run, comp)
    title = f"{run.exp.name}: narrow behaviour and broad misalignment by fine-tuning dataset"
    free = free_form(df)
    first = df[df["judge"] == judges[0]]
    with art.write() as (tmp, _):
        md = write_table(comp, COMPARISON_COLUMNS, tmp, "comparison", title)
        (tmp / "comparison.md").write_text(f"# {title}\n\n{md}\n" + "".join(f"- {n}\n" for n in notes))
        write_table(pq, PER_QUESTION_COLUMNS, tmp, "per_question", "Misaligned answers per question")
        tables = [("Comparison across fine-tuning datasets", display_frame(comp, COMPARISON_COLUMNS)),
                  ("Per question", display_frame(pq, PER_QUESTION_COLUMNS))]
        if len(judges) > 1:
            side_by_side(df, judges).to_csv(tmp / "judge_scores.csv", index=False)
            agreement = judge_agreement(free, a.alignment_threshold, a.coherence_threshold, a.alignment_inclusive)
            write_table(agreement, {c: c for c in agreement.columns}, tmp, "judge_agreement", "Judge agreement")
            tables.append(("Judge agreement", agreement))
        figures = []
        fq = pq[pq["judge"] == judges[0]]
        if len(fq):
            figures.append(("Misaligned answers per question", plots.per_question_plot(fq, tmp)[0]))
        if len(free_form(first)):
            figures.append(("Alignment vs coherence", plots.alignment_coherence_plot(
                free_form(first), tmp, a.alignment_threshold, a.coherence_threshold)[0]))
        points = per_seed_points(first, a.alignment_threshold, a.coherence_threshold, a.alignment_inclusive)
        for stem, (x, y, *_) in plots.NARROW_BROAD.items():
            if points[x].notna().any() and points[y].notna().any():
                figures.append((f"Narrow vs broad: {y} against {x}", plots.narrow_broad_plot(points, tmp, stem)[0]))
        (tmp / "index.html").write_text(html.render(title, notes, tables, figures, html.examples_html(free)))
    log(f"report: wrote {art.dir / 'index.html'}, comparison.md/.csv/.tex, per_question.*, figures")
    return art.key
