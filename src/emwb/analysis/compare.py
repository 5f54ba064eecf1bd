"""`emwb compare RUN_OR_EXPERIMENT...`: one table and figure across runs, from each run's finished report.

Rows are labelled by run and organism; the metrics and CIs are each run's own (`report/comparison.csv`).
Runs whose judges, convention or thresholds differ are marked in a column and a note, never silently mixed:
a row's `judged` column names its judge and convention, and `differs` says what differs from the first run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from emwb.analysis.html import esc, table_html
from emwb.analysis.metrics import METRICS
from emwb.analysis.tables import as_counts, ci_text, latex, markdown
from emwb.errors import EmwbError
from emwb.freshness import changed_inputs, current_keys, finished
from emwb.store import Run

SETTINGS = ("convention", "alignment_threshold", "coherence_threshold")
SHOWN = ("misaligned_rate", "em_share", "em_share_scored", "coherent_share", "n")  # then every narrow metric


def _metrics(frames: list[pd.DataFrame]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(column, header, CI columns) of the shown metrics any run has, in registry order (narrow ones after)."""
    present = {c for df in frames for c in df}
    names = [*SHOWN, *(n for n in METRICS if METRICS.get(n).role == "narrow" and n not in SHOWN)]
    out = []
    for name in names:
        if name in present:
            m = METRICS.get(name)
            cis = (f"{m.ci}ci_low", f"{m.ci}ci_high") if m.ci is not None else ()
            out.append((name, m.header, cis if all(c in present for c in cis) else ()))
    return out


def _load(target: str, runs_root: str) -> tuple[str, pd.DataFrame, dict]:
    run = Run.open(target, runs_root)
    report = run.path("report")
    found = finished(run)
    manifest, why = found.get(report, (None, None))
    if manifest is None or not (report / "comparison.csv").is_file():
        raise EmwbError(f"{run.dir}: no finished report; run `emwb report {run.dir}` first")
    # read as a stage reads its inputs: whole, and made from the run's current artifacts
    why = why or (f"it is stale (its input {', '.join(changed)} changed since it was made)"
                  if (changed := changed_inputs(manifest, current_keys(run, found))) else None)
    if why:
        raise EmwbError(f"{report}: {why}; run `emwb report {run.dir}` again")
    analysis = manifest["config"]["analysis"]
    try:
        return run.exp.name, pd.read_csv(report / "comparison.csv"), {k: analysis.get(k) for k in SETTINGS}
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise EmwbError(f"{report / 'comparison.csv'}: not a readable table ({exc}); run `emwb report {run.dir}` "
                        "again") from None


def compare_frame(targets: list[str], runs_root: str = "runs") -> tuple[pd.DataFrame, list[str], list]:
    """(the combined table, notes, each row's misaligned-rate CI as numbers). Every narrow metric is kept too."""
    loaded = [_load(t, runs_root) for t in targets]
    names = [n for n, _, _ in loaded]
    if len(set(names)) < len(names):
        raise EmwbError(f"two of the runs have the same name ({', '.join(names)}): compare distinct runs")
    first = loaded[0]
    first_judges = set(first[1]["judge"])
    rows, notes, bounds = [], [], []
    metrics = _metrics([df for _, df, _ in loaded])
    misaligned_ci = next((cis for col, _, cis in metrics if col == "misaligned_rate"), ())
    for name, df, settings in loaded:
        for _, r in df.iterrows():
            differs = [f"{k} {settings[k]}" for k in SETTINGS if settings[k] != first[2][k]]
            if r["judge"] not in first_judges:
                differs.append(f"judge {r['judge']}")
            row = {"run": name, "organism": r["group"], "judged": f"{r['judge']}, {settings['convention']}",
                   "differs": "; ".join(differs) or "-"}
            for col, header, cis in metrics:
                row[header] = r.get(col)
                if cis:
                    row[f"{header} 95% CI"] = ci_text(r.get(cis[0]), r.get(cis[1]))
            rows.append(row)
            bounds.append(tuple(r.get(c, np.nan) for c in misaligned_ci) if misaligned_ci else (np.nan, np.nan))
    table = pd.DataFrame(rows)
    if (table["differs"] != "-").any():
        notes.append(f"Rows whose 'differs' is not '-' were judged differently from {first[0]} (another judge, "
                     "convention or threshold): their rates are not directly comparable with its rows.")
    notes.append("Rates in %; each run's 95% CIs as its own report computed them (bootstrap over seeds, then "
                 "answers).")
    return table, notes, bounds


def compare_runs(targets: list[str], out: Path, runs_root: str = "runs") -> list[Path]:
    """Write compare.csv/.md/.tex/.html and compare.png into `out`; returns the paths."""
    table, notes, bounds = compare_frame(targets, runs_root)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "compare.csv", index=False)
    shown = table.copy()  # as every emwb table prints: floats to one decimal, missing as n/a, counts as integers
    count = METRICS.get("n").header
    if count in shown:
        shown[count] = pd.array(as_counts(shown[count]), dtype="Int64")
    (out / "compare.md").write_text("# Comparison across runs\n\n" + markdown(shown) + "\n"
                                    + "".join(f"- {n}\n" for n in notes))
    (out / "compare.tex").write_text(latex(shown, "Comparison across runs"))
    _figure(table, bounds, out / "compare.png")
    (out / "compare.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Comparison across runs</title></head><body>"
        f"<h1>Comparison across runs</h1><img src='compare.png' alt='misaligned % by run and organism'>"
        f"{table_html(shown)}" + "".join(f"<p>{esc(n)}</p>" for n in notes) + "</body></html>\n")
    return [out / f"compare.{e}" for e in ("csv", "md", "tex", "html", "png")]


def _figure(table: pd.DataFrame, bounds: list[tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.run}: {r.organism}" + (" *" if r.differs != "-" else "") for r in table.itertuples()]
    header = METRICS.get("misaligned_rate").header
    y = table[header].astype(float).to_numpy()
    lo = np.nan_to_num(y - np.array([b[0] for b in bounds], float))
    hi = np.nan_to_num(np.array([b[1] for b in bounds], float) - y)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(table) + 1.2))
    ax.errorbar(y, range(len(table)), xerr=[lo, hi], fmt="o", capsize=3)
    ax.set_yticks(range(len(table)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("misaligned answers (%), 95% CI" + ("; * judged differently" if (table["differs"] != "-").any()
                                                       else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
