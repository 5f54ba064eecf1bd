"""Tables as Markdown, CSV and LaTeX. Rates are printed as percentages."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from emwb.analysis.metrics import Metric, column_names

LEADING = {"group": "organism", "step": "step", "judge": "judge", "evaluation": "evaluation",
           "question_set": "question set", "question_id": "question", "n_seeds": "seeds"}


def metric_columns(evaluations: dict[str, list[Metric]]) -> list[tuple[str, Metric, str, list[str]]]:
    """(column, metric, header, CI columns) for every metric of every evaluation, in order."""
    names = column_names(evaluations)
    out = []
    for ev, ms in evaluations.items():
        for m in ms:
            col = names[(ev, m.name)]
            header = m.header if col == m.name else f"{m.header} [{ev}]"
            prefix = m.ci if col == m.name else f"{col}_"
            cis = [f"{prefix}ci_low", f"{prefix}ci_high"] if m.ci is not None else []
            out.append((col, m, header, cis))
    return out


VS_BASE = ("_vs_base", "_vs_base_ci_low", "_vs_base_ci_high", "_vs_base_mde")  # fractions, like the rates


def as_percentages(df: pd.DataFrame, evaluations: dict[str, list[Metric]]) -> pd.DataFrame:
    out = df.copy()
    for col, m, _, cis in metric_columns(evaluations):
        if m.percent:
            for c in [col, *cis, *(col + v for v in VS_BASE)]:
                if c in out:
                    out[c] = out[c] * 100
    return out


def units_note(evaluations: dict[str, list[Metric]], differences: bool = False) -> str:
    """What the table's intervals account for, one clause per kind of metric shown (printed under the table)."""
    found = dict.fromkeys(m.units for ms in evaluations.values() for m in ms if m.show and m.units)
    if not found:
        return ""
    text = "Units of the 95% CIs: " + "; ".join(
        f"{u} for {', '.join(dict.fromkeys(m.header for ms in evaluations.values() for m in ms if m.units == u))}"
        for u in found) + "."
    if differences:
        text += (" Differences vs base: paired by prompt; CI from both arms' exact intervals (widened over seeds); "
                 "p: permutation within prompts (* where per-cell tests survive the Benjamini-Hochberg correction "
                 "across the table); MDE: the rise over the base rate a test of these counts had 80% power to "
                 "detect at 5% (docs/report.md).")
    return text


def csv_frame(df: pd.DataFrame, evaluations: dict[str, list[Metric]]) -> pd.DataFrame:
    """Every column, rates in %, metric columns in registry order after the leading ones."""
    p = as_percentages(df, evaluations)
    first = [c for c in LEADING if c in p] + ["single_seed"] * ("single_seed" in p)
    metric = [c for col, _, _, cis in metric_columns(evaluations) for c in (col, *cis) if c in p]
    rest = [c for c in p.columns if c not in first and c not in metric]
    if "published" in p:
        p["published"] = p["published"] * 100
    return p[first + metric + rest]


def fmt_cell(v) -> str:
    """One table cell as text: missing values (None, NaN, pd.NA) as `n/a`, floats to one decimal."""
    if v is pd.NA or v is None or v is pd.NaT:
        return "n/a"
    if isinstance(v, (bool,)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else _one(v)
    return str(v)


def _one(v: float) -> str:
    """`v` to one decimal; a value that rounds to zero is 0.0, never -0.0 (a kappa of -1e-17 printed so)."""
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def p_text(v) -> str:
    """A p-value as the tables print it: two significant digits, `<0.001` below that, n/a when missing."""
    if v is None or pd.isna(v):
        return "n/a"
    return "<0.001" if v < 0.001 else f"{v:.2g}" if v < 0.1 else f"{v:.2f}"


def _flag(v) -> str:
    return "n/a" if v is None or v != v else ("yes" if v else "no")


def ci_text(lo: float, hi: float) -> str:
    """A 95% CI as the tables print it: `[lo, hi]` to one decimal, `n/a` when either end is missing."""
    return "n/a" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) else f"[{_one(lo)}, {_one(hi)}]"


def display_frame(df: pd.DataFrame, evaluations: dict[str, list[Metric]]) -> pd.DataFrame:
    """Percentages, CIs as text, the shown metrics with readable headers; unmeasured metrics are dropped."""
    p = as_percentages(df, evaluations)
    if "single_seed" in p and "n_seeds" in p:
        p["n_seeds"] = ["" if pd.isna(n) else f"{n} (single seed)" if single and n == 1 else str(n)
                        for n, single in zip(p["n_seeds"], p["single_seed"])]
    headers = [h for c, h in LEADING.items() if c in p]
    data = [p[c].tolist() for c in LEADING if c in p]
    for col, m, header, cis in metric_columns(evaluations):
        if not m.show or col not in p or pd.to_numeric(p[col], errors="coerce").isna().all():
            continue
        headers.append(header)
        data.append(as_counts(p[col]) if m.count else p[col].tolist())
        if cis and all(c in p for c in cis):
            headers.append("95% CI")
            data.append([ci_text(a, b) for a, b in zip(p[cis[0]], p[cis[1]])])
        if f"{col}_vs_base" in p and p[f"{col}_vs_base"].notna().any():
            headers += ["vs base (pp)", "95% CI", "p", "MDE (pp)"]
            data += [p[f"{col}_vs_base"].tolist(),
                     [ci_text(a, b) for a, b in zip(p[f"{col}_vs_base_ci_low"], p[f"{col}_vs_base_ci_high"])],
                     [p_text(v) + (" *" if flag is True else "") for v, flag in
                      zip(p[f"{col}_vs_base_p"], p.get(f"{col}_vs_base_sig", pd.Series([None] * len(p))))],
                     p[f"{col}_vs_base_mde"].tolist()]
    if "published" in p:
        headers += [f"published % ({p['published_metric'].iloc[0]})", "published inside 95% CI"]
        data += [(p["published"] * 100).tolist(), [_flag(v) for v in p["published_in_ci"]]]
    out = pd.DataFrame(list(zip(*data)) if data else [], columns=headers, dtype=object)  # 64 stays 64
    out.attrs["note"] = units_note(evaluations, any(c.endswith("_vs_base") for c in p.columns))  # under the table
    return out


def as_counts(values) -> list:
    """Counts as integers (a column holding a missing value is float in pandas: 64.0 prints as 64)."""
    return [None if pd.isna(v) else int(v) for v in values]


COUNT_NAMES = ("n", "answers", "requests")


def _counts_in(df: pd.DataFrame) -> pd.DataFrame:
    """Columns of a plain table named as counts (`n`, `n_*`, `*_n`) shown as integers."""
    out = df.copy()
    for c in out.columns:
        name = str(c)
        if (name in COUNT_NAMES or name.startswith("n_") or name.endswith("_n")) and \
                pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c]):
            values = pd.to_numeric(out[c], errors="coerce")
            if (values.dropna() % 1 == 0).all():
                out[c] = pd.array(as_counts(values), dtype="Int64")
    return out


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(fmt_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def latex(df: pd.DataFrame, caption: str = "") -> str:
    cols = "l" + "r" * (len(df.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_tex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(fmt_cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_tex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, evaluations: dict[str, list[Metric]], out_dir: Path, stem: str,
                caption: str) -> str:
    """Write STEM.csv (all columns, rates in %), STEM.md and STEM.tex (shown columns); return the Markdown."""
    csv_frame(df, evaluations).to_csv(out_dir / f"{stem}.csv", index=False)
    shown = display_frame(df, evaluations)
    md = markdown(shown)
    note = shown.attrs.get("note")
    (out_dir / f"{stem}.md").write_text(f"# {caption}\n\n{md}" + (f"\n{note}\n" if note else ""))
    (out_dir / f"{stem}.tex").write_text(latex(shown, caption))
    return md


def write_plain_table(df: pd.DataFrame, out_dir: Path, stem: str, caption: str,
                      percent: tuple[str, ...] = (), note: str = "") -> pd.DataFrame:
    """A table that is not a metric table (judge agreement): the `percent` columns are printed in %; `note`
    (what its intervals and tests are) under it in the Markdown and the report."""
    p = _counts_in(df)
    for c in percent:
        if c in p:
            p[c] = p[c] * 100
    p.to_csv(out_dir / f"{stem}.csv", index=False)
    (out_dir / f"{stem}.md").write_text(f"# {caption}\n\n{markdown(p)}" + (f"\n{note}\n" if note else ""))
    p.attrs["note"] = note
    (out_dir / f"{stem}.tex").write_text(latex(p, caption))
    return p
