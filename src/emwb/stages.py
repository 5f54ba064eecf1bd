"""The table of stages: the one list `emwb replicate`, the per-stage commands, `emwb status` and the Ray
executor walk.

Each stage is one `Stage` row: its name (and command), what it reads (the stages whose artifacts it needs),
what it writes (`produced`: per variant, the folder that is finished when its manifest exists), whether its
work splits by variant (then `ctx.only` narrows it, and the Ray executor runs it as tasks, grouped by
`cells`), and its entry point, called with a `StageContext`. Entry points are "module:function" strings,
imported when the stage runs, so reading the table imports no stage. A plug-in adds a row with
`register_stage(Stage(...), after="sample")` in its `register()`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emwb.errors import EmwbError

if TYPE_CHECKING:
    from emwb.context import StageContext


@dataclass(frozen=True)
class Produced:
    """One artifact a stage writes, for `emwb status`: finished when `folder` holds its manifest; `progress`
    says what an unfinished one has saved so far."""

    variant: str
    folder: Path
    progress: str = ""
    judge: str = ""


@dataclass(frozen=True)
class Option:
    """A command-line option of a stage's command, passed to it as `ctx.options[dest]`."""

    flag: str
    dest: str
    help: str
    repeat: bool = False


@dataclass(frozen=True)
class Stage:
    """One row of the table (see the module docstring)."""

    name: str
    help: str
    entry: str                              # "module:function(ctx)": does the work, skipping what is current
    produced: str                           # "module:function(ctx) -> list[Produced]"
    reads: tuple[str, ...] = ()             # the stages whose artifacts it reads
    per_variant: bool = False               # its work splits by variant: ctx.only, Ray tasks
    cells: str | None = None                # "module:function(ctx) -> [(label, [variant id])]" run together
    gpus: str = ""                          # the `exec:` field giving the GPUs one of its Ray tasks takes
    options: tuple[Option, ...] = ()
    prints: str | None = None               # a file of the run directory its command prints when done

    def run(self, ctx: StageContext) -> Any:
        return _load(self.entry)(ctx)

    def artifacts(self, ctx: StageContext) -> list[Produced]:
        return list(_load(self.produced)(ctx))

    def groups(self, ctx: StageContext) -> list[tuple[str, list[str]]]:
        """(label, variant ids) of each of its Ray tasks (one variant each unless `cells` says otherwise)."""
        if self.cells:
            return [(label, list(ids)) for label, ids in _load(self.cells)(ctx) if ids]
        return [(v.id, [v.id]) for v in ctx.variants()]


def _load(entry: str) -> Callable:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


BASE = Stage("base", "build the tiny local model when the experiment uses it",
             "emwb.basemodel:run_base_stage", "emwb.basemodel:produced")
DATA = Stage("data", "write each fine-tuning dataset as chat JSONL",
             "emwb.datasets.stage:run_data_stage", "emwb.datasets.stage:produced")
DIRECTIONS = Stage("directions", "each direction of the mechanisms block, read by the base model (steered and "
                   "ablated variants are sampled from them)", "emwb.mechanisms.stage:run_directions_stage",
                   "emwb.mechanisms.stage:produced_directions", reads=("base", "data"))
FINETUNE = Stage("finetune", "every organism's training phases, per seed", "emwb.finetune.stage:run_finetune_stage",
                 "emwb.finetune.stage:produced", reads=("base", "data", "directions"), per_variant=True,
                 cells="emwb.finetune.stage:cells", gpus="gpus_per_cell")
FEATURES = Stage("features", "each sparse dictionary of the features block (trained with SAELens on the base model's "
                 "residual stream, or loaded), every organism diffed against the base through it, feature cards, "
                 "and the latents that ablation variants remove", "emwb.features.stage:run_features_stage",
                 "emwb.features.stage:produced", reads=("base", "data", "finetune"))
SAMPLE = Stage("sample", "every evaluated variant's answers to the evaluations' prompts",
               "emwb.sampling.stage:run_sample_stage", "emwb.sampling.stage:produced",
               reads=("base", "data", "directions", "finetune", "features"), per_variant=True,
               cells="emwb.sampling.stage:cells", gpus="gpus_per_engine")
PROJECTIONS = Stage("projections", "every variant's answers, read by its own model, projected on each direction "
                    "of the mechanisms block", "emwb.mechanisms.stage:run_projections_stage",
                    "emwb.mechanisms.stage:produced_projections", reads=("directions", "sample"))
DETECT = Stage("detect", "rule-based detectors (bandit) on the answers and on the training data (calibration)",
               "emwb.detect.stage:run_detect_stage", "emwb.detect.stage:produced", reads=("data", "sample"),
               per_variant=True)
JUDGE = Stage("judge", "score answers (alignment, coherence, ...) with each judge", "emwb.judge.stage:run_judge_stage",
              "emwb.judge.stage:produced", reads=("sample",), per_variant=True,
              options=(Option("--judge", "judges", "judge string, e.g. openai/gpt-4o-mini (repeatable; default: "
                              "the experiment's judges)", repeat=True),))
REPORT = Stage("report", "comparison tables across organisms (every judge that judged the run's answers)",
               "emwb.analysis.stage:run_report_stage", "emwb.analysis.stage:produced",
               reads=("directions", "features", "projections", "detect", "judge"), prints="report/headline.md")

_TABLE: list[Stage] = [BASE, DATA, DIRECTIONS, FINETUNE, FEATURES, SAMPLE, PROJECTIONS, DETECT, JUDGE, REPORT]
_BY: dict[str, str] = {s.name: "emwb.stages" for s in _TABLE}


def register_stage(stage: Stage, after: str | None = None, before: str | None = None) -> Stage:
    """Add a stage to the table (a plug-in's `register()`), after or before a named one (default: before the
    report). What it reads must come before it."""
    from emwb.registry import _caller

    by = _caller()
    if stage.name in _BY:
        if next(s for s in _TABLE if s.name == stage.name) == stage:
            return stage  # the same row registered again (a plug-in loaded twice)
        raise EmwbError(f"stage {stage.name!r} is registered twice: by {_BY[stage.name]} and by {by}; rename one")
    anchor = after or before or "report"
    names = [s.name for s in _TABLE]
    if anchor not in names:
        raise EmwbError(f"stage {stage.name!r} ({by}): no stage {anchor!r} to place it by (stages: {', '.join(names)})")
    at = names.index(anchor) + (1 if after else 0)
    missing = [r for r in stage.reads if r not in names[:at]]
    if missing:
        raise EmwbError(f"stage {stage.name!r} ({by}) reads {', '.join(missing)}, which would not run before it")
    _TABLE.insert(at, stage)
    _BY[stage.name] = by
    return stage


def table() -> list[Stage]:
    """Every stage, in the order they run (emwb's own and plug-ins')."""
    from emwb.plugins import load_plugins

    load_plugins()
    return list(_TABLE)


def stage(name: str) -> Stage:
    """The stage named `name`."""
    for s in table():
        if s.name == name:
            return s
    raise EmwbError(f"unknown stage {name!r} (stages: {', '.join(s.name for s in _TABLE)})")


def run_stages(ctx: StageContext, stages: list[Stage] | None = None) -> None:
    """Run each stage in table order (a finished one is a no-op)."""
    for s in table() if stages is None else stages:
        s.run(ctx)
