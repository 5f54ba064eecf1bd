"""The whole experiment, stage after stage; each artifact is skipped when it is current.

Before any stage runs, every reference of the experiment is resolved (`emwb config check`).
"""

from __future__ import annotations

import time
from pathlib import Path

from emwb.layout import report_dir
from emwb.store import Run, log


def replicate(config: str | Path, runs_root: str | Path = "runs", force: bool = False) -> Run:
    """check -> base -> data -> finetune -> sample -> detect -> judge -> report for one experiment file."""
    from emwb.analysis.stage import run_report_stage
    from emwb.basemodel import run_base_stage
    from emwb.check import check_experiment
    from emwb.datasets.stage import run_data_stage
    from emwb.detect.stage import run_detect_stage
    from emwb.finetune.stage import run_finetune_stage
    from emwb.judge.stage import run_judge_stage
    from emwb.sampling.stage import run_sample_stage

    t0 = time.time()
    run = Run.open(config, runs_root, check=check_experiment)
    log(f"experiment {run.exp.name} -> {run.dir}")
    run_base_stage(run, force)
    run_data_stage(run, force)
    run_finetune_stage(run, force)
    run_sample_stage(run, force)
    run_detect_stage(run, force)
    run_judge_stage(run, force=force)
    run_report_stage(run, force)
    print((report_dir(run) / "comparison.md").read_text())
    log(f"done in {time.time() - t0:.0f} s; report: {(report_dir(run) / 'index.html').resolve()}")
    return run
