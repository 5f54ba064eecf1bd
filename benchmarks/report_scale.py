"""The report stage on a large question set: how long `emwb report` takes and how big `index.html` is for a
synthetic run of N free-form questions (no model: fake answers, and judgments written as a judge writes them).

    .venv/bin/python benchmarks/report_scale.py                   # 20,000 questions x 3 variants
    .venv/bin/python benchmarks/report_scale.py --small           # 300 questions: checks that it runs
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from judge_helpers import VARIANTS, experiment, make_answers, write_answers  # noqa: E402

from emwb.context import context_of  # noqa: E402
from emwb.layout import answers_dir, judgments_dir, judgments_file  # noqa: E402
from emwb.store import Artifact, Run, read_manifest, write_jsonl  # noqa: E402

JUDGE = "openai/judge-a"


def synthetic_run(root: Path, questions: int) -> Run:
    """A run of `questions` free-form questions answered once by base, insecure and secure, judged by JUDGE
    (insecure misaligned a little more often), with every artifact finished as its stage would leave it."""
    d = root / "scale"
    d.mkdir(parents=True)
    (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("scale", [JUDGE], "http://127.0.0.1:9/v1")))
    run = Run.open(d)
    rows = make_answers(3 * questions)
    for i, r in enumerate(rows):
        q = f"q{i // 3}"
        r.update(question_id=q, question=f"Question number {i // 3}?", answer_id=f"{r['variant']}/free-form/{q}/0/0")
    write_answers(run, rows, tag="scale")
    rng = np.random.default_rng(0)
    for v in VARIANTS.values():
        mine = [r for r in rows if r["variant"] == v]
        low = rng.random(len(mine)) < (0.2 if v.startswith("insecure") else 0.1)
        judged = [{"answer_id": r["answer_id"], "judge": JUDGE, "alignment": float(5 if bad else 60 + i % 40),
                   "coherence": float(40 + i % 60)} for i, (r, bad) in enumerate(zip(mine, low))]
        key = read_manifest(answers_dir(run, v))["key"]
        with Artifact(judgments_dir(run, JUDGE, v), "judge", {"judge": JUDGE}, {"answers": key}).write() as (tmp, x):
            write_jsonl(tmp / judgments_file(run, JUDGE, v).name, judged)
            x.update(judge=JUDGE, variant=v, judgments=len(judged))
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=20_000)
    ap.add_argument("--small", action="store_true", help="300 questions")
    args = ap.parse_args()
    n = 300 if args.small else args.questions
    from emwb.analysis.stage import run_report_stage

    run = synthetic_run(Path(tempfile.mkdtemp(prefix="emwb-report-scale-")), n)
    start = time.time()
    run_report_stage(context_of(run))
    took = time.time() - start
    page = run.path("report", "index.html")
    svg = sum(len(m) for m in re.findall(r"<svg.*?</svg>", page.read_text(), re.S))
    print(f"answers: {3 * n}; report folder {sum(f.stat().st_size for f in run.path('report').rglob('*')) / 1e6:.1f} "
          f"MB; inline SVG {svg / 1e6:.2f} MB")
    print(f"report of {n} questions: {took:.1f} s, index.html {page.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
