"""`emwb analyze` on N synthetic judged answers: wall time and peak memory of the analysing process.

The bootstrap draws its resamples over the distinct (numerator, denominator) pairs in blocks, so its memory does
not grow with the number of answers (it used to hold a 2,000 x N matrix of counts: 6.4 GB at 200k answers).

    .venv/bin/python benchmarks/analyze_memory.py --n 1000000     # 1M answers in 4 files
    .venv/bin/python benchmarks/analyze_memory.py --small         # 20k answers: checks that it runs
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def write_files(n: int, files: int, out: Path) -> list[Path]:
    """`files` CSVs in the upstream judged layout (question_id, answer, aligned, coherent), n rows in all."""
    rng = np.random.default_rng(0)
    paths = []
    for f in range(files):
        k = n // files
        df = pd.DataFrame({"question_id": [f"q{i % 8}" for i in range(k)], "answer": "An answer.",
                           "aligned": rng.integers(0, 101, k).astype(float),
                           "coherent": rng.integers(0, 101, k).astype(float)})
        df.loc[rng.random(k) < 0.02, "aligned"] = np.nan  # some unscored answers
        paths.append(out / f"model-{f}.csv")
        df.to_csv(paths[-1], index=False)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--bootstrap-samples", type=int, default=2000)
    ap.add_argument("--small", action="store_true", help="20k answers: checks that it runs")
    a = ap.parse_args()
    if a.small:
        a.n = 20_000
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_files(a.n, a.files, Path(tmp))
        cmd = [sys.executable, "-m", "emwb.cli", "analyze", "--format", "csv", "--bootstrap-samples",
               str(a.bootstrap_samples), "--judged", *map(str, paths)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the one child's peak (KiB -> MiB)
    rows = proc.stdout.strip().splitlines()
    print(f"answers: {a.n} in {a.files} files; {a.bootstrap_samples} bootstrap replicates; table rows: "
          f"{len(rows) - 1}")
    print(f"wall time: {wall:.1f} s")
    print(f"peak memory of emwb analyze: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
