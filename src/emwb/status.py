"""`emwb status RUN`: per stage and variant, what is current, stale (and which input changed), missing or in
progress (sampling chunks saved, judgments cached, the last checkpoint's training step), with the time each
finished artifact took. Reads only: never writes, never takes the run's lock.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from emwb.context import StageContext
from emwb.runlock import pid_alive, read_holder
from emwb.stages import table
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


def run_status(ctx: StageContext) -> list[Row]:
    """A row per artifact of every stage of the table, in table order."""
    keys = _current_keys(ctx.run)
    rows: list[Row] = []
    for stage in table():
        for p in stage.artifacts(ctx):
            done = _finished(stage.name, p.variant, p.folder, keys, p.judge)
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
    counts = {s: sum(r.state == s for r in rows) for s in ("current", "stale", "in progress", "missing")}
    lines.append("  " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def status_json(run: Run, rows: list[Row]) -> dict:
    return {"run": str(run.dir), "writer": writer(run), "artifacts": [asdict(r) for r in rows]}
