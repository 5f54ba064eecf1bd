"""The report's answer browser: every answer with its scores, as static files that open from disk.

`report/browser/index.js` holds one compact row per answer (variant, question, sample, every judge's scores,
detector flags, finish reason; no text) and `report/browser/text-<k>.js` the answers' texts in chunks, loaded
only when shown or searched. Both are JSON passed to a function (`emwbIndex(...)`, `emwbText(k, [...])`), so
they load as scripts from `file://` without a server; `browser.js` (shipped beside this module) renders them
with `textContent` only: an answer is data, never markup.
"""

from __future__ import annotations

import json
import math
import shutil
from importlib import resources
from pathlib import Path

import pandas as pd

CHUNK = 500  # answers per text file
COLUMNS = ("variant", "group", "evaluation", "question_id", "sample_index", "finish_reason")


def _num(v):
    """A score as JSON: a float rounded to 2 decimals, a mapping (label probabilities) as its top label, or null."""
    if isinstance(v, dict):
        return max(v, key=v.get) if v else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else round(f, 2)


def _js(call: str, *args) -> str:
    """`call(arg, ...);` with each argument as JSON: "</" cannot close a script, U+2028/2029 cannot end a line."""
    text = ",".join(json.dumps(a, ensure_ascii=False, separators=(",", ":")) for a in args)
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return f"{call}({text});\n"


def write_browser(out: Path, df: pd.DataFrame, judges: list[str], rubrics: list[str], detectors: list[str],
                  settings: dict) -> None:
    """Write `out/browser/` from the judged answers (one row per answer and judge)."""
    folder = out / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    answers = df.drop_duplicates("answer_id").reset_index(drop=True)
    wide = {}
    for j in judges:
        sub = df[df["judge"] == j].set_index("answer_id")
        for r in rubrics:
            if r in sub and sub[r].notna().any():
                wide[f"{r} ({j})"] = [_num(v) for v in sub[r].reindex(answers["answer_id"])]
    # element by element: Series.map(_num) turned each None back into NaN (written as NaN: read as incoherent)
    flags = {d: [_num(v) for v in answers[d]] for d in detectors if d in answers and answers[d].notna().any()}
    rows = []
    for i, a in enumerate(answers.itertuples(index=False)):
        rec = [getattr(a, c, None) for c in COLUMNS]
        rec = [None if (isinstance(v, float) and math.isnan(v)) else v for v in rec]
        rows.append(rec + [w[i] for w in wide.values()] + [f[i] for f in flags.values()])
    questions = {f"{r.evaluation}/{r.question_id}": r.question
                 for r in answers.drop_duplicates(["evaluation", "question_id"]).itertuples(index=False)}
    index = {"columns": list(COLUMNS), "scores": list(wide), "flags": list(flags), "rows": rows,
             "chunk": CHUNK, "chunks": math.ceil(len(answers) / CHUNK), "questions": questions,
             "judges": judges, "settings": settings}
    (folder / "index.js").write_text(_js("emwbIndex", index), encoding="utf-8")
    texts = answers["answer"].fillna("").astype(str).tolist()
    for k in range(index["chunks"]):
        (folder / f"text-{k}.js").write_text(_js("emwbText", k, texts[k * CHUNK:(k + 1) * CHUNK]), encoding="utf-8")
    shutil.copyfile(Path(str(resources.files("emwb.analysis") / "browser.js")), folder / "browser.js")


def browser_html() -> str:
    """The browser's element: controls, a status line, the table; filled by browser/browser.js."""
    return ("<section id='answer-browser'><h2>Answers</h2>"
            "<p class='note'>Every answer with every judge's scores. Filter, sort, search the text, or compare two "
            "variants side by side on one question. Links in the tables and figure open the answers behind a "
            "number.</p><div id='ab-controls'></div><p id='ab-status' class='note'>Loading answers…</p>"
            "<div id='ab-results'></div></section>"
            "<script src='browser/browser.js'></script><script src='browser/index.js'></script>")
