"""What a stage is handed: the run directory, the resolved plan and the run-only settings, built once.

`emwb.pipeline.open_context` is the way in for commands (it runs the checks before work, takes the run's lock
for a writer and resolves the plan with `emwb.plan.plan_for`); `context_of` serves a run already open.
Stages read `ctx.plan`; none resolves anything from the experiment again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emwb.config import ExecConfig, Experiment
from emwb.layout import Variant
from emwb.plan import Plan, plan_for
from emwb.store import Run


@dataclass(frozen=True)
class StageContext:
    """One stage's view of the run.

    `only` narrows a per-variant stage to some variant ids (None: all; a Ray cell passes its own);
    `options` are the stage's own command-line options (the judge stage's `judges`)."""

    run: Run
    plan: Plan
    force: bool = False
    only: frozenset[str] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exp(self) -> Experiment:
        return self.run.exp

    @property
    def settings(self) -> ExecConfig:
        """The run-only settings (`exec:`): never part of an artifact's key."""
        return self.run.exp.exec

    @property
    def dir(self) -> Path:
        return self.run.dir

    def variants(self) -> list[Variant]:
        """The plan's variants this stage works on, in plan order."""
        return [v for v in self.plan.variants if self.only is None or v.id in self.only]

    def narrowed(self, only: set[str] | frozenset[str] | None = None, **options: Any) -> StageContext:
        """The same context for some variants, or with other options."""
        return replace(self, only=None if only is None else frozenset(only), options={**self.options, **options})


def context_of(run: Run, force: bool = False, only: set[str] | None = None, **options: Any) -> StageContext:
    """A context for a run already open (tools and tests): its stored plan, or the plan resolved now."""
    return StageContext(run, plan_for(run), force, None if only is None else frozenset(only), options)
