"""A static HTML report, the headline first: what was run, the rates in a sentence per organism, the paper-style
figure, a compact table, the answers behind them (`browser.py`), then every other table in collapsible sections.

Model output is untrusted: every string is escaped, and the Content-Security-Policy allows scripts only from
files beside the report (the answer browser's), never inline, so an answer carrying `<script>` or `onerror=`
can only ever show as text.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import pandas as pd

from emwb.analysis.tables import fmt_cell

CSP = ("default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'self' file:; "
       "base-uri 'none'; form-action 'none'")
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
.wide { max-width: 100%; overflow-x: auto; }
img, svg { max-width: 100%; height: auto; }
figure { margin: 0.5em 0 1.5em; }
.summary { font-size: 1.05em; line-height: 1.5; }
.answer { white-space: pre-wrap; background: #f7f7f7; padding: 6px; border-left: 3px solid #c33; font-size: 0.9em;
          text-align: left; max-width: 60em; overflow-wrap: anywhere; }
.note { color: #555; font-size: 0.9em; }
details { margin: 0.4em 0; border-top: 1px solid #eee; padding-top: 0.3em; }
summary { cursor: pointer; font-weight: 600; }
#ab-controls label { margin-right: 0.8em; white-space: nowrap; }
#ab-controls select, #ab-controls input { max-width: 14em; }
.ab-pair { display: flex; gap: 1em; }
.ab-side { flex: 1 1 0; min-width: 0; }
.ab-table td.ab-text { min-width: 20em; }
@media print {
  #answer-browser { display: none; }
  details { break-inside: avoid; }
  figure, table { break-inside: avoid; }
  .wide { overflow: visible; }
}
"""


@dataclass
class Page:
    """What the report shows, in order."""

    title: str
    summary: list[str]                                  # the headline in sentences
    lead: tuple[str, str] | None                        # (caption, inline SVG) of the paper-style figure
    headline: pd.DataFrame                              # the compact headline table
    headline_links: list[str]                           # per headline row: its answers in the browser
    browser: str                                        # the answer browser's element
    figures: list[tuple[str, str]] = field(default_factory=list)   # (caption, file) of the other figures
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # every other table (collapsed)
    notes: list[str] = field(default_factory=list)
    details: list[tuple[str, str]] = field(default_factory=list)   # (summary, HTML) of the sections: collapsed


def esc(value) -> str:
    """A cell or label as HTML text: strings escaped, numbers and missing values as the tables print them."""
    return html.escape(value if isinstance(value, str) else fmt_cell(value), quote=True)


def table_html(df: pd.DataFrame, links: list[str] | None = None) -> str:
    """A table; with `links`, each row's first cell links there (an in-page address such as #answers?...)."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for i, r in enumerate(df.itertuples(index=False)):
        cells = [esc(v) for v in r]
        if links and links[i]:
            cells[0] = f"<a href='{esc(links[i])}'>{cells[0]}</a>"
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"


def answers_link(**filters: str) -> str:
    """The browser's address for answers matching `filters` (variant, group, evaluation, question, verdict)."""
    from urllib.parse import quote

    return "#answers?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in filters.items() if v)


def row_links(df: pd.DataFrame) -> list[str] | None:
    """For a table with an organism column (and a question or evaluation column), each row's answers."""
    if "organism" not in df.columns:
        return None
    links = []
    for _, r in df.iterrows():
        group = r["organism"]
        ok = isinstance(group, str) and ":" not in group  # calibration rows are training data, not answers
        links.append(answers_link(group=group, question=r.get("question", ""), evaluation=r.get("evaluation", ""))
                     if ok else "")
    return links


def inline_svg(svg: str) -> str:
    """A matplotlib SVG for inlining: no XML prolog or doctype, no scripts or event handlers (belt and braces:
    the text in it is ours, escaped by matplotlib)."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<script.*?</script>", "", svg, flags=re.S | re.I)
    return re.sub(r"\son\w+\s*=\s*(\"[^\"]*\"|'[^']*')", "", svg)


def render(page: Page) -> str:
    body = [f"<h1>{esc(page.title)}</h1>", "<div class='summary'>"]
    body += [f"<p>{esc(s)}</p>" for s in page.summary] + ["</div>"]
    if page.lead:
        body.append(f"<figure id='lead-figure'>{page.lead[1]}<figcaption>{esc(page.lead[0])} Click a marker for "
                    "its answers.</figcaption></figure>")
    body.append(f"<h2>Headline</h2>{table_html(page.headline, page.headline_links)}")
    body += [f"<p class='note'>{esc(n)}</p>" for n in page.notes]
    body.append(page.browser)
    if page.figures:
        body.append("<h2>Figures</h2>")
        body += [f"<figure><img src='{esc(src)}' alt='{esc(cap)}'><figcaption>{esc(cap)}</figcaption></figure>"
                 for cap, src in page.figures]
    body.append("<h2>Tables</h2>")
    body += [f"<details><summary>{esc(caption)}</summary>{table_html(df, row_links(df))}"
             + (f"<p class='note'>{esc(df.attrs['note'])}</p>" if df.attrs.get("note") else "") + "</details>"
             for caption, df in page.tables]
    body += [f"<details><summary>{esc(summary)}</summary>{part}</details>" for summary, part in page.details]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(page.title)}</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
