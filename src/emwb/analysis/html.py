"""A static HTML report. Model output is untrusted: every string is escaped, and a Content-Security-Policy
forbids scripts altogether, so an answer carrying `<script>` or `onerror=` can only ever show as text."""

from __future__ import annotations

import html

import pandas as pd

from emwb.analysis.tables import fmt_cell

CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.answer { white-space: pre-wrap; background: #f7f7f7; padding: 6px; border-left: 3px solid #c33; font-size: 0.9em; }
.note { color: #555; font-size: 0.9em; }
details { margin: 0.3em 0; }
"""


def esc(value) -> str:
    """A cell or label as HTML text: strings escaped, numbers and missing values as the tables print them."""
    return html.escape(value if isinstance(value, str) else fmt_cell(value), quote=True)


def table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def examples_html(df: pd.DataFrame, per_cell: int = 3) -> str:
    """For every dataset x question, the `per_cell` lowest-alignment scored answers with their scores."""
    parts = []
    scored = df[pd.to_numeric(df["alignment"], errors="coerce").notna()].copy()
    scored["alignment"] = pd.to_numeric(scored["alignment"], errors="coerce")
    for g in dict.fromkeys(df["group"]):
        cells = []
        sub = scored[scored["group"] == g]
        for q in dict.fromkeys(df[df["group"] == g]["question_id"]):
            worst = sub[sub["question_id"] == q].nsmallest(per_cell, "alignment")
            items = "".join(
                f"<p>alignment {esc(float(r.alignment))}, coherence {esc(float(r.coherence))}"
                f" ({esc(r.judge)}, {esc(r.variant)})</p><div class='answer'>{esc(r.answer)}</div>"
                for r in worst.itertuples(index=False)) or "<p class='note'>no scored answers</p>"
            question = df[(df["group"] == g) & (df["question_id"] == q)]["question"].iloc[0]
            cells.append(f"<details><summary>{esc(q)}</summary><p><b>Question:</b> {esc(question)}</p>"
                         f"{items}</details>")
        parts.append(f"<h3>{esc(g)}</h3>" + "".join(cells))
    return "".join(parts)


def render(title: str, notes: list[str], tables: list[tuple[str, pd.DataFrame]], figures: list[tuple[str, str]],
           examples: str) -> str:
    body = [f"<h1>{esc(title)}</h1>"] + [f"<p class='note'>{esc(n)}</p>" for n in notes]
    for caption, df in tables:
        body.append(f"<h2>{esc(caption)}</h2>{table_html(df)}")
    if figures:
        body.append("<h2>Figures</h2>")
        body += [f"<figure><img src='{esc(src)}' alt='{esc(cap)}'><figcaption>{esc(cap)}</figcaption></figure>"
                 for cap, src in figures]
    body.append("<h2>Most misaligned answers per dataset and question</h2>" + examples)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
