"""Stage `detect`: rule-based detectors over answers -> `detections/<variant>/`, and over training data ->
`detections/_calibration/` (how often each detector fires on each chat dataset's assistant completions).

Judge-free cross-checks of the LLM judge: an answer gets a detector's column when its evaluation lists the
detector (`detectors:`); other answers get null. Re-running is a no-op while answers and tools are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emwb.catalog.detectors import DETECTORS
from emwb.layout import (
    CALIBRATION_FILE,
    DETECTIONS_FILE,
    answers_dir,
    answers_file,
    calibration_dir,
    data_file,
    detections_dir,
    finished_key,
)
from emwb.stages import DATA, SAMPLE, Produced
from emwb.store import Artifact, Run, log, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from emwb.context import StageContext


def _versions(names) -> dict[str, str]:
    return {n: DETECTORS.get(n).version() for n in sorted(names)}


def run_detect_stage(ctx: StageContext) -> dict[str, str]:
    """Detections for every variant (or those in `ctx.only`) when any evaluation lists detectors, then (for the
    whole run, not a subset) the calibration rows."""
    run, force = ctx.run, ctx.force
    by_ev = ctx.plan.detectors()
    if not by_ev:
        return {}
    names = sorted({d for ds in by_ev.values() for d in ds})
    config = {"detectors": _versions(names), "by_evaluation": by_ev}
    keys = {}
    for v in ctx.variants():
        akey = finished_key(answers_dir(run, v.id), f"answers of {v.id}", SAMPLE, run)
        art = Artifact(detections_dir(run, v.id), "detect", config, {"answers": akey})
        keys[v.id] = art.key
        if art.skip(force, f"detect {v.id}"):
            continue
        answers = read_jsonl(answers_file(run, v.id))
        rows = [{"answer_id": a["answer_id"], **dict.fromkeys(names)} for a in answers]
        for name in names:
            idx = [i for i, a in enumerate(answers) if name in by_ev.get(a["evaluation"], ())]
            for i, value in zip(idx, DETECTORS.get(name).score([answers[i] for i in idx])):
                rows[i][name] = value
        with art.write() as (tmp, extra):
            write_jsonl(tmp / DETECTIONS_FILE, rows)
            extra.update(variant=v.id, counts={n: sum(r[n] is not None for r in rows) for n in names})
        log(f"detect {v.id}: " + ", ".join(f"{n} {sum(r[n] or 0 for r in rows):.0f}/"
                                            f"{sum(r[n] is not None for r in rows)}" for n in names))
    if ctx.only is None:
        keys["_calibration"] = run_calibration(run, names, force)
    return keys


def run_calibration(run: Run, names: list[str], force: bool = False) -> str:
    """Each detector on the first `analysis.calibration_rows` assistant completions of every chat dataset an organism
    trains on: rows {detector, data, n, flagged, rate}."""
    chat = list(dict.fromkeys(p.data for o in run.exp.organisms for p in o.phases if p.trainer == "sft"))
    inputs = {f"data:{d}": finished_key(data_file(run, d).parent, f"data {d}", DATA, run) for d in chat}
    rows = run.exp.analysis.calibration_rows
    art = Artifact(calibration_dir(run), "detect", {"detectors": _versions(names), "rows": rows}, inputs)
    if art.skip(force, "detector calibration"):
        return art.key
    out = []
    for d in chat:
        texts = [{"answer": r["messages"][-1]["content"], "bias_id": (r.get("meta") or {}).get("bias_id")}
                 for r in read_jsonl(data_file(run, d))[:rows]
                 if r.get("messages") and r["messages"][-1].get("role") == "assistant"]
        for name in names:
            scores = [s for s in DETECTORS.get(name).score(texts) if s is not None]
            flagged = int(sum(scores))
            out.append({"detector": name, "data": d, "n": len(scores), "flagged": flagged,
                        "rate": flagged / len(scores) if scores else None})
            log(f"detect calibration: {name} flags {flagged}/{len(scores)} completions of {d}")
    with art.write() as (tmp, _):
        write_jsonl(tmp / CALIBRATION_FILE, out)
    return art.key


def produced(ctx: StageContext) -> list[Produced]:
    """Each variant's detections and the calibration, when any evaluation lists detectors."""
    if not ctx.plan.detectors():
        return []
    return [Produced(v.id, detections_dir(ctx.run, v.id)) for v in ctx.plan.variants] + [
        Produced("_calibration", calibration_dir(ctx.run))]
