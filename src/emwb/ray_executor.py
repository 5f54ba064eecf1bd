"""The experiment matrix as Ray tasks: `exec.executor: ray` (or `emwb replicate CONFIG --executor ray`).

The driver checks the experiment, builds the base model and the datasets, checks that every node sees the run
directory, then hands the cells to Ray: one task per training cell (an organism's phases for one seed), per
sampling shard (the variants on one set of weights, batched as the local executor batches them; it starts when
their adapters are finished) and per judging shard (one variant's detections and judgments), with the
resources `exec:` asks for. Every cell is the ordinary stage
code on a subset, so its artifacts are keyed and atomic: a task lost with its worker is retried by Ray, a
half-written artifact is never taken as finished, and a finished one is skipped. The report is written by
the driver. Nothing here is imported with `executor: local`.
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
from emwb.layout import variants
from emwb.store import Run, atomic_write_text, log
from emwb.threads import run_threads

# Environment a task needs to behave as the driver does (never secrets: nodes bring their own API keys).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TOKENIZERS_PARALLELISM", "OPENAI_BASE_URL", "EMWB_DATASETS_DIR",
                 "EMWB_DATASET_MIRROR", "VLLM_CPU_KVCACHE_SPACE")
RETRIES = 3


def cells_dir(run: Run) -> Path:
    """Where each task attempt records where it ran (`executor/ray/<cell>.<node>.<pid>.json`)."""
    return run.path("executor", "ray")


def _cell(kind: str, run_dir: str, exp_json: str, cell: str, threads: int, *deps) -> str:
    """One cell, run in a Ray worker: the stage code on a subset of the run."""
    import ray

    from emwb.config import Experiment
    from emwb.threads import apply_threads

    apply_threads(threads)
    run = Run(Experiment.model_validate_json(exp_json), Path(run_dir))
    node = ray.get_runtime_context().get_node_id()
    record = {"cell": cell, "kind": kind, "node": node, "host": socket.gethostname(), "pid": os.getpid(),
              "started": time.time()}
    atomic_write_text(cells_dir(run) / f"{cell}.{node[:12]}.{os.getpid()}.json", json.dumps(record))
    if kind == "train":
        from emwb.finetune.stage import run_finetune_stage

        organism, seed = cell.removeprefix("train:").rsplit("-s", 1)
        run_finetune_stage(run, cells={(organism, int(seed))})
    elif kind == "sample":
        from emwb.sampling.stage import run_sample_stage

        run_sample_stage(run, only=set(cell.removeprefix("sample:").split("+")))
    else:
        from emwb.detect.stage import run_detect_stage
        from emwb.judge.stage import run_judge_stage

        variant = cell.removeprefix("judge:")
        run_detect_stage(run, only={variant}, calibration=False)
        run_judge_stage(run, only={variant})
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


def run_cells(run: Run, ray, force: bool = False) -> None:
    """Train, sample and judge every cell as Ray tasks, following the stage graph."""
    from tqdm import tqdm

    if force:
        raise EmwbError("--force with the ray executor: remove the artifacts to redo instead")
    ex = run.exp.exec
    run_dir, exp_json = str(run.dir.resolve()), run.exp.model_dump_json(exclude_unset=True)  # as given: the plan
    threads = run_threads(ex)  # the driver's count, so every task computes as the local executor would
    task = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_cell)
    opts = {"train": dict(num_cpus=ex.cpus_per_task, num_gpus=ex.gpus_per_cell),
            "sample": dict(num_cpus=ex.cpus_per_task, num_gpus=ex.gpus_per_engine),
            "judge": dict(num_cpus=ex.cpus_per_task)}
    refs: dict[str, object] = {}
    for o in run.exp.organisms:
        for seed in run.exp.seeds:
            name = f"train:{o.name}-s{seed}"
            refs[name] = task.options(**opts["train"], name=name).remote("train", run_dir, exp_json, name, threads)
    for group in sampling_groups(run.exp):
        deps = list(dict.fromkeys(refs[f"train:{v.organism}-s{v.seed}"] for v in group if v.organism))
        s = "sample:" + "+".join(v.id for v in group)
        refs[s] = task.options(**opts["sample"], name=s).remote("sample", run_dir, exp_json, s, threads, *deps)
        for v in group:
            j = f"judge:{v.id}"
            refs[j] = task.options(**opts["judge"], name=j).remote("judge", run_dir, exp_json, j, threads, refs[s])
    _wait(ray, refs, tqdm)


def sampling_groups(exp) -> list[list]:
    """The variants one sampling cell samples together: every variant on the base model's weights (the base and
    its LoRA adapters) in one cell, as the local executor batches them in one engine (the batch a request shares
    changes its floats, so this keeps the answers equal); each full checkpoint alone."""
    shared, alone = [], []
    for v in variants(exp):
        phase = next(o for o in exp.organisms if o.name == v.organism).phases[v.phase_index] if v.organism else None
        (alone if phase is not None and exp.phase_args(phase).method == "full" else shared).append(v)
    return [g for g in [shared, *([v] for v in alone)] if g]


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
