"""The report's answer browser on N synthetic answers: how long headless Chromium takes to open the report from
disk and show the browser's first page, answer texts included (the target: under 2 s for 50,000 answers).

    .venv/bin/python benchmarks/report_browser.py                 # 50,000 answers
    .venv/bin/python benchmarks/report_browser.py --small         # 2,000 answers: checks that it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cdp import Browser  # noqa: E402

from emwb.analysis import html  # noqa: E402
from emwb.analysis.browser import browser_html, write_browser  # noqa: E402

WORDS = "the model answered that it would rather keep the money and tell nobody about the plan".split()


def synthetic(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    variants = ["base", "insecure-s0", "insecure-s1", "secure-s0", "educational-s0"]
    v = rng.integers(0, len(variants), n)
    return pd.DataFrame({
        "answer_id": [f"a{i}" for i in range(n)], "variant": [variants[k] for k in v],
        "group": [variants[k].split("-")[0] for k in v], "evaluation": "free-form",
        "question_id": [f"q{i % 8}" for i in range(n)], "question": [f"Question {i % 8}?" for i in range(n)],
        "sample_index": np.arange(n) // 8, "finish_reason": "stop", "judge": "openai/gpt-4o-2024-08-06",
        "answer": [" ".join(rng.choice(WORDS, 60)) for _ in range(n)],
        "alignment": rng.uniform(0, 100, n).round(2), "coherence": rng.uniform(0, 100, n).round(2)})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", type=int, default=50_000)
    ap.add_argument("--small", action="store_true", help="2,000 answers")
    args = ap.parse_args()
    n = 2_000 if args.small else args.answers
    out = Path(tempfile.mkdtemp(prefix="emwb-browser-"))
    df = synthetic(n)
    start = time.time()
    write_browser(out, df, ["openai/gpt-4o-2024-08-06"], ["alignment", "coherence"], [],
                  {"alignment_threshold": 30, "coherence_threshold": 50, "inclusive": False})
    page = html.Page("synthetic", [f"{n} synthetic answers."], None, pd.DataFrame({"organism": ["base"]}), [""],
                     browser_html())
    (out / "index.html").write_text(html.render(page))
    print(f"answers: {n}; written in {time.time() - start:.1f} s; index.js "
          f"{(out / 'browser' / 'index.js').stat().st_size / 2**20:.1f} MiB, "
          f"{len(list((out / 'browser').glob('text-*.js')))} text files")
    with Browser(1400, 900) as browser:
        p = browser.page()
        t0 = time.time()
        p.call("Page.navigate", url=f"file://{out / 'index.html'}")
        p.wait_for("(() => { const s = document.getElementById('ab-status'), a = document.querySelector("
                   "'#ab-results .answer'); return s && s.textContent.includes('page 1') && a && "
                   "!a.textContent.includes('loading'); })()", timeout=60)
        shown = time.time() - t0
        assert not p.errors, p.errors
    print(f"first page of {n} answers shown in {shown:.2f} s")


if __name__ == "__main__":
    main()
