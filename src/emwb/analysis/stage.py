"""Stage `report`: comparison tables -> `report/comparison.md` and `report/comparison.csv`."""

from __future__ import annotations

import pandas as pd

from emwb.analysis.agreement import judge_agreement
from emwb.analysis.metrics import comparison_table
from emwb.judge.stage import load_judgments
from emwb.sampling.stage import load_answers
from emwb.store import Run, atomic_dir, is_done, log, now, read_manifest, stage_key, write_manifest
from emwb.judge.stage import judgments_dir

_PCT = ("misaligned_rate", "em_share", "unscored_share")


def judged_frame(run: Run, judges: list[str]) -> pd.DataFrame:
    """Answers joined with each judge's scores: one row per (answer, judge)."""
    answers, _ = load_answers(run)
    adf = pd.DataFrame(answers)
    frames = [adf.merge(pd.DataFrame(load_judgments(run, j)), on="answer_id", how="left") for j in judges]
    return pd.concat(frames, ignore_index=True)


def build_comparison(run: Run, judges: list[str], df: pd.DataFrame | None = None) -> pd.DataFrame:
    df = judged_frame(run, judges) if df is None else df
    order = ["base"] + [d.name for d in run.exp.datasets]
    a = run.exp.analysis
    tables = []
    for j in judges:
        t = comparison_table(df[df["judge"] == j], order, a.alignment_threshold, a.coherence_threshold)
        t.insert(1, "judge", j)
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def to_markdown(table: pd.DataFrame, title: str, notes: list[str]) -> str:
    cols = ["group", "judge", "answers", "scored", "mean_alignment", "mean_coherence", "misaligned_rate"]
    head = ["dataset", "judge", "answers", "scored", "mean alignment", "mean coherence", "misaligned %"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table[cols].iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                v = "n/a" if v != v else (f"{100 * v:.1f}" if c in _PCT else f"{v:.1f}")
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def agreement_markdown(t: pd.DataFrame) -> str:
    lines = ["# Judge agreement", "", "| judge A | judge B | answers | alignment r | coherence r | "
             "misaligned-label agreement % | misaligned A | misaligned B |", "|---|---|---|---|---|---|---|---|"]
    for _, r in t.iterrows():
        lines.append(f"| {r.judge_a} | {r.judge_b} | {r.answers} | {r.alignment_pearson:.3f} | "
                     f"{r.coherence_pearson:.3f} | {100 * r.label_agreement:.1f} | {r.misaligned_a} | "
                     f"{r.misaligned_b} |")
    return "\n".join(lines) + "\n"


def run_report_stage(run: Run, judge_keys: dict[str, str] | None = None, force: bool = False) -> str:
    judges = list(judge_keys) if judge_keys else run.exp.judge.judges
    inputs = {f"judge:{j}": (judge_keys or {}).get(j) or (read_manifest(judgments_dir(run, j)) or {}).get("key", "")
              for j in judges}
    config = run.exp.analysis.model_dump(mode="json")
    key = stage_key("report", config, inputs)
    out = run.path("report")
    if not force and is_done(out, key):
        log(f"report: up to date, skipped ({out / 'comparison.md'})")
        return key
    started = now()
    a = run.exp.analysis
    df = judged_frame(run, judges)
    table = build_comparison(run, judges, df)
    agreement = judge_agreement(df, a.alignment_threshold, a.coherence_threshold) if len(judges) > 1 else None
    notes = [f"misaligned %: alignment < {a.alignment_threshold:g} among scored answers with coherence > "
             f"{a.coherence_threshold:g}; unscored answers are excluded, never counted as 0."]
    if run.exp.base_model == "tiny":
        notes.append("Offline smoke profile: a tiny local model judged by itself. These numbers show that the "
                     "pipeline runs; they say nothing about emergent misalignment.")
    md = to_markdown(table, f"{run.exp.name}: misalignment by fine-tuning dataset", notes)
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / "comparison.csv", index=False)
        (tmp / "comparison.md").write_text(md)
        if agreement is not None:
            agreement.to_csv(tmp / "judge_agreement.csv", index=False)
            (tmp / "judge_agreement.md").write_text(agreement_markdown(agreement))
        write_manifest(tmp, stage="report", key=key, config=config, inputs=inputs, started=started)
    log(f"report: wrote {out / 'comparison.md'} and comparison.csv")
    return key
