"""The whole experiment, stage after stage; each artifact is skipped when it is current.

Before any stage runs, every reference of the experiment is resolved (`emwb config check`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from emwb.layout import report_dir
from emwb.store import Run, log


def replicate(config: str | Path, runs_root: str | Path = "runs", force: bool = False,
              exec_overrides: dict | None = None, wait: bool = False, overrides: list[str] | None = None) -> Run:
    """check -> base -> data -> directions -> finetune -> sample -> projections -> detect -> judge ->
    report for one experiment.

    `exec_overrides` (run settings such as {"executor": "ray", "address": "HOST:PORT"}) win over the file's.
    The run directory is locked for the whole run: a second writer stops with one line (or, with `wait`,
    waits for the first to finish). `overrides` ("KEY=VALUE", `--set`) change any experiment field.
    """
    from emwb.check import check_experiment

    t0 = time.time()
    with contextlib.ExitStack() as held:
        run = Run.open(config, runs_root, check=check_experiment, hold=held, wait=wait, overrides=overrides)
        if exec_overrides:
            from emwb.config import ExecConfig
            from emwb.plan import plan_of

            merged = ExecConfig.model_validate({**run.exp.exec.model_dump(), **exec_overrides})
            run = Run(run.exp.model_copy(update={"exec": merged}), run.dir, plan_of(run))
        log(f"experiment {run.exp.name} -> {run.dir}")
        _stages(run, force)
    print((report_dir(run) / "comparison.md").read_text())
    log(f"done in {time.time() - t0:.0f} s; report: {(report_dir(run) / 'index.html').resolve()}")
    return run


def _stages(run: Run, force: bool) -> None:
    from emwb.analysis.stage import run_report_stage
    from emwb.basemodel import run_base_stage
    from emwb.datasets.stage import run_data_stage
    from emwb.detect.stage import run_detect_stage
    from emwb.finetune.stage import run_finetune_stage
    from emwb.judge.stage import run_judge_stage
    from emwb.mechanisms.stage import run_directions_stage, run_projections_stage
    from emwb.sampling.stage import run_sample_stage

    if run.exp.exec.executor == "ray":
        from emwb.ray_executor import ray_session, run_cells

        with ray_session(run) as ray:  # every node must see the run directory before anything starts
            run_base_stage(run, force)
            run_data_stage(run, force)
            run_directions_stage(run, force)
            run_cells(run, ray, force)  # train, sample, detect and judge every cell as Ray tasks
    else:
        run_base_stage(run, force)
        run_data_stage(run, force)
        run_directions_stage(run, force)
        run_finetune_stage(run, force)
        run_sample_stage(run, force)
    run_projections_stage(run, force)
    run_detect_stage(run, force)  # with ray: every variant is current already; this writes the calibration
    run_judge_stage(run, force=force)
    run_report_stage(run, force)
