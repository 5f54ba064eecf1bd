"""The whole experiment, stage after stage; each stage is skipped when its artifact is current."""

from __future__ import annotations

import time
from pathlib import Path

from emwb.store import Run, log


def replicate(config: str | Path, runs_root: str | Path = "runs", force: bool = False) -> Run:
    """base -> data -> finetune -> sample -> judge -> report for one experiment file."""
    from emwb.analysis.stage import run_report_stage
    from emwb.basemodel import run_base_stage
    from emwb.datasets.stage import run_data_stage
    from emwb.finetune.stage import run_finetune_stage
    from emwb.judge.stage import run_judge_stage
    from emwb.sampling.stage import run_sample_stage

    t0 = time.time()
    run = Run.open(config, runs_root)
    log(f"experiment {run.exp.name} -> {run.dir}")
    base_key = run_base_stage(run, force)
    run_data_stage(run, force)
    run_finetune_stage(run, base_key, force)
    run_sample_stage(run, base_key, force)
    judge_keys = run_judge_stage(run, force=force)
    run_report_stage(run, judge_keys, force)
    print(run.path("report", "comparison.md").read_text())
    log(f"done in {time.time() - t0:.0f} s; report: {run.path('report', 'index.html').resolve()}")
    return run
