"""The run plan: an experiment resolved once, before any work, and kept in the run directory as `plan.json`.

Evaluations (their question sets' questions, the questions' own judge prompts as rubrics, the evaluation's
rubrics), the run's judges, the evaluated variants (organism, phase, seed and checkpoint step as fields)
and every artifact path. Stages read `ctx.plan` (`emwb.context`); none resolves an evaluation itself. Reopening a run
directory reads the plan written when the run was last opened from its experiment file, so it resolves to
the same judges and questions (`emwb judge runs/NAME` judges with the judges `emwb replicate FILE` did).
Generated prompts (held-out code, reward-model-bias prompts) are made by the sample stage from the plan's
evaluation, since they avoid the run's training prompts, which the data stage writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from emwb.catalog.evaluations import Evaluation, question_rubrics, questions_of, resolve
from emwb.catalog.questions import Question
from emwb.catalog.rubric import load_rubric
from emwb.config import EvaluationSpec, Experiment, config_hash
from emwb.errors import EmwbError
from emwb.layout import Variant, variants
from emwb.store import PLAN_FILE, Run

PLAN_VERSION = 3  # 2: variants carry their residual-stream edit; 3: an evaluation is one object (Evaluation)


@dataclass(frozen=True)
class Plan:
    """What a run does, resolved once (see the module docstring)."""

    experiment: str                          # hash of the experiment it was resolved from (run settings left out)
    evaluations: tuple[Evaluation, ...]
    judges: tuple[str, ...]
    judges_from: str                         # "judge.judges", "the question files" or "default"
    variants: tuple[Variant, ...]
    paths: dict[str, dict] = field(default_factory=dict)  # variant -> its artifact folders, relative to the run
    version: int = PLAN_VERSION

    def detectors(self) -> dict[str, tuple[str, ...]]:
        """{evaluation: its detectors} for evaluations that run any."""
        return {e.name: e.detectors for e in self.evaluations if e.detectors}

    def groups(self) -> list[str]:
        """The table rows, in order."""
        return list(dict.fromkeys(v.group for v in self.variants))

    def to_json(self) -> str:
        return json.dumps(json.loads(_ADAPTER.dump_json(self)), indent=1, ensure_ascii=False) + "\n"

    @staticmethod
    def from_json(text: str) -> Plan:
        return _ADAPTER.validate_json(text)

    @staticmethod
    def build(exp: Experiment, evals: tuple[Evaluation, ...] | None = None) -> Plan:
        """The experiment resolved (`evals`: its evaluations, already resolved by the checks before work)."""
        if evals is None:
            evals = tuple(plan_evaluation(s, exp.dataset_mirror) for s in exp.evaluations)
        judges, source = run_judges(exp, evals)
        vs = variants(exp)
        return Plan(experiment_hash(exp), evals, judges, source, tuple(vs), artifact_paths(exp, judges, vs))


_ADAPTER = TypeAdapter(Plan)


def experiment_hash(exp: Experiment) -> str:
    """What the plan depends on: every field but the run settings, and whether the judges were named."""
    return config_hash({"experiment": exp.model_dump(mode="json", exclude={"exec"}),
                        "judges_named": "judges" in exp.judge.model_fields_set})


class PlanError(EmwbError):
    """An evaluation that does not resolve; `field` is the spec's field at fault (name, use, rubrics, ...)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def plan_evaluation(spec: EvaluationSpec, mirror: str | None) -> Evaluation:
    """An evaluation spec resolved against the registry, with its questions and rubrics loaded; PlanError names
    the spec's field at fault."""
    step = "use" if spec.use else "name"
    try:
        ev = resolve(spec)
        step = "rubrics"
        rubrics = tuple(load_rubric(r) for r in ev.rubrics)
        step = "question_sets"  # judge prompts emwb cannot score stop here, not as 0-100
        questions = tuple(questions_of(ev, mirror, generated=False))
        own = question_rubrics(ev, mirror)
    except PlanError:
        raise
    except EmwbError as exc:
        raise PlanError(step, str(exc)) from None
    return replace(ev, loaded_rubrics=rubrics, questions=questions,
                   own_rubrics=tuple((label, qid, rs) for (label, qid), rs in own.items()))


def run_judges(exp: Experiment, evals: tuple[Evaluation, ...]) -> tuple[tuple[str, ...], str]:
    """The run's judges and where they come from: `judge.judges` when the experiment names them, else the
    judge models its questions name (`openai/<judge>`; upstream: gpt-4o-2024-08-06), else the default."""
    if "judges" in exp.judge.model_fields_set:
        return tuple(exp.judge.judges), "judge.judges"
    named = [f"openai/{q.judge}" for e in evals if e.question_judges
             for _, q in e.questions if q.judge and q.judge_prompts]
    if named:
        return tuple(dict.fromkeys(named)), "the question files"
    return tuple(exp.judge.judges), "default"


def artifact_paths(exp: Experiment, judges: tuple[str, ...], vs: list[Variant]) -> dict[str, dict]:
    """Each variant's artifact folders, relative to the run directory (from `layout`)."""
    from emwb import layout

    run = Run(exp, Path("."))
    return {v.id: {"model": str(p) if (p := layout.variant_model_dir(run, v)) else None,
                   "answers": str(layout.answers_dir(run, v.id)), "detections": str(layout.detections_dir(run, v.id)),
                   "judgments": {j: str(layout.judgments_dir(run, j, v.id)) for j in judges}} for v in vs}


def plan_for(run: Run, checked: Plan | None = None, keep: bool = True) -> Plan:
    """The run's plan: `checked` (resolved by the checks before work from an experiment file), else the one in
    its run directory when that was resolved from this experiment, else resolved now. With `keep` it is written
    to the run directory when that exists (`emwb status` reads only)."""
    refuse_newer(run.path(PLAN_FILE))
    plan = checked or read_plan(run.path(PLAN_FILE), run.exp) or Plan.build(run.exp)
    if keep and run.dir.is_dir():
        run.save_text(PLAN_FILE, plan.to_json())
    return plan


def refuse_newer(path: Path, raw: object = None) -> None:
    """EmwbError when the plan at `path` (or its parsed `raw`) was written by a newer emwb: this one would rewrite
    it in its own, older form under a run whose other files it may not read either."""
    if raw is None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
    version = raw.get("version") if isinstance(raw, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > PLAN_VERSION:
        raise EmwbError(f"{path}: written by a newer emwb (plan version {version}; this one reads up to "
                        f"{PLAN_VERSION}); run it with that emwb, or use another run directory")


def read_plan(path: Path, exp: Experiment) -> Plan | None:
    """The plan stored at `path` when it was resolved from this experiment by this plan version, else None (an
    older version: resolved again); EmwbError for a newer version (`refuse_newer`)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, not UTF-8 or not JSON: resolved again from the experiment
        return None
    if not isinstance(raw, dict):
        return None
    refuse_newer(path, raw)
    if raw.get("version") != PLAN_VERSION or raw.get("experiment") != experiment_hash(exp):
        return None
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise EmwbError(f"{path}: not a run plan ({err.error_count()} errors); delete it and re-run") from None


def describe(plan: Plan) -> list[str]:
    """What an experiment resolves to: per question set, its questions, own judge prompts and judge models;
    then the run's judges and seeds (`emwb config show`)."""
    lines = []
    for ev in plan.evaluations:
        by_set: dict[str, list[Question]] = {}
        for label, q in ev.questions:
            by_set.setdefault(label, []).append(q)
        for qs, (label, qlist) in zip(ev.question_sets, by_set.items()):
            rubrics = {f"{r.name} ({r.kind}{': ' + '/'.join(r.labels) if r.labels else ''})": None
                       for lab, _, rs in ev.own_rubrics if lab == label for r in rs}
            judges = sorted({q.judge for q in qlist if q.judge and q.judge_prompts})
            how = (f"own judge prompts {', '.join(rubrics)}; judge named {', '.join(judges) or 'none'}" if rubrics
                   else f"rubrics {', '.join(ev.rubrics)}")
            whose = "" if not all(q.wording for q in qlist) else " in emwb's own wording (not the paper's)"
            lines.append(f"evaluation {ev.name}: {qs}: {len(qlist)} questions{whose}; {how}")
        if ev.generator:
            detect = f"; detectors {', '.join(ev.detectors)}" if ev.detectors else ""
            lines.append(f"evaluation {ev.name}: {ev.count} generated prompts per unit ({ev.generator}); rubrics "
                         f"{', '.join(ev.rubrics)}{detect}")
        if ev.headline is not None:
            lines.append(f"evaluation {ev.name}: headline row: {len(ev.headline)} questions ({', '.join(ev.headline)})")
    lines.append(f"judges: {', '.join(plan.judges)} (from {plan.judges_from})")
    seeds = sorted({v.seed for v in plan.variants if v.seed is not None})
    lines.append(f"variants: {len(plan.variants)} ({', '.join(plan.groups())}); seeds: {', '.join(map(str, seeds))}")
    return lines


def describe_setup(exp: Experiment) -> list[str]:
    """What the experiment leaves to defaults and recipes (`emwb config show`): the default evaluation, and each
    phase's hyperparameters where they differ from `train:`."""
    lines = []
    if "evaluations" not in exp.model_fields_set:
        lines.append("evaluations: none listed, so the default free-form on question set main: emwb's own wording of "
                     "the paper's 8 main questions (ids emwb_*); the paper's own questions: evaluation first-plot")
    from emwb.recipes import flatten

    train = flatten(exp.train.model_dump())
    for o in exp.organisms:
        for k, phase in enumerate(o.phases):
            args = flatten(exp.phase_args(phase).model_dump())
            diff = [f"{key} {value}" for key, value in args.items() if train.get(key) != value]
            recipe = f", recipe {phase.recipe}" if phase.recipe else ""
            if diff:
                lines.append(f"organism {o.name}, phase {k} ({phase.trainer}{recipe}): {', '.join(diff)}")
    return lines

