"""`emwb status RUN`: per stage and variant, what is current, stale (and which input changed), missing or in
progress (sampling chunks saved, judgments cached, the last checkpoint's training step), with the time each
finished artifact took. Reads only: never writes, never takes the run's lock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from emwb.context import StageContext
from emwb.freshness import current_keys, finished, input_problem
from emwb.runlock import pid_alive, read_holder
from emwb.stages import table
from emwb.store import Run


@dataclass
class Row:
    stage: str
    variant: str
    state: str            # current, stale, damaged (files differ from its manifest), in progress, missing
    detail: str = ""
    seconds: float | None = None  # finished - started, as the manifest recorded them
    judge: str = ""


def _seconds(m: dict) -> float | None:
    try:
        return (datetime.fromisoformat(m["finished"]) - datetime.fromisoformat(m["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _finished(run: Run, stage: str, variant: str, found: dict, folder, keys: dict[str, str],
              judge: str = "") -> Row | None:
    """The row of a finished artifact (`found`: every one's manifest and damage, from freshness.finished), or None;
    its inputs are checked as the stages and `emwb compare` check them (freshness.input_problem)."""
    if folder not in found:
        return None
    m, why = found[folder]
    if why:
        return Row(stage, variant, "damaged", f"{why}; replicate rebuilds it", _seconds(m), judge)
    problem = input_problem(run, m, found, keys)
    if problem:
        return Row(stage, variant, "stale", problem, _seconds(m), judge)
    return Row(stage, variant, "current", f"finished {m.get('finished', '')[:19]}", _seconds(m), judge)


def run_status(ctx: StageContext) -> list[Row]:
    """A row per artifact of every stage of the table, in table order."""
    found = finished(ctx.run)
    keys = current_keys(ctx.run, found)
    rows: list[Row] = []
    for stage in table():
        for p in stage.artifacts(ctx):
            done = _finished(ctx.run, stage.name, p.variant, found, p.folder, keys, p.judge)
            rows.append(done or Row(stage.name, p.variant, "in progress" if p.progress else "missing", p.progress,
                                    judge=p.judge))
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
    counts = {s: sum(r.state == s for r in rows) for s in ("current", "stale", "damaged", "in progress", "missing")}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def status_json(run: Run, rows: list[Row]) -> dict:
    return {"run": str(run.dir), "writer": writer(run), "artifacts": [asdict(r) for r in rows]}
