"""The experiment matrix as Ray tasks: `exec.executor: ray` (or `emwb replicate CONFIG --executor ray`).

The driver checks the experiment and that every node sees the run directory, then walks the table of stages
(`emwb.stages`): the stages before the first per-variant one run on the driver (base model, datasets,
directions); each per-variant stage after them becomes Ray tasks, one per cell of its `cells` (training: an
organism's phases for one seed; sampling: the variants on one set of weights, batched as the local executor
batches them; detection, judging and a plug-in's stage: one variant), each starting when the cells it reads
(the same variants' cells of the stages in its `reads`) are finished, with the resources `exec:` asks for.
Every cell is the ordinary stage code on a subset, so its artifacts are keyed and atomic: a task lost with its
worker is retried by Ray, a half-written artifact is never taken as finished, and a finished one is skipped.
A driver stage that a later per-variant stage reads (the features dictionary: it reads every trained adapter,
and sampling reads it) is a barrier: the cells submitted so far finish, it runs on the driver, then the cells
after it are submitted; a stage with nothing to do in the experiment is passed over. The driver then walks the
whole table itself: what the cells finished is a no-op, the rest (projections, calibration, the report) runs
there. Nothing here is imported with `executor: local`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from emwb.errors import EmwbError, first_line
from emwb.context import StageContext
from emwb.stages import run_stages, table
from emwb.store import Run, atomic_write_text, log
from emwb.threads import run_threads

# Environment a task needs to behave as the driver does (never secrets: nodes bring their own API keys).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "OPENAI_BASE_URL", "EMWB_DATASETS_DIR",
                 "EMWB_DATASET_MIRROR", "VLLM_CPU_KVCACHE_SPACE")
RETRIES = 3


def cells_dir(run: Run) -> Path:
    """Where each task attempt records where it ran (`executor/ray/<cell>.<node>.<pid>.json`)."""
    return run.path("executor", "ray")


def _cell(stage: str, run_dir: str, exp_json: str, plan_json: str, cell: str, only: list[str], threads: int,
          *deps) -> str:
    """One cell, run in a Ray worker: a stage's code on some variants of the run."""
    import ray

    from emwb.config import Experiment
    from emwb.context import StageContext
    from emwb.plan import Plan
    from emwb.stages import stage as stage_named
    from emwb.threads import apply_threads

    apply_threads(threads)
    run = Run(Experiment.model_validate_json(exp_json), Path(run_dir))
    node = ray.get_runtime_context().get_node_id()
    record = {"cell": cell, "kind": stage, "node": node, "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.time()}
    atomic_write_text(cells_dir(run) / f"{cell}.{node[:12]}.{os.getpid()}.json", json.dumps(record))
    stage_named(stage).run(StageContext(run, Plan.from_json(plan_json), only=frozenset(only)))
    return node


def _probe(path: str, token: str) -> tuple[bool, str]:
    p = Path(path)
    return (p.is_file() and p.read_text() == token), socket.gethostname()


def check_nodes_see(run: Run, ray) -> int:
    """Every alive node reads a probe file the driver wrote into the run directory; one line if one cannot."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    probe = run.dir / f".emwb-probe-{token}"
    atomic_write_text(probe, token)
    try:
        probe_task = ray.remote(num_cpus=0, max_retries=0)(_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [probe_task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), token) for n in nodes]
        for n, (ok, host) in zip(nodes, ray.get(refs)):
            if not ok:
                raise EmwbError(f"Ray node {host} ({n.get('NodeManagerAddress')}) cannot see the run directory "
                                f"{run.dir}: put --runs-root on storage every node mounts")
    finally:
        probe.unlink(missing_ok=True)
    return len(nodes)


@contextlib.contextmanager
def ray_session(run: Run) -> Iterator:
    """Connect to the Ray cluster (`exec.address`; None starts a local one), check that every node sees the
    run directory, and yield the `ray` module; disconnects at the end."""
    import ray

    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    ray.init(address=run.exp.exec.address, runtime_env={"env_vars": env}, log_to_driver=True,
             include_dashboard=False, configure_logging=False)
    try:
        log(f"ray: {check_nodes_see(run, ray)} nodes see {run.dir}")
        yield ray
    finally:
        ray.shutdown()


def run_on_ray(ctx: StageContext, ray) -> None:
    """Every stage of the table: per-variant stages as Ray tasks following the stage graph, the rest on the
    driver (see the module docstring)."""
    from tqdm import tqdm

    if ctx.force:
        raise EmwbError("--force with the ray executor: remove the artifacts to redo instead")
    stages = table()
    first = next((i for i, s in enumerate(stages) if s.per_variant), len(stages))
    run_stages(ctx, stages[:first])  # what every cell reads
    ex = ctx.settings
    run_dir, exp_json = str(ctx.dir.resolve()), ctx.exp.model_dump_json(exclude_unset=True)  # as given: the plan
    plan_json = ctx.plan.to_json()
    threads = run_threads(ex)  # the driver's count, so every task computes as the local executor would
    task = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_cell)
    cells: dict[str, list[tuple[frozenset[str], object]]] = {}  # stage -> (its variants, task) per cell
    refs: dict[str, object] = {}
    for i, s in enumerate(stages[first:], first):
        if not s.artifacts(ctx):
            continue  # nothing to do in this experiment (e.g. no features: block)
        if not s.per_variant:
            if any(s.name in later.reads for later in stages[i + 1:] if later.per_variant):
                _wait(ray, refs, tqdm)  # a barrier: the cells so far, then it, on the driver
                refs.clear()
                run_stages(ctx, [s])
            continue  # otherwise the driver runs it after the cells
        gpus = getattr(ex, s.gpus) if s.gpus else 0
        cells[s.name] = []
        for label, ids in s.groups(ctx):
            mine = frozenset(ids)
            deps = [ref for r in s.reads for theirs, ref in cells.get(r, ()) if theirs & mine]
            name = f"{s.name}:{label}"
            ref = task.options(num_cpus=ex.cpus_per_task, num_gpus=gpus, name=name).remote(
                s.name, run_dir, exp_json, plan_json, name, sorted(mine), threads, *dict.fromkeys(deps))
            cells[s.name].append((mine, ref))
            refs[name] = ref
    _wait(ray, refs, tqdm)
    run_stages(ctx)  # finished cells are no-ops; the driver's stages run here


def _wait(ray, refs: dict[str, object], tqdm) -> None:
    """A progress bar over cells and a line per finished cell; the first failed cell stops the run."""
    name_of = {r: n for n, r in refs.items()}
    pending, t0 = list(refs.values()), time.time()
    with tqdm(total=len(pending), desc="ray cells", unit="cell") as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            name = name_of[done[0]]
            try:
                node = ray.get(done[0])
            except Exception as exc:  # a cell's own error (after Ray's retries for lost workers)
                for r in pending:
                    ray.cancel(r, force=True)
                cause = getattr(exc, "cause", None) or exc
                raise EmwbError(f"ray cell {name} failed: {first_line(cause)}") from None
            bar.update(1)
            log(f"ray: {name} done on node {node[:12]} ({time.time() - t0:.0f} s)")
