"""Checks before work: resolve every reference of an experiment before any stage runs.

Judge strings, rubrics, question sets, evaluations, metrics, data sources, local paths, trainers and
samplers; the sampling context; every layer, dictionary width and k against the base model's shape. The first
problem stops the run with one line naming the file, the key and what to fix; nothing is trained, downloaded or
written first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emwb.config import LOCAL_BASE_MODELS, Experiment
from emwb.errors import EmwbError, first_line

if TYPE_CHECKING:
    from emwb.models.shape import Shape
    from emwb.plan import Plan


def _path_like(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).exists()


def _at(source: str, key: str, exc: BaseException) -> EmwbError:
    return EmwbError(f"{source}: {key}: {first_line(exc)}")


MAX_TOKEN_BYTES = 64  # no tokenizer's token is longer: a prompt of more bytes than this x the room cannot fit


def _vllm_context(exp: Experiment) -> bool:
    """Whether answers are sampled by vLLM here, within sampling.vllm.max_model_len (a remote model: by its API)."""
    from emwb.layout import remote_base

    return exp.sampling.backend == "vllm" and remote_base(exp) is None


def _check_context(exp: Experiment, source: str) -> None:
    """max_new_tokens leaves room for a prompt in the vLLM context."""
    s = exp.sampling
    if _vllm_context(exp) and s.max_new_tokens >= s.vllm.max_model_len:
        raise EmwbError(f"{source}: sampling.max_new_tokens: {s.max_new_tokens} answer tokens leave no room for the "
                        f"prompt in sampling.vllm.max_model_len {s.vllm.max_model_len} (prompt + answer); lower "
                        "max_new_tokens or raise max_model_len")


def _fits(questions, exp: Experiment) -> None:
    """Refuse a question that cannot fit the vLLM context whatever the tokenizer (the sample stage checks the
    exact token count, after the chat template, before any engine starts)."""
    if not _vllm_context(exp):
        return
    room = exp.sampling.vllm.max_model_len - exp.sampling.max_new_tokens
    for q in questions:
        for i, text in enumerate(q.paraphrases):
            size = len(text.encode("utf-8")) + len((q.system or "").encode("utf-8"))
            if size > MAX_TOKEN_BYTES * room:
                raise EmwbError(f"question {q.id} paraphrase {i + 1} is {size} bytes: more than the {room} tokens "
                                f"sampling.vllm.max_model_len leaves after max_new_tokens can hold; shorten it or "
                                "raise max_model_len")


def check_experiment(exp: Experiment, source: str) -> Plan:
    """The experiment's plan (`emwb.plan`), or EmwbError at the first reference that does not resolve."""
    from emwb.plan import Plan

    if exp.base_model not in LOCAL_BASE_MODELS and _path_like(exp.base_model) and not Path(exp.base_model).is_dir():
        raise EmwbError(f"{source}: base_model: local folder {exp.base_model} not found (a Hugging Face id has "
                        "the form org/name)")
    _check_context(exp, source)
    kinds = _check_data(exp, source)
    for i, o in enumerate(exp.organisms):
        for j, p in enumerate(o.phases):
            _check_phase(exp, p, kinds, source, f"organisms.{i}.phases.{j}")
    planned = tuple(_check_evaluation(exp, spec, source, f"evaluations.{i}") for i, spec in enumerate(exp.evaluations))
    from emwb.sampling.samplers import SAMPLERS

    if exp.sampling.backend not in SAMPLERS:
        raise EmwbError(f"{source}: sampling.backend: {SAMPLERS.unknown(exp.sampling.backend)}")
    if exp.sampling.hf_batch > 1 and (exp.sampling.backend != "hf" or exp.sampling.generation_config):
        raise EmwbError(f"{source}: sampling.hf_batch: batched decoding is the hf backend's, with temperature and top_p "
                        "only (set sampling.backend: hf and leave generation_config off, or hf_batch: 1)")
    plan = Plan.build(exp, planned)
    _check_published(exp, plan.groups(), source)
    _check_headline(exp, source)
    _check_judges(exp, plan.judges, source)
    plain = [v.id for v in plan.variants if v.edit is None]
    shape = _check_layers(exp, source)
    _check_mechanisms(exp, plain, source)
    _check_features(exp, plain, source)
    from emwb.models.shape import check_dictionaries

    check_dictionaries(exp, shape, source)
    return plan


def _check_mechanisms(exp: Experiment, plain: list[str], source: str) -> None:
    """Directions, steering and ablations refer to what exists, before any work."""
    m = exp.mechanisms
    dirs = {d.name: d for d in m.directions}
    if len(dirs) < len(m.directions):
        raise EmwbError(f"{source}: mechanisms.directions: two directions share a name")
    from emwb.catalog.direction_sources import DIRECTION_SOURCES

    for i, d in enumerate(m.directions):
        if d.source not in DIRECTION_SOURCES:
            raise EmwbError(f"{source}: mechanisms.directions.{i}.source: {DIRECTION_SOURCES.unknown(d.source)}")
        if d.files:
            from emwb.catalog.published import resolve_files

            try:
                resolve_files(d.files)
            except EmwbError as exc:
                raise EmwbError(f"{source}: mechanisms.directions.{i}.files: {exc}") from None
    dirs.update({f.name: f for f in exp.features})  # a features entry is a direction too: its selected latent's
    for kind, specs in (("steering", m.steering), ("ablations", m.ablations)):
        for i, spec in enumerate(specs):
            where = f"{source}: mechanisms.{kind}.{i}"
            if spec.direction not in dirs:
                raise EmwbError(f"{where}.direction: {spec.direction!r} is not one of mechanisms.directions nor a "
                                f"features entry ({', '.join(dirs) or 'none'})")
            if spec.variant not in plain:
                raise EmwbError(f"{where}.variant: {spec.variant!r} is not a variant of this experiment "
                                f"({', '.join(plain)})")
            d = dirs[spec.direction]
            missing = sorted(set(spec.layers or ()) - set(getattr(d, "layers", None) or [d.layer]))
            if missing:
                raise EmwbError(f"{where}.layers: {missing} are not layers of direction {spec.direction} "
                                f"({getattr(d, 'layers', None) or [d.layer]})")
            if kind == "ablations" and spec.controls > dirs[spec.direction].controls:
                raise EmwbError(f"{where}.controls: {spec.controls} controls, but direction {spec.direction} draws "
                                f"{dirs[spec.direction].controls} (its `controls`)")
    bad = [v for v in m.read_by if v not in plain or v == "base"]
    if bad:
        raise EmwbError(f"{source}: mechanisms.read_by: {bad[0]!r} is not an organism variant of this experiment "
                        f"({', '.join(v for v in plain if v != 'base')})")
    if m.read_by and not m.directions:
        raise EmwbError(f"{source}: mechanisms.read_by: no direction to read (mechanisms.directions is empty)")
    if (m.steering or m.ablations or any(f.ablate for f in exp.features)) and exp.sampling.backend != "hf":
        raise EmwbError(f"{source}: sampling.backend: steered and ablated variants are sampled with transformers "
                        "(vLLM cannot edit the residual stream); set sampling.backend: hf so that every variant is "
                        "sampled alike")


def _check_features(exp: Experiment, plain: list[str], source: str) -> None:
    """Each features entry's streams, selector, ranked and ablated variants and loaded folder resolve, before any
    work."""
    from emwb.catalog.latent_selectors import LATENT_SELECTORS
    from emwb.catalog.token_streams import check_stream

    if exp.features:
        import importlib.util

        from emwb.layout import remote_base

        if importlib.util.find_spec("sae_lens") is None:
            raise EmwbError(f"{source}: features: sparse dictionaries need SAELens: pip install -e '.[features]'")
        if remote_base(exp):
            raise EmwbError(f"{source}: features: a dictionary reads the base model's residual stream; "
                            f"{exp.base_model} is remote (use a local base model)")
    for i, f in enumerate(exp.features):
        where = f"{source}: features.{i}"
        check_stream(f.stream, exp, f"{where}.stream")
        if f.diff.stream is not None:
            check_stream(f.diff.stream, exp, f"{where}.diff.stream")
        if f.select not in LATENT_SELECTORS:
            raise EmwbError(f"{where}.select: {LATENT_SELECTORS.unknown(f.select)}")
        try:
            LATENT_SELECTORS.get(f.select).check(f, exp)
        except EmwbError as exc:
            raise EmwbError(f"{where}.select: {exc}") from None
        organisms = [v for v in plain if v != "base"]
        for key, ids in (("rank_on", [f.rank_on] if f.rank_on else []), ("ablate", f.ablate)):
            bad = [x for x in ids if x not in (organisms if key == "rank_on" else plain)]
            if bad:
                raise EmwbError(f"{where}.{key}: {bad[0]!r} is not {'an organism' if key == 'rank_on' else 'a'} "
                                f"variant of this experiment ({', '.join(organisms if key == 'rank_on' else plain)})")
        if f.load and not (Path(f.load) / "cfg.json").is_file():
            raise EmwbError(f"{where}.load: {f.load} is not a SAELens dictionary folder (no cfg.json)")


def _check_layers(exp: Experiment, source: str) -> Shape | None:
    """Every layer against the base model's shape (returned), known before any work for the locally built models,
    a local folder, and a hub model whose config.json is cached (else the base stage reads it and checks)."""
    from emwb.basemodel import base_shape
    from emwb.models.shape import check_layers

    shape = base_shape(exp.base_model)
    if shape is not None:
        check_layers(exp, shape, source)
    return shape


def _check_data(exp: Experiment, source: str) -> dict[str, str]:
    """Every dataset's source resolves (no generation, no download); {name: row kind}."""
    from emwb.catalog.generators import GENERATORS
    from emwb.catalog.sources import data_kind

    kinds = {}
    for name, spec in exp.data.items():
        try:
            kinds[name] = data_kind(spec, exp.dataset_mirror)
        except EmwbError as exc:
            raise _at(source, f"data.{name}.source", exc) from None
        if spec.writer:
            scheme, _, arg = spec.source.partition(":")
            if scheme != "generated" or arg not in GENERATORS or not GENERATORS.get(arg).writes:
                writable = ", ".join(f"generated:{n}" for n in GENERATORS if GENERATORS.get(n).writes)
                raise EmwbError(f"{source}: data.{name}.writer: only {writable} have an LLM mode")
            if not spec.writer.startswith("openai/") or spec.writer == "openai/":
                raise EmwbError(f"{source}: data.{name}.writer: expected openai/<model>, got {spec.writer!r}")
    return kinds


def _check_phase(exp: Experiment, p, kinds: dict[str, str], source: str, key: str) -> None:
    """A phase's trainer exists, suits the base model and the data, and accepts the phase's options."""
    from emwb.finetune.trainers import TRAINERS
    from emwb.layout import remote_base

    try:
        trainer = TRAINERS.get(p.trainer)
    except EmwbError as exc:
        raise _at(source, f"{key}.trainer", exc) from None
    if trainer.remote != (remote_base(exp) is not None):
        raise EmwbError(f"{source}: {key}.trainer: {p.trainer} " + (
            "needs base_model openai/<model>" if trainer.remote else
            f"cannot train the remote base model {exp.base_model} (use trainer openai)"))
    if p.options and trainer.options is None:
        raise EmwbError(f"{source}: {key}.options: trainer {p.trainer} takes no options")
    if trainer.options is not None:
        from pydantic import ValidationError

        from emwb.config import format_validation_error

        try:
            trainer.options.model_validate(p.options)
        except ValidationError as err:
            inner = format_validation_error(err, source, trainer.options)
            raise EmwbError(inner.replace("'", f"'{key}.options.", 1)) from None
    if p.trl and trainer.trl_config:
        _check_trl(p.trl, trainer.trl_config, source, f"{key}.trl")
    if trainer.data_kind != kinds[p.data]:
        raise EmwbError(f"{source}: {key}.data: trainer {p.trainer} needs {trainer.data_kind} rows, but "
                        f"data {p.data!r} holds {kinds[p.data]} rows")
    if p.mix is not None and kinds[p.mix.data] != kinds[p.data]:
        raise EmwbError(f"{source}: {key}.mix.data: {p.mix.data!r} holds {kinds[p.mix.data]} rows, the phase's data "
                        f"{p.data!r} {kinds[p.data]} rows; mix rows of the same kind")
    for what in ("steer", "screen"):
        if getattr(p, what) is not None and (trainer.remote or (what == "screen" and kinds[p.data] != "chat")):
            raise EmwbError(f"{source}: {key}.{what}: " + (
                f"trainer {p.trainer} trains elsewhere; {what} needs the model here" if trainer.remote else
                f"screening reads chat rows; {p.data!r} holds {kinds[p.data]} rows"))
    if p.system_prompt is not None and kinds[p.data] not in ("chat", "preference"):
        raise EmwbError(f"{source}: {key}.system_prompt: a {p.trainer} phase trains on {kinds[p.data]} rows, which "
                        "have no system message; inoculate a chat (sft) or preference (dpo) phase")


def _check_trl(trl: dict, config_class: str, source: str, key: str) -> None:
    """Every key of a phase's `trl:` is a field of the trl config class its trainer builds (read as strictly as
    the rest of the experiment: a misspelling stops here, not in training)."""
    import dataclasses
    import difflib
    import importlib

    module, _, name = config_class.partition(":")
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), name))}
    for k in trl:
        if k not in fields:
            hint = difflib.get_close_matches(str(k), sorted(fields), n=1)
            raise EmwbError(f"{source}: {key}: unknown key {k!r} for trl's {name}"
                            + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def _check_evaluation(exp: Experiment, spec, source: str, key: str):
    """An evaluation resolved into its part of the plan: metrics, detectors and prompt generator exist, and
    every question fits the sampling context."""
    from emwb.analysis.metrics import METRICS
    from emwb.catalog.evaluations import PROMPT_GENERATORS
    from emwb.catalog.detectors import DETECTORS
    from emwb.plan import PlanError, plan_evaluation

    try:
        ep = plan_evaluation(spec, exp.dataset_mirror)
    except PlanError as exc:
        raise _at(source, f"{key}.{exc.field}", exc) from None
    ev = ep
    for m in ev.metrics or ():
        if m not in METRICS:
            raise EmwbError(f"{source}: {key}.metrics: {METRICS.unknown(m)}")
        missing = set(METRICS.get(m).rubrics) - set(ev.rubrics) - set(ev.detectors)
        if missing:
            raise EmwbError(f"{source}: {key}.metrics: {m} needs the rubric(s) {', '.join(sorted(missing))}")
    for d in ev.detectors:
        if d not in DETECTORS:
            raise EmwbError(f"{source}: {key}.detectors: {DETECTORS.unknown(d)}")
    if ev.generator and ev.generator not in PROMPT_GENERATORS:
        raise EmwbError(f"{source}: {key}: {PROMPT_GENERATORS.unknown(ev.generator)}")
    try:
        _fits([q for _, q in ep.questions], exp)
    except EmwbError as exc:
        raise _at(source, f"{key}.question_sets", exc) from None
    return ep


def _check_headline(exp: Experiment, source: str) -> None:
    from emwb.analysis.metrics import METRICS

    narrow = exp.analysis.headline_narrow
    if narrow is not None and (narrow not in METRICS or METRICS.get(narrow).role != "narrow"):
        known = ", ".join(n for n in METRICS if METRICS.get(n).role == "narrow")
        raise EmwbError(f"{source}: analysis.headline_narrow: {narrow!r} is not a registered narrow metric ({known})")


def _check_published(exp: Experiment, rows: list[str], source: str) -> None:
    from emwb.analysis.metrics import METRICS

    if not exp.published:
        return
    if exp.published.metric not in METRICS:
        raise EmwbError(f"{source}: published.metric: {METRICS.unknown(exp.published.metric)}")
    for g in exp.published.values:
        if g not in rows:
            raise EmwbError(f"{source}: published.values: {g!r} is not a table row (rows: {', '.join(rows)})")


def _check_judges(exp: Experiment, judges: tuple[str, ...], source: str) -> None:
    """Every judge string names a provider, and local judges exist."""
    from emwb.judge.providers import parse_spec

    for i, judge in enumerate(judges):
        try:
            kind, name = parse_spec(judge)
        except EmwbError as exc:
            raise _at(source, f"judge.judges.{i}", exc) from None
        if kind == "probe" and not Path(name).is_dir():  # a probe is always a local folder, never a hub id
            raise EmwbError(f"{source}: judge.judges.{i}: probe judge {name} not found (make it: emwb judges "
                            f"train-probe --out {name}, minutes on a CPU)")
        if kind != "openai" and name not in ("tiny", "base") and _path_like(name) and not Path(name).is_dir():
            raise EmwbError(f"{source}: judge.judges.{i}: local judge model {name} not found")
        if name == "tiny" and exp.base_model != "tiny":
            raise EmwbError(f"{source}: judge.judges.{i}: {judge} means the run's tiny model, but base_model is "
                            f"{exp.base_model!r}")
    for judge in exp.judge.base_urls:
        if judge not in judges:
            raise EmwbError(f"{source}: judge.base_urls: {judge!r} is not one of judge.judges")
    for judge, mode in exp.judge.modes.items():
        if judge not in judges:
            raise EmwbError(f"{source}: judge.modes: {judge!r} is not one of judge.judges")
        if mode.scoring == "written" and parse_spec(judge)[0] != "openai":
            raise EmwbError(f"{source}: judge.modes.{judge}.scoring: written scoring is for openai/ judges (local "
                            "judges give their exact next-token distribution)")
