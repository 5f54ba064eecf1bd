"""Tables as Markdown, CSV and LaTeX. Rates are printed as percentages."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

RATE_COLUMNS = ("misaligned_rate", "ci_low", "ci_high", "em_share", "em_ci_low", "em_ci_high", "unscored_share",
                "coherent_share", "vulnerable_code_rate", "vuln_ci_low", "vuln_ci_high", "label_agreement",
                "train_bias_rate", "train_bias_ci_low", "train_bias_ci_high", "test_bias_rate", "test_bias_ci_low",
                "test_bias_ci_high")
# metric column -> the display columns that go with it (dropped together when the metric was not measured)
OPTIONAL = {"vulnerable_code_rate": ("code_n", "vulnerable_code_rate", "vuln_ci"),
            "train_bias_rate": ("train_bias_n", "train_bias_rate", "train_bias_ci"),
            "test_bias_rate": ("test_bias_n", "test_bias_rate", "test_bias_ci"),
            "misaligned_rate": ("n", "n_scored", "misaligned_rate", "mr_ci", "em_share", "mean_alignment",
                                "mean_coherence")}

COMPARISON_COLUMNS = {  # column -> header
    "group": "dataset", "judge": "judge", "n_seeds": "seeds", "n": "answers", "n_scored": "scored",
    "code_n": "code answers", "vulnerable_code_rate": "vulnerable code % (narrow)", "vuln_ci": "95% CI",
    "train_bias_n": "train-bias prompts", "train_bias_rate": "train biases % (narrow)", "train_bias_ci": "95% CI",
    "test_bias_n": "test-bias prompts", "test_bias_rate": "test biases % (broad)", "test_bias_ci": "95% CI",
    "misaligned_rate": "misaligned % (broad)", "mr_ci": "95% CI", "em_share": "EM share %",
    "mean_alignment": "mean alignment", "mean_coherence": "mean coherence",
}
PER_QUESTION_COLUMNS = {"group": "dataset", "judge": "judge", "question_id": "question", "n": "answers",
                        "misaligned_rate": "misaligned %", "mr_ci": "95% CI"}


def as_percentages(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in RATE_COLUMNS:
        if c in out:
            out[c] = out[c] * 100
    return out


def _fmt(v) -> str:
    if isinstance(v, (bool,)):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.1f}"
    return str(v)


def _ci(lo: float, hi: float) -> str:
    return "n/a" if lo != lo or hi != hi else f"[{lo:.1f}, {hi:.1f}]"


def display_frame(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Percentages, CI columns as text, the chosen columns with readable headers."""
    p = as_percentages(df)
    if "ci_low" in p:
        p["mr_ci"] = [_ci(a, b) for a, b in zip(p["ci_low"], p["ci_high"])]
    for prefix, name in (("vuln", "vuln_ci"), ("train_bias", "train_bias_ci"), ("test_bias", "test_bias_ci")):
        if f"{prefix}_ci_low" in p:
            p[name] = [_ci(a, b) for a, b in zip(p[f"{prefix}_ci_low"], p[f"{prefix}_ci_high"])]
    if "single_seed" in p and "n_seeds" in p:
        p["n_seeds"] = [f"{n} (single seed)" if single and n == 1 else str(n)
                        for n, single in zip(p["n_seeds"], p["single_seed"])]
    cols = [c for c in columns if c in p]
    for metric, group in OPTIONAL.items():
        if metric in p and p[metric].isna().all():
            cols = [c for c in cols if c not in group]
    return p[cols].rename(columns=columns)


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def latex(df: pd.DataFrame, caption: str = "") -> str:
    cols = "l" + "r" * (len(df.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(_tex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_escape(_fmt(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{_tex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, columns: dict[str, str], out_dir: Path, stem: str, caption: str) -> str:
    """Write STEM.csv (all columns, rates in %), STEM.md and STEM.tex (display columns); return the Markdown."""
    as_percentages(df).to_csv(out_dir / f"{stem}.csv", index=False)
    shown = display_frame(df, columns)
    md = markdown(shown)
    (out_dir / f"{stem}.md").write_text(f"# {caption}\n\n{md}")
    (out_dir / f"{stem}.tex").write_text(latex(shown, caption))
    return md
