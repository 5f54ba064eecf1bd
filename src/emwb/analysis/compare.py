"""`emwb compare RUN_OR_EXPERIMENT...`: one table and figure across runs, from each run's finished report.

Rows are labelled by run and organism; the metrics and CIs are each run's own (`report/comparison.csv`).
Runs whose judges, convention or thresholds differ are marked in a column and a note, never silently mixed:
a row's `judged` column names its judge and convention, and `differs` says what differs from the first run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.analysis.html import esc, table_html
from emwb.analysis.metrics import METRICS
from emwb.analysis.tables import as_counts, ci_text, latex, markdown
from emwb.errors import EmwbError
from emwb.freshness import finished, input_problem
from emwb.store import Run

SETTINGS = ("convention", "alignment_threshold", "coherence_threshold")
SHOWN = ("misaligned_rate", "em_share", "em_share_scored", "coherent_share", "n")  # then every narrow metric


@dataclass(frozen=True)
class Loaded:
    """One run's finished report: its name, comparison.csv, settings and {evaluation: its metric names}."""

    name: str
    table: pd.DataFrame
    settings: dict
    evaluations: dict[str, list[str]]

    def columns(self) -> dict[tuple[str, str], tuple[str, tuple[str, str] | tuple]]:
        """(evaluation, metric) -> (its column in comparison.csv, its CI columns), as the report named them
        (`metrics.column_names`: `evaluation.metric` where two evaluations share a metric)."""
        counts: dict[str, int] = {}
        for names in self.evaluations.values():
            for n in names:
                counts[n] = counts.get(n, 0) + 1
        out = {}
        for ev, names in self.evaluations.items():
            for n in (n for n in names if n in METRICS):
                m, col = METRICS.get(n), n if counts[n] == 1 else f"{ev}.{n}"
                cis = () if m.ci is None else ((f"{m.ci}ci_low", f"{m.ci}ci_high") if col == n else
                                               (f"{col}_ci_low", f"{col}_ci_high"))
                if col in self.table:
                    out[(ev, n)] = (col, cis if all(c in self.table for c in cis) else ())
        return out


def _metrics(loaded: list[Loaded]) -> list[tuple[str, str, str]]:
    """(evaluation, metric, header) of the shown metrics any run has, in registry order (narrow ones after); a
    metric that more than one evaluation scores (in one run or across runs) names its evaluation in the header."""
    present = list(dict.fromkeys(k for run in loaded for k in run.columns()))
    names = [*SHOWN, *(n for n in METRICS if METRICS.get(n).role == "narrow" and n not in SHOWN)]
    out = []
    for name in names:
        evs = [ev for ev, n in present if n == name]
        out += [(ev, name, METRICS.get(name).header + (f" [{ev}]" if len(evs) > 1 else "")) for ev in evs]
    return out


def _load(target: str, runs_root: str) -> Loaded:
    run = Run.open(target, runs_root)
    report = run.path("report")
    found = finished(run)
    manifest, why = found.get(report, (None, None))
    if manifest is None or not (report / "comparison.csv").is_file():
        raise EmwbError(f"{run.dir}: no finished report; run `emwb report {run.dir}` first")
    # read as a stage reads its inputs (freshness): whole, and made from the run's current, whole artifacts
    problem = None if why else input_problem(run, manifest, found)
    if why or problem:
        again = f"`emwb report {run.dir}`"
        raise EmwbError(f"{report}: " + (f"{why}; run {again} again" if why else f"{problem}, then {again}"
                                         if " is damaged (" in problem else f"it is stale ({problem}); run {again} "
                                         "again"))
    config = manifest["config"]
    try:
        table = pd.read_csv(report / "comparison.csv")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise EmwbError(f"{report / 'comparison.csv'}: not a readable table ({exc}); run `emwb report {run.dir}` "
                        "again") from None
    evaluations = config.get("metrics") or {"": [c for c in table if c in METRICS]}
    return Loaded(run.exp.name, table, {k: config["analysis"].get(k) for k in SETTINGS}, evaluations)


def compare_frame(targets: list[str], runs_root: str = "runs") -> tuple[pd.DataFrame, list[str], dict]:
    """(the combined table, notes, {header: each row's (rate, CI low, CI high)} of the plotted metric: misaligned %,
    else the first with a CI), one column per (evaluation, metric) shown; every narrow metric is kept too."""
    loaded = [_load(t, runs_root) for t in targets]
    names = [run.name for run in loaded]
    if len(set(names)) < len(names):
        raise EmwbError(f"two of the runs have the same name ({', '.join(names)}): compare distinct runs")
    first = loaded[0]
    first_judges = set(first.table["judge"])
    rows, notes = [], []
    metrics = _metrics(loaded)
    plotted = next((n for n in ("misaligned_rate", *(n for _, n, _ in metrics)) if METRICS.get(n).ci is not None
                    and any(n == name for _, name, _ in metrics)), None)
    points: dict[str, list] = {h: [] for _, n, h in metrics if n == plotted}
    for run in loaded:
        cols = run.columns()
        for _, r in run.table.iterrows():
            differs = [f"{k} {run.settings[k]}" for k in SETTINGS if run.settings[k] != first.settings[k]]
            if r["judge"] not in first_judges:
                differs.append(f"judge {r['judge']}")
            row = {"run": run.name, "organism": r["group"], "judged": f"{r['judge']}, {run.settings['convention']}",
                   "differs": "; ".join(differs) or "-"}
            for ev, name, header in metrics:
                col, cis = cols.get((ev, name), (None, ()))
                row[header] = r.get(col, np.nan) if col else np.nan
                if METRICS.get(name).ci is not None:
                    row[f"{header} 95% CI"] = ci_text(*(r.get(c) for c in cis)) if cis else "n/a"
                if header in points:
                    points[header].append((row[header], *([r.get(c, np.nan) for c in cis] or [np.nan] * 2)))
            rows.append(row)
    table = pd.DataFrame(rows)
    if (table["differs"] != "-").any():
        notes.append(f"Rows whose 'differs' is not '-' were judged differently from {first.name} (another judge, "
                     "convention or threshold): their rates are not directly comparable with its rows.")
    if any("[" in h for _, _, h in metrics):
        notes.append("A column marked [evaluation] is that evaluation's (a run scores the metric in more than one "
                     "evaluation); n/a where a run has no such evaluation.")
    notes.append("Rates in %; each run's 95% CIs as its own report computed them (exact intervals over the pooled "
                 "answers, widened over seeds where there are several).")
    return table, notes, points


def compare_runs(targets: list[str], out: Path, runs_root: str = "runs") -> list[Path]:
    """Write compare.csv/.md/.tex/.html and compare.png into `out`; returns the paths."""
    table, notes, points = compare_frame(targets, runs_root)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    shown = table.copy()  # as every emwb table prints: floats to one decimal, missing as n/a, counts as integers
    for col in shown:
        if col.split(" [")[0] in {m.header for m in METRICS.values() if m.count}:
            shown[col] = pd.array(as_counts(shown[col]), dtype="Int64")
    (out / "compare.md").write_text("# Comparison across runs\n\n" + markdown(shown) + "\n"
                                    + "".join(f"- {n}\n" for n in notes))
    (out / "compare.tex").write_text(latex(shown, "Comparison across runs"))
    _figure(table, points, out / "compare.png")
    (out / "compare.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Comparison across runs</title></head><body>"
        f"<h1>Comparison across runs</h1><img src='compare.png' alt='{esc(', '.join(points) or 'no rate')} by run "
        f"and organism'>{table_html(shown)}" + "".join(f"<p>{esc(n)}</p>" for n in notes) + "</body></html>\n")
    return [out / f"compare.{e}" for e in ("csv", "md", "tex", "html", "png")]


def _figure(table: pd.DataFrame, points: dict[str, list], path: Path) -> None:
    """Each row's plotted rate with its 95% CI, one marker per column (evaluation) of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.run}: {r.organism}" + (" *" if r.differs != "-" else "") for r in table.itertuples()]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1.2))
    for i, (header, found) in enumerate(points.items()):
        y, lo, hi = (np.array(v, float) for v in zip(*found))
        pos = np.arange(len(table)) + (i - (len(points) - 1) / 2) * 0.8 / len(points)
        ax.errorbar(y, pos, xerr=[np.nan_to_num(y - lo), np.nan_to_num(hi - y)], fmt="o", capsize=3, label=header)
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    if len(points) > 1:
        ax.legend(fontsize=7)
    name = next(iter(points), "no rate").split(" [")[0]
    ax.set_xlabel(f"{name} (%), 95% CI" + ("; * judged differently" if (table["differs"] != "-").any() else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
