"""Evaluations as data: prompts (question sets or a prompt generator) + rubrics + metrics.

Registered evaluations (EVALUATIONS) are the entries of `evaluations.yaml` and any a plug-in registers; an
experiment names them and may override fields. Prompt generators (such as held-out coding prompts) are
registered in PROMPT_GENERATORS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from emwb.catalog.questions import Question, load_questions
from emwb.catalog.rubric import Rubric
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
    question_judges: bool = True         # a question's own judge_prompts are its rubrics (upstream sets)
    headline: list[str] | None = None    # question ids of the comparison row (None: every question)
    detectors: list[str] = []            # rule-based detectors (emwb.detect) run on the answers


@dataclass(frozen=True)
class Evaluation:
    """An experiment's evaluation, resolved once (`emwb.plan`): the registered evaluation with the experiment's
    fields applied, its rubrics loaded, and its question sets' questions. The one shape stages read."""

    name: str
    question_sets: tuple[str, ...]
    generator: str | None
    count: int | None
    samples_per_paraphrase: int | None
    rubrics: tuple[str, ...]
    metrics: tuple[str, ...] | None
    per_question: bool
    question_judges: bool = True
    headline: tuple[str, ...] | None = None
    detectors: tuple[str, ...] = ()
    loaded_rubrics: tuple[Rubric, ...] = ()                 # `rubrics`, loaded (filled by the plan)
    questions: tuple[tuple[str, Question], ...] = ()        # (question set label, question); no generated ones
    own_rubrics: tuple[tuple[str, str, tuple[Rubric, ...]], ...] = ()  # (set label, question id, its rubrics)


# (count, seed, prompts to exclude, samples per prompt, dataset mirror) -> questions
PROMPT_GENERATORS: Registry[Callable[[int, int, set[str], int, str | None], list[Question]]] = \
    Registry("prompt generator")


EVALUATIONS: Registry[EvaluationDef] = Registry("evaluation")


def register_evaluations(path: Path) -> None:
    """Register every entry of an evaluations YAML file (emwb's own, or an organism's or plug-in's), each
    validated strictly."""
    for name, raw in load_yaml(path).items():
        try:
            EVALUATIONS.register(name, EvaluationDef.model_validate(raw))
        except ValidationError as err:
            from emwb.config import format_validation_error

            raise EmwbError(format_validation_error(err, str(path), EvaluationDef).replace("'", f"'{name}.", 1)) \
                from None


register_evaluations(Path(str(resources.files("emwb.catalog") / "evaluations.yaml")))  # emwb's own


def resolve(spec: EvaluationSpec) -> Evaluation:
    """The registered evaluation `spec.use or spec.name` with the spec's fields applied, nothing loaded yet
    (`emwb.plan` is the one caller: it loads the rubrics and questions; stages read the plan)."""
    d = EVALUATIONS.get(spec.use or spec.name)
    pick = lambda ours, theirs: theirs if ours is None else ours  # noqa: E731
    return Evaluation(
        name=spec.name, question_sets=tuple(pick(spec.question_sets, d.question_sets)), generator=d.generator,
        count=pick(spec.count, d.count), samples_per_paraphrase=pick(spec.samples_per_paraphrase,
                                                                     d.samples_per_paraphrase),
        rubrics=tuple(pick(spec.rubrics, d.rubrics)),
        metrics=tuple(spec.metrics) if spec.metrics is not None else (tuple(d.metrics) if d.metrics else None),
        per_question=d.per_question, question_judges=pick(spec.question_judges, d.question_judges),
        headline=tuple(h) if (h := pick(spec.headline, d.headline)) is not None else None,
        detectors=tuple(pick(spec.detectors, d.detectors)))


def set_label(name: str) -> str:
    """A short name for a question set: `main`, a file's stem, or a registered prompt set's name."""
    return name.split(":", 1)[1] if name.startswith("upstream:") else Path(name).stem


def questions_of(ev: Evaluation, mirror: str | None = None, seed: int = 0,
                 exclude: set[str] = frozenset(), generated: bool = True) -> list[tuple[str, Question]]:
    """(question set label, question) for every question of an evaluation; ids kept apart across sets.

    `generated=False` leaves out generated prompts (they carry no judge prompts of their own).
    """
    sets = [(set_label(qs), _not_posing_as_the_paper(qs, load_questions(qs, mirror))) for qs in ev.question_sets]
    if ev.generator and generated:
        sets.append((ev.generator, generated_questions(ev, mirror, seed, exclude)))
    return distinct_ids(sets)


def generated_questions(ev: Evaluation, mirror: str | None, seed: int, exclude: set[str]) -> list[Question]:
    """The prompts an evaluation's generator makes (none without one), avoiding the prompts in `exclude`."""
    if not ev.generator:
        return []
    gen = PROMPT_GENERATORS.get(ev.generator)
    return gen(ev.count or 1, seed, set(exclude), ev.samples_per_paraphrase or 1, mirror)


def distinct_ids(sets: list[tuple[str, list[Question]]]) -> list[tuple[str, Question]]:
    """(label, question) of every set; an id in two sets (two questions pooled under one id in the tables) raises
    EmwbError."""
    first: dict[str, str] = {}
    for label, qs in sets:
        for q in qs:
            if q.id in first:
                raise EmwbError(f"question id {q.id!r} is in both {first[q.id]} and {label}: one id would pool two "
                                "questions in the tables; rename one, or put the sets in separate evaluations")
            first[q.id] = label
    return [(label, q) for label, qs in sets for q in qs]


def paper_question_ids() -> frozenset[str]:
    """Ids of the paper's questions (the first-plot evaluation's headline, with the _json and _template
    variants): only a set fetched from its registered upstream file may use them."""
    base = EVALUATIONS.get("first-plot").headline or ()
    return frozenset(f"{q}{suffix}" for q in base for suffix in ("", "_json", "_template"))


def _not_posing_as_the_paper(name: str, questions: list[Question]) -> list[Question]:
    if not name.startswith("upstream:"):
        reserved = paper_question_ids()
        taken = [q for q in questions if q.id in reserved]
        if taken:
            raise EmwbError(f"{taken[0].source}: id {taken[0].id}: a paper question's id (Betley et al. "
                            "first_plot_questions) on a question not read from the paper's file; give it an id of "
                            "its own, or use upstream:first_plot_questions")
    return questions


def question_rubrics(ev: Evaluation, mirror: str | None = None) -> dict[tuple[str, str], tuple[Rubric, ...]]:
    """(question set label, question id) -> the rubrics of that question's own `judge_prompts`.

    Only for questions that carry judge prompts, and only when the evaluation uses them (`question_judges`).
    An unsupported prompt raises EmwbError naming the file and the question.
    """
    from emwb.catalog.rubric import from_judge_prompt

    out: dict[tuple[str, str], tuple[Rubric, ...]] = {}
    if not ev.question_judges:
        return out
    for label, q in questions_of(ev, mirror, generated=False):
        try:
            out[(label, q.id)] = tuple(from_judge_prompt(k, t, q.type) for k, t in q.judge_prompts.items())
        except EmwbError as exc:
            raise EmwbError(f"{q.source}: id {q.id}: {exc}") from None
    return {k: v for k, v in out.items() if v}
