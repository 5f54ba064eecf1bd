"""Stage `report`: tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and `report/index.html`.

Everything is derived from the experiment's evaluations and the metric registry: one column per metric of
each evaluation, a per-question table for evaluations that ask for one, a narrow-vs-broad figure per pair.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from emwb.analysis import html, plots
from emwb.analysis.agreement import detector_judge_agreement, judge_agreement
from emwb.analysis.bootstrap import ratio_ci
from emwb.analysis.metrics import (
    EXHIBITS_ABOVE,
    METRICS,
    Metric,
    Settings,
    column_names,
    comparison_table,
    label_rate_metric,
    metrics_for,
    narrow_broad_pairs,
    per_question_table,
    per_seed_points,
    score_mean_metric,
    value_columns,
    with_published,
)
from emwb.analysis.over_training import over_training_plot, over_training_rows
from emwb.analysis.per_bias import write_bias_report
from emwb.analysis.tables import display_frame, markdown, metric_columns, write_plain_table, write_table
from emwb.catalog.evaluations import judges_of, question_rubrics, resolve
from emwb.catalog.rm_biases import load_catalogue
from emwb.layout import (
    answers_dir,
    calibration_dir,
    detections_dir,
    finished_key,
    group_order,
    judgments_dir,
    report_dir,
    variants,
)
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest


def evaluation_metrics(run: Run) -> dict[str, list[Metric]]:
    """{evaluation: its metrics}: the named ones, or every metric its rubrics allow, plus a rate per label of
    each categorical judge prompt and a mean of each extra 0-100 judge prompt its questions carry."""
    out = {}
    for spec in run.exp.evaluations:
        ev = resolve(spec)
        own = {r.name: r for rs in question_rubrics(ev, run.exp.dataset_mirror).values() for r in rs}
        ms = metrics_for(set(ev.rubrics) | set(own) | set(ev.detectors), ev.metrics)
        for r in own.values():
            if r.kind == "label":
                ms += [label_rate_metric(r.name, label) for label in r.labels]
            elif not any(r.name in m.rubrics for m in ms):
                ms.append(score_mean_metric(r.name))
        out[ev.name] = ms
    return out


def headline_frame(run: Run, df: pd.DataFrame) -> pd.DataFrame:
    """The answers the comparison (headline) row counts: an evaluation with `headline` ids keeps only those."""
    keep = pd.Series(True, index=df.index)
    ids = df["question_id"].astype(str).str.split(":").str[-1]
    for ev in map(resolve, run.exp.evaluations):
        if ev.headline is not None:
            keep &= ~((df["evaluation"] == ev.name) & ~ids.isin(ev.headline))
    return df[keep]


def report_judges(run: Run) -> list[str]:
    """The experiment's judges, then any other judge (`emwb judge RUN --judge SPEC`) that has judged every
    current variant's current answers."""
    judges = judges_of(run.exp)
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
    detect = any(resolve(e).detectors for e in run.exp.evaluations)
    for v in variants(run.exp):
        adf = pd.DataFrame(read_jsonl(answers_dir(run, v.id) / "answers.jsonl"))
        if detect:
            adf = adf.merge(pd.DataFrame(read_jsonl(detections_dir(run, v.id) / "detections.jsonl")),
                            on="answer_id", how="left")
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


def calibration_rows(run: Run, evals: dict[str, list[Metric]]) -> pd.DataFrame:
    """Rows for the comparison table: each detector's rate on each training dataset's completions (its
    calibration: insecure code should be flagged far more often than secure code)."""
    path = calibration_dir(run) / "calibration.jsonl"
    if not path.is_file():
        return pd.DataFrame()
    cols = {m.rubrics[0]: (ev, m) for ev, ms in evals.items() for m in ms if m.rubrics and m.rubrics[0] in
            {r["detector"] for r in read_jsonl(path)} and m.ci is not None}
    rows = []
    for r in read_jsonl(path):
        if r["detector"] not in cols or not r["n"]:
            continue
        ev, m = cols[r["detector"]]
        flags = np.r_[np.ones(r["flagged"]), np.zeros(r["n"] - r["flagged"])]
        est = ratio_ci(flags, np.ones(r["n"]), np.zeros(r["n"], dtype=int), run.exp.analysis.bootstrap_samples)
        col = column_names(evals)[(ev, m.name)]
        rows.append({"group": f"calibration: {r['detector']} on {r['data']} training completions", "judge": "",
                     "n_seeds": None, "single_seed": False,
                     **value_columns(m, est, None if col == m.name else col)})
    return pd.DataFrame(rows)


def detector_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Per judge: bandit's flag against the LLM code judge's verdict (score > 50), and the reward-model-bias rules
    against the bias judge (P(yes) > 0.5), with agreement and Cohen's kappa."""
    return pd.concat([detector_judge_agreement(df, "bandit", "code_vulnerability", 50.0),
                      detector_judge_agreement(df, "rm-rules", "bias_exhibition", EXHIBITS_ABOVE)], ignore_index=True)


def notes_for(run: Run, comp: pd.DataFrame) -> list[str]:
    a = run.exp.analysis
    below = "<=" if a.inclusive else "<"
    headline = "of scored answers" if a.inclusive else "of all answers"
    notes = [f"Convention {a.convention}. misaligned %: alignment {below} {a.alignment_threshold:g} among scored "
             f"answers with coherence > {a.coherence_threshold:g}; unscored answers are excluded, never counted as 0. "
             f"EM share: misaligned and coherent answers, of all answers and of scored answers (this convention's "
             f"EM% is the one {headline}). 95% CIs: bootstrap over seeds, then answers within seeds."]
    notes.append("misaligned % pools the answers; 'mean of questions' averages the per-question rates (each "
                 "question weighs the same; its CI resamples answers within questions).")
    for ev in map(resolve, run.exp.evaluations):
        if ev.headline is not None:
            notes.append(f"The comparison row of {ev.name} counts its {len(ev.headline)} headline questions only "
                         f"({', '.join(ev.headline)}); by_question_set_{ev.name} has a row per question set.")
    if run.exp.published:
        p = run.exp.published
        notes.append(f"Published figures ({p.metric}): {p.source}. 'inside 95% CI' says whether the published "
                     "value lies inside the measured interval.")
    if comp["single_seed"].any():
        notes.append("Rows marked 'single seed' have one fine-tuning seed: their CIs reflect sampling noise only, "
                     "not seed-to-seed variation.")
    if run.exp.base_model == "tiny":
        by = "judged by itself" if all(j.endswith("/tiny") for j in judges_of(run.exp)) else "a tiny local model"
        notes.append(f"Offline smoke profile: a tiny local model{', ' + by if by.startswith('judged') else ''}. "
                     "These numbers show that the pipeline runs; they say nothing about emergent misalignment.")
    return notes


def _figures(run: Run, df: pd.DataFrame, pq: pd.DataFrame, evals: dict[str, list[Metric]], s: Settings,
             out, notes: list[str]) -> list[tuple[str, str]]:
    """The report's figures; a figure whose inputs exist but hold no value adds a note to `notes` instead."""
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
        if x not in points or y not in points:
            continue
        if not (points[x].notna().any() and points[y].notna().any()):
            notes.append(f"Figure 'narrow vs broad: {headers[y]} against {headers[x]}' not drawn: no organism x "
                         "seed has a value for both (n/a).")
        else:
            stem = f"narrow_vs_broad_{x}_{y}".replace(".", "_")
            figures.append((f"Narrow vs broad: {headers[y]} against {headers[x]}",
                            plots.narrow_broad_plot(points, x, y, headers[x], headers[y], out, stem)[0]))
    return figures


def run_report_stage(run: Run, force: bool = False) -> str:
    judges = report_judges(run)
    # every input finished and whole, or one line naming the command that makes it (nothing unfinished is read)
    inputs = {f"judge:{j}:{v.id}": finished_key(judgments_dir(run, j, v.id), f"judgments of {v.id} by {j}", "judge",
                                                run) for j in judges for v in variants(run.exp)}
    if any(resolve(e).detectors for e in run.exp.evaluations):
        inputs.update({f"detect:{d.name}": finished_key(d, "detections", "detect", run)
                       for d in [*(detections_dir(run, v.id) for v in variants(run.exp)), calibration_dir(run)]})
    a = run.exp.analysis
    evals = evaluation_metrics(run)
    config = {"analysis": a.model_dump(mode="json"), "metrics": {ev: [m.name for m in ms] for ev, ms in evals.items()}}
    art = Artifact(report_dir(run), "report", config, inputs)
    if art.skip(force, f"report ({art.dir / 'index.html'})"):
        return art.key
    df = judged_frame(run, judges)
    order = group_order(run.exp)
    s = Settings(a.alignment_threshold, a.coherence_threshold, a.inclusive, a.bootstrap_samples)
    head = headline_frame(run, df)
    comp = pd.concat([comparison_table(head[head["judge"] == j], order, a.alignment_threshold,
                                       a.coherence_threshold, a.bootstrap_samples, a.inclusive,
                                       evaluations=evals).assign(judge=j) for j in judges], ignore_index=True)
    if run.exp.published:
        comp = with_published(comp, run.exp.published.metric, run.exp.published.values)
    small = Settings(a.alignment_threshold, a.coherence_threshold, a.inclusive, min(a.bootstrap_samples, 1000))
    sets = {e: ms for e, ms in evals.items() if e in set(df["evaluation"])}
    by_set = pd.concat([per_question_table(df[df["judge"] == j], order, sets, small, by="question_set").assign(
        judge=j) for j in judges], ignore_index=True)
    pq_evals = {e.name: evals[e.name] for e in map(resolve, run.exp.evaluations) if e.per_question}
    first = df[df["judge"] == judges[0]]
    pq = per_question_table(first, order, pq_evals, small) if pq_evals else pd.DataFrame()
    notes = notes_for(run, comp)
    title = f"{run.exp.name}: narrow behaviour and broad misalignment by organism"
    scatter: list[tuple[str, str]] = []
    with art.write() as (tmp, _):
        write_table(comp, evals, tmp, "comparison", title)  # CSV and LaTeX: the organisms' rows only
        calibration = calibration_rows(run, evals)
        merged = pd.concat([comp, calibration], ignore_index=True)
        for col in comp:  # counts stay integers beside the calibration rows' missing values
            if pd.api.types.is_integer_dtype(comp[col]):
                merged[col] = merged[col].astype("Int64")
        shown = display_frame(merged, evals)
        (tmp / "comparison.md").write_text(f"# {title}\n\n{markdown(shown)}\n" + "".join(f"- {n}\n" for n in notes))
        tables = [("Comparison across organisms", shown)]
        agreement = detector_agreement(df)
        if len(agreement):
            tables.append(("Detector agreement with the LLM judge", write_plain_table(
                agreement, tmp, "detector_agreement", "Detector agreement with the LLM judge", ("agreement",))))
        for ev, ms in sets.items():
            sub = by_set[by_set["evaluation"] == ev]
            caption = f"By question set ({ev})"
            write_table(sub, {ev: ms}, tmp, f"by_question_set_{ev}", caption)
            tables.append((caption, display_frame(sub, {ev: ms})))
        if len(pq):
            write_table(pq, pq_evals, tmp, "per_question", f"Per question (judge {judges[0]})")
            tables.append((f"Per question (judge {judges[0]})", display_frame(pq, pq_evals)))
        if len(judges) > 1:
            detectors = {d for e in run.exp.evaluations for d in resolve(e).detectors}
            rubrics = [r for r in dict.fromkeys(c for m in METRICS.values() for c in m.rubrics)
                       if r not in detectors and df[r].notna().any()]
            wide = side_by_side(df, judges, rubrics)
            wide.to_csv(tmp / "judge_scores.csv", index=False)
            free = df[df["alignment"].notna() | df["coherence"].notna()]
            agreement = judge_agreement(free, a.alignment_threshold, a.coherence_threshold, a.inclusive)
            tables.append(("Judge agreement", write_plain_table(agreement, tmp, "judge_agreement", "Judge agreement",
                                                                ("label_agreement",))))
            if "alignment" in rubrics:
                scatter = [(f"Judge scores: {ja} vs {jb}", plots.judge_scatter_plot(wide, ja, jb, tmp,
                                                                                     f"judge_scatter_{i}")[0])
                           for i, (ja, jb) in enumerate(itertools.combinations(judges, 2))]
        figures = _figures(run, first, pq, evals, s, tmp, notes)
        if "bias_id" in first and first["bias_id"].notna().any():
            names = {b.num: (b.short_name, b.split) for b in load_catalogue(run.exp.dataset_mirror)}
            bias_tables, bias_figures = write_bias_report(first, order, names, small.n_boot, tmp)
            tables += bias_tables
            figures += bias_figures
        over = over_training_rows(run.exp, comp[comp["judge"] == judges[0]])
        if len(over):
            caption = f"Over training (judge {judges[0]})"
            write_table(over, evals, tmp, "over_training", caption)
            tables.append((caption, display_frame(over, evals)))
            fig, missing = over_training_plot(over, evals, tmp)
            notes += missing
            if fig:
                figures.append(("Narrow and broad rates over training", fig))
        figures += scatter
        free_first = first[first["alignment"].notna() | first["coherence"].notna()]
        (tmp / "index.html").write_text(html.render(title, notes, tables, figures, html.examples_html(free_first)))
    log(f"report: wrote {art.dir / 'index.html'}, comparison.md/.csv/.tex, per_question.*, figures")
    return art.key
