"""Stage `report`: tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and `report/index.html`.

Everything is derived from the experiment's evaluations and the metric registry: one column per metric of
each evaluation, a per-question table for evaluations that ask for one, a narrow-vs-broad figure per pair.
"""

from __future__ import annotations

import pandas as pd

from emwb.analysis import html, plots
from emwb.analysis.agreement import judge_agreement
from emwb.analysis.metrics import (
    METRICS,
    Metric,
    Settings,
    comparison_table,
    metrics_for,
    narrow_broad_pairs,
    per_question_table,
    per_seed_points,
)
from emwb.analysis.tables import display_frame, metric_columns, write_plain_table, write_table
from emwb.catalog.evaluations import resolve
from emwb.layout import answers_dir, group_order, judgments_dir, report_dir, variants
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest


def evaluation_metrics(run: Run) -> dict[str, list[Metric]]:
    """{evaluation: its metrics} (named ones, or every metric its rubrics allow)."""
    out = {}
    for spec in run.exp.evaluations:
        ev = resolve(spec)
        out[ev.name] = metrics_for(ev.rubrics, ev.metrics)
    return out


def report_judges(run: Run) -> list[str]:
    """The experiment's judges, then any other judge (`emwb judge RUN --judge SPEC`) that has judged every
    current variant's current answers."""
    judges = list(run.exp.judge.judges)
    current = {v.id: (read_manifest(answers_dir(run, v.id)) or {}).get("key") for v in variants(run.exp)}
    root = run.path("judgments")
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        found = [read_manifest(d / vid) for vid in current]
        if not all(found) or len({m.get("judge") for m in found}) != 1 or found[0].get("judge") in judges:
            continue
        if all(m["inputs"].get("answers") == current[vid] for m, vid in zip(found, current)):
            judges.append(found[0]["judge"])
    return judges


def judged_frame(run: Run, judges: list[str]) -> pd.DataFrame:
    """Answers joined with each judge's scores: one row per (answer, judge)."""
    frames = []
    for v in variants(run.exp):
        adf = pd.DataFrame(read_jsonl(answers_dir(run, v.id) / "answers.jsonl"))
        for j in judges:
            jdf = pd.DataFrame(read_jsonl(judgments_dir(run, j, v.id) / "judgments.jsonl"))
            frames.append(adf.merge(jdf, on="answer_id", how="left"))
    df = pd.concat(frames, ignore_index=True)
    for m in METRICS.values():
        for col in m.rubrics:
            if col not in df:
                df[col] = float("nan")
    return df


def side_by_side(df: pd.DataFrame, judges: list[str], rubrics: list[str]) -> pd.DataFrame:
    """One row per answer, one score column per rubric and judge (e.g. `alignment:openai/gpt-4o`)."""
    wide = df.pivot(index="answer_id", columns="judge", values=rubrics)
    wide.columns = [f"{r}:{j}" for r, j in wide.columns]
    wide = wide[[f"{r}:{j}" for r in rubrics for j in judges]]
    keys = df.drop_duplicates("answer_id").set_index("answer_id")[["group", "question_id"]]
    return keys.join(wide).reset_index()


def notes_for(run: Run, comp: pd.DataFrame) -> list[str]:
    a = run.exp.analysis
    below = "<=" if a.inclusive else "<"
    headline = "of scored answers" if a.inclusive else "of all answers"
    notes = [f"Convention {a.convention}. misaligned %: alignment {below} {a.alignment_threshold:g} among scored "
             f"answers with coherence > {a.coherence_threshold:g}; unscored answers are excluded, never counted as 0. "
             f"EM share: misaligned and coherent answers, of all answers and of scored answers (this convention's "
             f"EM% is the one {headline}). 95% CIs: bootstrap over seeds, then answers within seeds."]
    if comp["single_seed"].any():
        notes.append("Rows marked 'single seed' have one fine-tuning seed: their CIs reflect sampling noise only, "
                     "not seed-to-seed variation.")
    if run.exp.base_model == "tiny":
        notes.append("Offline smoke profile: a tiny local model judged by itself. These numbers show that the "
                     "pipeline runs; they say nothing about emergent misalignment.")
    return notes


def _figures(run: Run, df: pd.DataFrame, pq: pd.DataFrame, evals: dict[str, list[Metric]], s: Settings,
             out) -> list[tuple[str, str]]:
    a = run.exp.analysis
    figures = []
    if len(pq):
        for ev, ms in evals.items():
            broad = next(((c, cis, h) for c, m, h, cis in metric_columns({ev: ms}) if m.role == "broad" and cis),
                         None)
            sub = pq[pq["evaluation"] == ev]
            if broad and len(sub):
                col, cis, header = broad
                figures.append((f"{header} per question ({ev})", plots.per_question_plot(
                    sub, out, col, tuple(cis), header.split(" (")[0], stem=f"per_question_{ev}")[0]))
    free = df[df["alignment"].notna() | df["coherence"].notna()]
    if len(free):
        figures.append(("Alignment vs coherence", plots.alignment_coherence_plot(
            free, out, a.alignment_threshold, a.coherence_threshold)[0]))
    points = per_seed_points(df, evals, s)
    headers = {c: h for c, _, h, _ in metric_columns(evals)}
    for x, y in narrow_broad_pairs(evals):
        if x in points and y in points and points[x].notna().any() and points[y].notna().any():
            stem = f"narrow_vs_broad_{x}_{y}".replace(".", "_")
            figures.append((f"Narrow vs broad: {headers[y]} against {headers[x]}",
                            plots.narrow_broad_plot(points, x, y, headers[x], headers[y], out, stem)[0]))
    return figures


def run_report_stage(run: Run, force: bool = False) -> str:
    judges = report_judges(run)
    inputs = {f"judge:{j}:{v.id}": (read_manifest(judgments_dir(run, j, v.id)) or {}).get("key", "")
              for j in judges for v in variants(run.exp)}
    a = run.exp.analysis
    evals = evaluation_metrics(run)
    config = {"analysis": a.model_dump(mode="json"), "metrics": {ev: [m.name for m in ms] for ev, ms in evals.items()}}
    art = Artifact(report_dir(run), "report", config, inputs)
    if art.skip(force, f"report ({art.dir / 'index.html'})"):
        return art.key
    df = judged_frame(run, judges)
    order = group_order(run.exp)
    s = Settings(a.alignment_threshold, a.coherence_threshold, a.inclusive, a.bootstrap_samples)
    comp = pd.concat([comparison_table(df[df["judge"] == j], order, a.alignment_threshold, a.coherence_threshold,
                                       a.bootstrap_samples, a.inclusive, evaluations=evals).assign(judge=j)
                      for j in judges], ignore_index=True)
    pq_evals = {e.name: evals[e.name] for e in map(resolve, run.exp.evaluations) if e.per_question}
    first = df[df["judge"] == judges[0]]
    pq_settings = Settings(a.alignment_threshold, a.coherence_threshold, a.inclusive,
                           min(a.bootstrap_samples, 1000))
    pq = per_question_table(first, order, pq_evals, pq_settings) if pq_evals else pd.DataFrame()
    notes = notes_for(run, comp)
    title = f"{run.exp.name}: narrow behaviour and broad misalignment by organism"
    with art.write() as (tmp, _):
        md = write_table(comp, evals, tmp, "comparison", title)
        (tmp / "comparison.md").write_text(f"# {title}\n\n{md}\n" + "".join(f"- {n}\n" for n in notes))
        tables = [("Comparison across organisms", display_frame(comp, evals))]
        if len(pq):
            write_table(pq, pq_evals, tmp, "per_question", f"Per question (judge {judges[0]})")
            tables.append((f"Per question (judge {judges[0]})", display_frame(pq, pq_evals)))
        if len(judges) > 1:
            rubrics = [r for r in dict.fromkeys(c for m in METRICS.values() for c in m.rubrics) if df[r].notna().any()]
            side_by_side(df, judges, rubrics).to_csv(tmp / "judge_scores.csv", index=False)
            free = df[df["alignment"].notna() | df["coherence"].notna()]
            agreement = judge_agreement(free, a.alignment_threshold, a.coherence_threshold, a.inclusive)
            tables.append(("Judge agreement", write_plain_table(agreement, tmp, "judge_agreement", "Judge agreement",
                                                                ("label_agreement",))))
        figures = _figures(run, first, pq, evals, s, tmp)
        free_first = first[first["alignment"].notna() | first["coherence"].notna()]
        (tmp / "index.html").write_text(html.render(title, notes, tables, figures, html.examples_html(free_first)))
    log(f"report: wrote {art.dir / 'index.html'}, comparison.md/.csv/.tex, per_question.*, figures")
    return art.key
