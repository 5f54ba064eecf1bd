"""Evaluations as data: prompts (question sets or a prompt generator) + rubrics + metrics.

Registered evaluations live in `evaluations.yaml`; an experiment names them and may override fields.
Prompt generators (such as held-out coding prompts) are registered in PROMPT_GENERATORS.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from emwb.catalog.questions import Question, load_questions
from emwb.config import EvaluationSpec
from emwb.errors import EmwbError
from emwb.registry import Registry
from emwb.yamlio import load_yaml


class EvaluationDef(BaseModel):
    """A registered evaluation (one entry of evaluations.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    question_sets: list[str] = []
    generator: str | None = None         # a PROMPT_GENERATORS name
    count: int | None = None             # prompts the generator makes
    samples_per_paraphrase: int | None = None
    rubrics: list[str]
    metrics: list[str] | None = None     # None: every metric whose rubrics this evaluation has
    per_question: bool = False           # a per-question table and figure


@dataclass(frozen=True)
class Evaluation:
    """An experiment's evaluation, resolved against the registry."""

    name: str
    question_sets: tuple[str, ...]
    generator: str | None
    count: int | None
    samples_per_paraphrase: int | None
    rubrics: tuple[str, ...]
    metrics: tuple[str, ...] | None
    per_question: bool


# (count, seed, prompts to exclude, samples per prompt) -> questions
PROMPT_GENERATORS: Registry[Callable[[int, int, set[str], int], list[Question]]] = Registry("prompt generator")


@PROMPT_GENERATORS.register("heldout-code")
def heldout_code(count: int, seed: int, exclude: set[str], samples: int) -> list[Question]:
    """Generated coding prompts that no training set contains (the narrow metric's test set)."""
    from emwb.catalog.codegen import generate_pairs

    prompts = [p.prompt for p in generate_pairs(count * 4 + 50, seed=seed + 10007) if p.prompt not in exclude]
    return [Question(f"code_{i:03d}", (p,), samples, source="generated held-out coding prompts")
            for i, p in enumerate(prompts[:count])]


@cache
def registered() -> dict[str, EvaluationDef]:
    path = Path(str(resources.files("emwb.catalog") / "evaluations.yaml"))
    out = {}
    for name, raw in load_yaml(path).items():
        try:
            out[name] = EvaluationDef.model_validate(raw)
        except ValidationError as err:
            from emwb.config import format_validation_error

            raise EmwbError(format_validation_error(err, str(path), EvaluationDef).replace("'", f"'{name}.", 1)) \
                from None
    return out


def resolve(spec: EvaluationSpec) -> Evaluation:
    """The registered evaluation `spec.use or spec.name` with the spec's fields applied."""
    base_name = spec.use or spec.name
    defs = registered()
    if base_name not in defs:
        import difflib

        hint = difflib.get_close_matches(base_name, list(defs), n=1)
        more = f"did you mean '{hint[0]}'?" if hint else f"registered: {', '.join(defs)}"
        raise EmwbError(f"unknown evaluation {base_name!r} ({more})")
    d = defs[base_name]
    pick = lambda ours, theirs: theirs if ours is None else ours  # noqa: E731
    return Evaluation(
        name=spec.name, question_sets=tuple(pick(spec.question_sets, d.question_sets)), generator=d.generator,
        count=pick(spec.count, d.count), samples_per_paraphrase=pick(spec.samples_per_paraphrase,
                                                                     d.samples_per_paraphrase),
        rubrics=tuple(pick(spec.rubrics, d.rubrics)),
        metrics=tuple(spec.metrics) if spec.metrics is not None else (tuple(d.metrics) if d.metrics else None),
        per_question=d.per_question)


def set_label(name: str) -> str:
    """A short name for a question set: `main`, a file's stem, or a registered prompt set's name."""
    return name.split(":", 1)[1] if name.startswith("upstream:") else Path(name).stem


def questions_of(ev: Evaluation, mirror: str | None = None, seed: int = 0,
                 exclude: set[str] = frozenset()) -> list[tuple[str, Question]]:
    """(question set label, question) for every question of an evaluation; ids kept apart across sets."""
    sets = [(set_label(qs), load_questions(qs, mirror)) for qs in ev.question_sets]
    if ev.generator:
        gen = PROMPT_GENERATORS.get(ev.generator)
        sets.append((ev.generator, gen(ev.count or 1, seed, set(exclude), ev.samples_per_paraphrase or 1)))
    counts: dict[str, int] = {}
    for _, qs in sets:
        for q in qs:
            counts[q.id] = counts.get(q.id, 0) + 1
    out = []
    for label, qs in sets:
        for q in qs:
            if counts[q.id] > 1:  # the same id in two sets (e.g. main and first_plot_questions): keep them apart
                q = dataclasses.replace(q, id=f"{label}:{q.id}")
            out.append((label, q))
    return out
