"""Stage `report`: tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and `report/index.html`.

Everything is derived from the run plan's evaluations and the metric registry (one column per metric of each
evaluation); the report is the list of sections in `emwb.analysis.sections.REPORT_SECTIONS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from emwb.analysis import features, free_form, mitigations  # noqa: F401  (register their report sections)
from emwb.analysis import html
from emwb.analysis.browser import browser_html, write_browser
from emwb.analysis.differences import comparison_pairs, difference_rows, vs_base_columns
from emwb.analysis.headline import (
    headline_figure,
    headline_markdown,
    headline_table,
    other_evaluations,
    summary,
)
from emwb.analysis.metrics import (
    METRICS,
    Metric,
    Settings,
    comparison_table,
    label_rate_metric,
    metrics_for,
    score_mean_metric,
    with_published,
)
from emwb.analysis.sections import REPORT_SECTIONS, ReportContext
from emwb.catalog.evaluations import Evaluation
from emwb.freshness import verified_key
from emwb.layout import (
    answers_dir,
    answers_file,
    calibration_dir,
    detections_dir,
    detections_file,
    directions_dir,
    judgments_dir,
    judgments_file,
    latents_dir,
    projections_dir,
    report_dir,
)
from emwb.stages import DETECT, DIRECTIONS, FEATURES, JUDGE, PROJECTIONS, SAMPLE, Produced
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest

if TYPE_CHECKING:
    from emwb.context import StageContext
    from emwb.plan import Plan

PAGE_VERSION = 6  # bump when index.html's layout (or headline.md) changes: reports are rebuilt


def evaluation_metrics(plan: Plan) -> dict[str, list[Metric]]:
    """{evaluation: its metrics}: the named ones, or every metric its rubrics allow, plus a rate per label of
    each categorical judge prompt and a mean of each extra 0-100 judge prompt its questions carry."""
    out = {}
    for ev in plan.evaluations:
        own = {r.name: r for _, _, rs in ev.own_rubrics for r in rs}
        ms = metrics_for(set(ev.rubrics) | set(own) | set(ev.detectors), ev.metrics)
        for r in own.values():
            if r.kind == "label":
                ms += [label_rate_metric(r.name, label) for label in r.labels]
            elif not any(r.name in m.rubrics for m in ms):
                ms.append(score_mean_metric(r.name))
        out[ev.name] = ms
    return out


def _evaluations(plan: Plan) -> list[Evaluation]:
    return list(plan.evaluations)


def headline_frame(plan: Plan, df: pd.DataFrame) -> pd.DataFrame:
    """The answers the comparison (headline) row counts: an evaluation with `headline` ids keeps only those."""
    keep = pd.Series(True, index=df.index)
    ids = df["question_id"].astype(str).str.split(":").str[-1]
    for ev in _evaluations(plan):
        if ev.headline is not None:
            keep &= ~((df["evaluation"] == ev.name) & ~ids.isin(ev.headline))
    return df[keep]


def report_judges(run: Run, plan: Plan) -> tuple[list[str], list[str]]:
    """(the experiment's judges, then any other judge (`emwb judge RUN --judge SPEC`) that has judged every current
    variant's current answers; a line for each other judge left out because it has not)."""
    judges, left = list(plan.judges), []
    current = {v.id: (read_manifest(answers_dir(run, v.id)) or {}).get("key") for v in plan.variants}
    root = run.path("judgments")
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        found = {vid: read_manifest(d / vid) for vid in current}
        named = {m.get("judge") for m in found.values() if m} - {None}
        if len(named) != 1 or (spec := named.pop()) in judges:
            continue
        missing = [vid for vid, m in found.items() if not m or m["inputs"].get("answers") != current[vid]]
        if not missing:
            judges.append(spec)
        else:
            left.append(f"Judge {spec} (added with `emwb judge --judge`) is left out of this report: it has not judged "
                        f"the current answers of {', '.join(missing)}; run `emwb judge {run.dir} --judge {spec}` to "
                        "judge them.")
    return judges, left


def report_inputs(run: Run, plan: Plan, judges: list[str]) -> dict[str, str]:
    """Every artifact the report reads, verified as `emwb status` and `emwb compare` verify it (whole, and made
    from the run's current answers), by key; else one line naming it and the command that remakes it."""
    answers = {v.id: verified_key(answers_dir(run, v.id), f"answers of {v.id}", SAMPLE.name, run)
               for v in plan.variants}
    inputs = {f"answers:{vid}": key for vid, key in answers.items()}
    inputs.update({f"judge:{j}:{vid}": verified_key(judgments_dir(run, j, vid), f"judgments of {vid} by {j}",
                                                    JUDGE.name, run, {"answers": key})
                   for j in judges for vid, key in answers.items()})
    if plan.detectors():
        inputs.update({f"detect:{vid}": verified_key(detections_dir(run, vid), "detections", DETECT.name, run,
                                                     {"answers": key}) for vid, key in answers.items()})
        inputs["detect:calibration"] = verified_key(calibration_dir(run), "detections", DETECT.name, run)
    for d in run.exp.mechanisms.directions:  # the mechanisms sections read the directions and their projections
        inputs[f"directions:{d.name}"] = verified_key(directions_dir(run, d.name), f"direction {d.name}",
                                                      DIRECTIONS.name, run)
        inputs[f"projections:{d.name}"] = verified_key(projections_dir(run, d.name), f"projections on {d.name}",
                                                       PROJECTIONS.name, run)
    for f in run.exp.features:  # the features section reads the dictionaries and their latents
        inputs[f"features:{f.name}"] = verified_key(latents_dir(run, f.name), f"latents of features {f.name}",
                                                    FEATURES.name, run)
    return inputs


def judged_frame(run: Run, plan: Plan, judges: list[str]) -> pd.DataFrame:
    """Answers joined with each judge's scores: one row per (answer, judge)."""
    frames = []
    detect = bool(plan.detectors())
    for v in plan.variants:
        adf = pd.DataFrame(read_jsonl(answers_file(run, v.id)))
        if detect:
            adf = adf.merge(pd.DataFrame(read_jsonl(detections_file(run, v.id))), on="answer_id", how="left")
        for j in judges:
            jdf = pd.DataFrame(read_jsonl(judgments_file(run, j, v.id)))
            frames.append(adf.merge(jdf, on="answer_id", how="left"))
    df = pd.concat(frames, ignore_index=True)
    for m in METRICS.values():
        for col in m.rubrics:
            if col not in df:
                df[col] = float("nan")
    return df


def notes_for(run: Run, plan: Plan, comp: pd.DataFrame) -> list[str]:
    """The report's own notes (each section adds its own: `Section.notes`)."""
    notes = []
    for ev in _evaluations(plan):
        if ev.headline is not None:
            notes.append(f"The comparison row of {ev.name} counts its {len(ev.headline)} headline questions only "
                         f"({', '.join(ev.headline)}); by_question_set_{ev.name} has a row per question set.")
    if run.exp.published:
        p = run.exp.published
        notes.append(f"Published figures ({p.metric}): {p.source}. 'inside 95% CI' says whether the published "
                     "value lies inside the measured interval.")
    if comp["single_seed"].any():
        notes.append("Rows marked 'single seed' have one fine-tuning seed: their CIs are about this fine-tuned "
                     "model (sampling noise only), not about another fine-tuning run.")
    if len(plan.groups()) > 1 and "base" in plan.groups():
        notes.append("vs base: the difference from the base model in points, paired by prompt, with its 95% CI, "
                     "p (permutation within prompts) and MDE, the rise over the base rate these answer counts had "
                     "80% power to detect at 5% (n/a: no rise could have shown); differences.md has every "
                     "comparison.")
    if run.exp.base_model == "tiny":
        by = "judged by itself" if all(j.endswith("/tiny") for j in plan.judges) else "a tiny local model"
        notes.append(f"Offline smoke profile: a tiny local model{', ' + by if by.startswith('judged') else ''}. "
                     "The judges' numbers show that the pipeline runs; they say nothing about emergent "
                     "misalignment. The rule-based detectors' columns (no LLM) measure what the tiny model wrote.")
    return notes


def run_report_stage(stage: StageContext) -> str:
    """Every section of REPORT_SECTIONS (`emwb.analysis.sections`) over the judged answers -> `report/`."""
    run, plan, force = stage.run, stage.plan, stage.force
    judges, left_out = report_judges(run, plan)
    for line in left_out:
        log(line)
    inputs = report_inputs(run, plan, judges)  # every input finished, whole and current, or one line
    a = run.exp.analysis
    evals = evaluation_metrics(plan)
    sections = {name: REPORT_SECTIONS.get(name) for name in REPORT_SECTIONS}
    config = {"analysis": a.model_dump(mode="json"), "metrics": {ev: [m.name for m in ms] for ev, ms in evals.items()},
              "sections": {name: s.version for name, s in sections.items()}, "page": PAGE_VERSION}
    if left_out:  # part of the key: a judge that stops covering the answers rebuilds the report with its note
        config["left_out"] = left_out
    art = Artifact(report_dir(run), "report", config, inputs)
    if art.skip(force, f"report ({art.dir / 'index.html'})"):
        return art.key
    with art.write() as (tmp, _), _progress(len(sections) + 2) as bar:
        ctx = report_context(run, plan, judges, evals, tmp)
        ctx.notes[:0] = [n for s in sections.values() if s.notes for n in s.notes(ctx)] + left_out
        ctx.notes += other_evaluations(ctx)
        bar.update()
        tables, figures, details, made = build_sections(ctx, sections, bar)
        (tmp / "index.html").write_text(html.render(page(ctx, tables, figures, details)))
        bar.update()
    log(f"report: wrote {art.dir / 'index.html'}, comparison.md/.csv/.tex and {len(made)} sections "
        f"({', '.join(made)})")
    return art.key


def _progress(total: int):
    """The report's progress bar on stderr: the context, then one step per section, then the page."""
    from tqdm import tqdm

    return tqdm(total=total, desc="report", unit="section", mininterval=0.5, leave=False)


def build_sections(ctx: ReportContext, sections: dict, bar) -> tuple[list, list, list, list[str]]:
    """(tables, figures, details, the names of the sections that produced something: a table, a figure, a
    collapsed part or a file) of every section, in order."""
    tables, figures, details, made = [], [], [], []
    for name, section in sections.items():
        bar.set_postfix_str(name)
        before = {p: p.stat().st_mtime_ns for p in ctx.out.rglob("*")}
        out = section.build(ctx)
        tables += out.tables
        figures += out.figures
        details += out.details
        wrote = any(before.get(p) != p.stat().st_mtime_ns for p in ctx.out.rglob("*"))
        if out.tables or out.figures or out.details or wrote:
            made.append(name)
        bar.update()
    return tables, figures, details, made


def page(ctx: ReportContext, tables: list, figures: list, details: list) -> html.Page:
    """The report page: the headline first (summary, the headline's columns as a figure, compact table), the answer
    browser, then the other figures, every table and the sections' other parts collapsed. Writes the browser's data
    into the report folder."""
    lead = headline_figure(ctx)
    detectors = sorted({d for e in ctx.evaluations for d in e.detectors})
    rubrics = list(dict.fromkeys(c for m in METRICS.values() for c in m.rubrics if c not in detectors))
    write_browser(ctx.out, ctx.df, ctx.judges, rubrics, detectors, ctx.settings.shown())
    table, links = headline_table(ctx)
    (ctx.out / "headline.md").write_text(headline_markdown(ctx))
    return html.Page(ctx.title, summary(ctx), (lead[0], html.inline_svg((ctx.out / lead[1]).read_text()))
                     if lead else None, table, links, browser_html(), figures, tables, ctx.notes, details)


def report_context(run: Run, plan: Plan, judges: list[str], evals: dict[str, list[Metric]], out) -> ReportContext:
    """The judged answers and the headline comparison every section reads."""
    a = run.exp.analysis
    df = judged_frame(run, plan, judges)
    order = plan.groups()
    s = Settings.of(a)
    head = headline_frame(plan, df)
    comp = pd.concat([comparison_table(head[head["judge"] == j], order, evaluations=evals, settings=s).assign(judge=j)
                      for j in judges], ignore_index=True)
    pairs = comparison_pairs(order, plan.variants, {o.name: o.control for o in run.exp.organisms
                                                     if getattr(o, "control", None)})
    diffs = pd.concat([difference_rows(head[head["judge"] == j], pairs, evals, s).assign(judge=j) for j in judges],
                      ignore_index=True)
    comp = vs_base_columns(comp, diffs)
    if run.exp.published:
        comp = with_published(comp, run.exp.published.metric, run.exp.published.values)
    small = Settings.of(a, min(a.bootstrap_samples, a.per_question_bootstrap_samples))
    title = f"{run.exp.name}: narrow behaviour and broad misalignment by organism"
    return ReportContext(run, df, judges, order, evals, _evaluations(plan), plan.variants, comp, s, small, out, title,
                         notes_for(run, plan, comp), head, diffs)


def produced(ctx: StageContext) -> list[Produced]:
    return [Produced("", report_dir(ctx.run))]
