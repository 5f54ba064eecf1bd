"""`emwb status RUN`: per stage and variant, what is current, stale (and which input changed), missing or in
progress (sampling chunks saved, judgments cached, the last checkpoint's training step), with the time each
finished artifact took. Reads only: never writes, never takes the run's lock.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from emwb.layout import (
    adapter_dir,
    answers_dir,
    calibration_dir,
    data_dir,
    detections_dir,
    directions_dir,
    judge_cache_path,
    judgments_dir,
    partial_dir,
    projections_dir,
    report_dir,
)
from emwb.plan import plan_of
from emwb.runlock import pid_alive, read_holder
from emwb.store import Run, read_manifest


@dataclass
class Row:
    stage: str
    variant: str
    state: str            # current, stale, in progress, missing
    detail: str = ""
    seconds: float | None = None  # finished - started, as the manifest recorded them
    judge: str = ""


def _seconds(m: dict) -> float | None:
    try:
        return (datetime.fromisoformat(m["finished"]) - datetime.fromisoformat(m["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _current_keys(run: Run) -> dict[str, str]:
    """key -> what it is, for every finished artifact of the run."""
    out = {}
    for path in run.dir.rglob("manifest.json"):
        if ".partial" in path.parts:
            continue
        m = read_manifest(path.parent)
        if m and m.get("key"):
            out[m["key"]] = str(path.parent.relative_to(run.dir))
    return out


def _current(key: str, keys: dict[str, str]) -> bool:
    """An input key is current when it is a finished artifact's key, or (a composite such as an edited variant's
    `<adapter key>+<edit>@<direction key>` or a checkpoint's `<key>@<step>`) every artifact key in it is."""
    if key in keys:
        return True
    found = re.findall(r"[0-9a-f]{64}", key)
    return bool(found) and all(k in keys for k in found)


def _finished(stage: str, variant: str, folder: Path, keys: dict[str, str], judge: str = "") -> Row | None:
    m = read_manifest(folder)
    if m is None:
        return None
    changed = [name for name, k in (m.get("inputs") or {}).items() if k and not _current(k, keys)]
    if changed:
        return Row(stage, variant, "stale", f"input {', '.join(changed)} changed since it was made", _seconds(m),
                   judge)
    return Row(stage, variant, "current", f"finished {m.get('finished', '')[:19]}", _seconds(m), judge)


def _sampling(run: Run, variant: str, planned: dict) -> str:
    """Chunks saved of a variant still being sampled, of those planned (the plan is built once per call of
    run_status, only when some variant has saved chunks)."""
    chunks = {c.name for c in partial_dir(run, "answers", variant).glob("*/chunk-*.jsonl")}
    if not chunks:
        return ""
    if "total" not in planned:
        from emwb.sampling.stage import sampling_plan

        planned["total"] = -(-len(sampling_plan(run)) // run.exp.exec.sample_chunk_prompts)
    return f"{len(chunks)} of {planned['total']} chunks saved"


def _training(folder: Path) -> str:
    steps = sorted(int(p.name.split("-")[1]) for p in (folder / "checkpoints").glob("step-*") if p.is_dir())
    return f"checkpoint at training step {steps[-1]}" if steps else ""


def _cached(run: Run) -> dict[str, int]:
    path = judge_cache_path(run)
    if not path.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
            return dict(c.execute("SELECT provider, COUNT(*) FROM judgments GROUP BY provider").fetchall())
    except sqlite3.Error:
        return {}


def run_status(run: Run) -> list[Row]:
    plan = plan_of(run)
    keys = _current_keys(run)
    rows: list[Row] = []

    def add(stage: str, variant: str, folder: Path, progress: str = "", judge: str = "") -> None:
        done = _finished(stage, variant, folder, keys, judge)
        rows.append(done or Row(stage, variant, "in progress" if progress else "missing", progress, judge=judge))

    for name in run.exp.data:
        add("data", name, data_dir(run, name))
    for d in run.exp.mechanisms.directions:
        chunks = len(list(partial_dir(run, "activations", d.name).glob("*.npy")))
        add("directions", d.name, directions_dir(run, d.name), f"{chunks} activation chunks saved" if chunks else "")
    for v in plan.variants:
        if v.organism is not None and v.step is None and v.edit is None:  # an edited variant trains nothing
            folder = adapter_dir(run, v.organism, v.phase_index, v.seed)
            add("finetune", v.id, folder, _training(folder))
    planned: dict = {}
    for v in plan.variants:
        add("sample", v.id, answers_dir(run, v.id), _sampling(run, v.id, planned))
    for d in run.exp.mechanisms.directions:
        add("projections", d.name, projections_dir(run, d.name))
    if plan.detectors():
        for v in plan.variants:
            add("detect", v.id, detections_dir(run, v.id))
        add("detect", "_calibration", calibration_dir(run))
    cached = _cached(run)
    for j in plan.judges:
        for v in plan.variants:
            n = cached.get(j, 0)
            add("judge", v.id, judgments_dir(run, j, v.id), f"{n} judgments of {j} cached" if n else "", j)
    add("report", "", report_dir(run))
    return rows


def writer(run: Run) -> str:
    """Who holds the run's lock now, if anyone."""
    import socket

    holder = read_holder(run.dir)
    pid = holder.get("pid")
    if pid and holder.get("host") == socket.gethostname() and pid_alive(int(pid)):
        return f"pid {pid} on {holder['host']}: {holder.get('command', '')}"
    return ""


def status_text(run: Run, rows: list[Row]) -> str:
    lines = [f"run {run.dir}" + (f" (being written by {w})" if (w := writer(run)) else "")]
    width = max(len(f"{r.stage} {r.judge} {r.variant}") for r in rows)
    for r in rows:
        took = f" ({r.seconds:.0f} s)" if r.seconds is not None and r.state in ("current", "stale") else ""
        what = " ".join(x for x in (r.stage, r.judge, r.variant) if x)
        lines.append(f"  {what:<{width}}  {r.state:<11}  {r.detail}{took}")
    counts = {s: sum(r.state == s for r in rows) for s in ("current", "stale", "in progress", "missing")}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def status_json(run: Run, rows: list[Row]) -> dict:
    return {"run": str(run.dir), "writer": writer(run), "artifacts": [asdict(r) for r in rows]}
