"""The whole experiment: every stage of the table (`emwb.stages`) in order; each artifact is skipped when it
is current.

Before any stage runs, every reference of the experiment is resolved (`emwb config check`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from emwb.config import ExecConfig, Experiment
from emwb.context import StageContext
from emwb.layout import report_dir
from emwb.plan import Plan, plan_for, refuse_newer
from emwb.stages import run_stages, table
from emwb.store import PLAN_FILE, Run, log


def open_context(target: str | Path, runs_root: str | Path = "runs", *, hold: contextlib.ExitStack | None = None,
                 wait: bool = False, overrides: list[str] | None = None, exec_overrides: dict | None = None,
                 force: bool = False) -> StageContext:
    """An experiment YAML or a run directory, checked before anything is written, with its plan.

    With `hold` (a writer) the run's lock is taken into that stack (`Run.open`). A run directory keeps the
    plan it was resolved to; an experiment file (or `--set` overrides) resolves it afresh. `exec_overrides`
    (run-only settings such as {"executor": "ray"}) win over the file's and change no artifact key."""
    from emwb.check import check_experiment

    checked: list[Plan] = []

    def check(exp: Experiment, source: str) -> None:  # before anything is written to the run directory
        refuse_newer((Path(target) if Path(target).is_dir() else Path(runs_root) / exp.name) / PLAN_FILE)
        checked.append(check_experiment(exp, source))

    run = Run.open(target, runs_root, check=check, hold=hold, wait=wait, overrides=overrides)
    given_dir = Path(target).is_dir()
    fresh = not given_dir or bool(overrides)
    plan = plan_for(run, checked[0] if fresh else None, keep=hold is not None or not given_dir)
    if exec_overrides:
        merged = ExecConfig.model_validate({**run.exp.exec.model_dump(), **exec_overrides})
        run = Run(run.exp.model_copy(update={"exec": merged}), run.dir)
    return StageContext(run, plan, force)


def replicate(config: str | Path, runs_root: str | Path = "runs", force: bool = False,
              exec_overrides: dict | None = None, wait: bool = False, overrides: list[str] | None = None
              ) -> Run:
    """Every stage of the table for one experiment (with `exec.executor: ray`, the per-variant stages as Ray
    tasks); prints what the stages print (the comparison table).

    `exec_overrides` (run settings such as {"executor": "ray", "address": "HOST:PORT"}) win over the file's.
    The run directory is locked for the whole run: a second writer stops with one line (or, with `wait`,
    waits for the first to finish). `overrides` ("KEY=VALUE", `--set`) change any experiment field.
    """
    t0 = time.time()
    with contextlib.ExitStack() as held:
        ctx = open_context(config, runs_root, hold=held, wait=wait, overrides=overrides,
                           exec_overrides=exec_overrides, force=force)
        log(f"experiment {ctx.exp.name} -> {ctx.dir}")
        if ctx.settings.executor == "ray":
            from emwb.ray_executor import ray_session, run_on_ray

            with ray_session(ctx.run) as ray:  # every node must see the run directory before anything starts
                run_on_ray(ctx, ray)
        else:
            run_stages(ctx)
    for s in table():
        if s.prints:
            print(ctx.run.path(s.prints).read_text())
    log(f"done in {time.time() - t0:.0f} s; report: {(report_dir(ctx.run) / 'index.html').resolve()}")
    return ctx.run
