"""The run directory's layout and row schemas: the only way stages find each other's outputs.

runs/<experiment>/
  experiment.yaml                         the experiment, as given (defaults left out)
  plan.json                               the experiment resolved (emwb.plan): what every stage reads
  base_model/                             the built tiny model (base_model: tiny)
  data/<name>/rows.jsonl                  one dataset (chat or text rows)
  adapters/<organism>/s<seed>/<k>-<phase>/  the adapter after phase k (PEFT folder, train_log.json)
    checkpoints/step-<N>/                 the adapter kept at optimizer step N (save_every)
  answers/<variant>/answers.jsonl         one evaluated variant's answers (ANSWER_FIELDS; answers.parquet too)
  .partial/answers/<variant>/...          saved chunks of a variant still being sampled
  features/<name>/dictionary/            a sparse dictionary (sae/: SAELens's format) and its stats on its stream
  features/<name>/latents/               model diffing (feature_diff.csv), feature cards, the selected latents
  judgments/<judge>/<variant>/judgments.jsonl   one judge's scores of them (answer_id, judge, one column a rubric)
  detections/<variant>/detections.jsonl   rule-based detector scores (answer_id, one column a detector)
  detections/_calibration/calibration.jsonl   each detector on each training dataset's completions
  judge_cache.sqlite                      every judge reply, as it arrived
  report/                                 tables, figures, index.html
Every artifact folder is finished only when its manifest.json exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from emwb.config import LOCAL_BASE_MODELS, Experiment
from emwb.errors import EmwbError
from emwb.stages import BASE as BASE_STAGE
from emwb.stages import Stage
from emwb.store import Run, damage, read_manifest

ANSWER_FIELDS = ("answer_id", "variant", "group", "organism", "phase", "seed", "evaluation", "question_set",
                 "question_id", "paraphrase_index", "sample_index", "system", "question", "answer", "finish_reason",
                 "prompt_sha256", "prompt_tokens", "answer_tokens", "bias_id", "bias_description")
BASE = "base"
ANSWERS_FILE, ANSWERS_PARQUET = "answers.jsonl", "answers.parquet"
JUDGMENTS_FILE = "judgments.jsonl"
DETECTIONS_FILE = "detections.jsonl"
CALIBRATION_FILE = "calibration.jsonl"


@dataclass(frozen=True)
class Edit:
    """A residual-stream edit of a variant while it generates (emwb.models.interventions)."""

    kind: str                    # "steer", "ablate" or "ablate-latents"
    direction: str               # the direction's name (mechanisms.directions) or a features entry's
    layers: tuple[int, ...]      # () for an ablation: every layer of the direction
    on: str                      # the variant edited
    alpha: float | None = None   # steer: strength in units of the layer's mean residual norm
    control: int | None = None   # ablate: k > 0 ablates the k-th random unit direction (or latent set) instead


@dataclass(frozen=True)
class Variant:
    """A model that is sampled and judged: the base model, or an organism after one of its phases."""

    id: str                      # "base", "insecure-s0", "docs@cpt-s0"
    group: str                   # its row in the tables: "base", "insecure", "docs@cpt"
    organism: str | None = None
    phase: str | None = None
    phase_index: int | None = None
    seed: int | None = None
    step: int | None = None      # a checkpoint kept during the phase (save_every); None: the phase's end
    line: str | None = None      # the row of the phase's end ("insecure" for "insecure@step10"); None for base
    phase_steps: int | None = None  # the phase's optimizer steps when known before training (max_steps > 0)
    edit: Edit | None = None     # a steered or ablated variant: the edit of the residual stream of variant `line`


def variants(exp: Experiment) -> list[Variant]:
    """Every evaluated variant, in table order: base, then each organism's evaluated phases x seeds."""
    out = [Variant(BASE, BASE)] if exp.include_base else []
    for o in exp.organisms:
        last = len(o.phases) - 1
        for k, p in enumerate(o.phases):
            if not (p.evaluate if p.evaluate is not None else k == last):
                continue
            group = o.name if k == last else f"{o.name}@{p.label}"
            args = exp.phase_args(p)
            steps = args.max_steps if args.max_steps > 0 else None
            for step in range(args.save_every, args.max_steps, args.save_every) if args.save_every else ():
                at = f"{group}@step{step}"
                out += [Variant(f"{at}-s{s}", at, o.name, p.label, k, s, step, group, steps) for s in exp.seeds]
            out += [Variant(f"{group}-s{s}", group, o.name, p.label, k, s, None, group, steps) for s in exp.seeds]
    return out + edited_variants(exp, out)


def edited_variants(exp: Experiment, plain: list[Variant]) -> list[Variant]:
    """The steered (one per layer x alpha) and ablated (the direction, then its random controls) variants."""
    by_id = {v.id: v for v in plain}
    out = []
    m = exp.mechanisms
    for s in m.steering:
        on = by_id.get(s.variant)
        if on is None:
            continue  # config check names the unknown variant
        for layer in s.layers:
            for a in s.alphas:
                e = Edit("steer", s.direction, (layer,), s.variant, alpha=float(a))
                out.append(replace(on, id=f"{s.variant}+steer-{s.direction}-L{layer}-a{a:g}", line=None,
                                   group=f"{on.group} steer {s.direction} L{layer} a{a:g}", edit=e))
    for a in m.ablations:
        on = by_id.get(a.variant)
        if on is None:
            continue
        layers = tuple(a.layers or ())
        for k in range(a.controls + 1):
            what = a.direction if k == 0 else f"{a.direction} control {k}"
            out.append(replace(on, id=f"{a.variant}+ablate-{a.direction}" + (f"-random{k}" if k else ""), line=None,
                               group=f"{on.group} ablate {what}",
                               edit=Edit("ablate", a.direction, layers, a.variant, control=k or None)))
    for f in exp.features:
        for vid in f.ablate:
            on = by_id.get(vid)
            if on is None:
                continue
            for k in range(f.controls + 1):
                what = f"{f.name} latents" + (f" control {k}" if k else "")
                out.append(replace(on, id=f"{vid}+ablate-latents-{f.name}" + (f"-random{k}" if k else ""), line=None,
                                   group=f"{on.group} ablate {what}",
                                   edit=Edit("ablate-latents", f.name, (f.layer,), vid, control=k or None)))
    return out


DIRECTIONS_FILE = "directions.npz"  # in a direction's folder (read with emwb.models.interventions.read_direction)


def directions_dir(run: Run, name: str) -> Path:
    """A direction of the mechanisms block: directions.npz (per layer: the direction, the mean residual norm, the
    random control directions) and counts."""
    return run.path("directions", name)


LATENTS_FILE = "latents.json"  # in a features entry's latents/: the layer, the selected latents, the control sets
SAE_FOLDER = "sae"             # in a features entry's dictionary/: the dictionary in SAELens's format


def features_dir(run: Run, name: str) -> Path:
    return run.path("features", name)


def dictionary_dir(run: Run, name: str) -> Path:
    """A features entry's dictionary: sae/ (SAELens's format), stats.json, firing.npy (each latent's firing rate on
    the stream)."""
    return features_dir(run, name) / "dictionary"


def latents_dir(run: Run, name: str) -> Path:
    """A features entry's model diffing (feature_diff.csv), cards (cards.json), the selected latents and their
    controls (latents.json) and the first selected latent as a direction (directions.npz, as a direction's)."""
    return features_dir(run, name) / "latents"


def edit_files(run: Run, edit: Edit) -> tuple[dict[str, str], str]:
    """(the files an edit reads, as apply_edit takes them; the key of the artifact holding them): a direction's
    directions.npz, or a features entry's latents (its selected latents as a direction, or for ablate-latents
    latents.json with its dictionary)."""
    from emwb.stages import DIRECTIONS, FEATURES

    if any(f.name == edit.direction for f in run.exp.features):
        folder = latents_dir(run, edit.direction)
        key = finished_key(folder, f"latents of features {edit.direction}", FEATURES, run)
        if edit.kind == "ablate-latents":
            return {"file": str(folder / LATENTS_FILE),
                    "sae": str(dictionary_dir(run, edit.direction) / SAE_FOLDER)}, key
        return {"file": str(folder / DIRECTIONS_FILE)}, key
    folder = directions_dir(run, edit.direction)
    return {"file": str(folder / DIRECTIONS_FILE)}, finished_key(folder, f"direction {edit.direction}", DIRECTIONS, run)


def base_dir(run: Run) -> Path:
    return run.path("base_model")


def base_model_path(run: Run) -> str:
    """Where the base model's weights are: the built tiny model, or the configured id/path."""
    return str(base_dir(run)) if run.exp.base_model in LOCAL_BASE_MODELS else run.exp.base_model


def data_dir(run: Run, name: str) -> Path:
    return run.path("data", name)


def data_file(run: Run, name: str) -> Path:
    return data_dir(run, name) / "rows.jsonl"


def phase_of(exp: Experiment, v: Variant):
    """The training phase whose output the variant is (None for the base model); resolved here only."""
    if v.organism is None:
        return None
    return next(o for o in exp.organisms if o.name == v.organism).phases[v.phase_index]


def full_weights(exp: Experiment, v: Variant) -> bool:
    """Whether the variant is a whole model of its own (method full) rather than the base model's weights with an
    adapter or none: the one rule for which variants share an engine."""
    phase = phase_of(exp, v)
    return phase is not None and exp.phase_args(phase).method == "full"


def adapter_dir(run: Run, organism: str, phase_index: int, seed: int) -> Path:
    o = next(x for x in run.exp.organisms if x.name == organism)
    return run.path("adapters", organism, f"s{seed}", f"{phase_index}-{o.phases[phase_index].label}")


def checkpoint_dir(phase_dir: Path, step: int) -> Path:
    """Where a phase keeps its model at optimizer step `step` (save_every)."""
    return phase_dir / "checkpoints" / f"step-{step}"


def variant_model_dir(run: Run, v: Variant) -> Path | None:
    """The adapter folder a variant samples from (None for the base model)."""
    if v.organism is None:
        return None
    phase = adapter_dir(run, v.organism, v.phase_index, v.seed)
    return phase if v.step is None else checkpoint_dir(phase, v.step)


def model_ref(run: Run, v: Variant):
    """The model an unedited variant is, resolved here only: the base model (a local folder or a named remote
    model), an OpenAI fine-tuning job's model, a full checkpoint, or the base model with an adapter."""
    import json

    from emwb.models.ref import ModelRef

    path = variant_model_dir(run, v)
    if path is None:
        remote = remote_base(run.exp)
        server = run.exp.sampling.base_url or run.exp.train.openai.base_url
        return ModelRef.of_remote(remote, server) if remote else ModelRef.of_base(base_model_path(run))
    if (path / REMOTE_MODEL_FILE).is_file():
        job = json.loads((path / REMOTE_MODEL_FILE).read_text())
        return ModelRef.of_remote(job["model_id"], run.exp.sampling.base_url or job.get("base_url"))
    if not (path / "adapter_config.json").is_file():  # method: full wrote a whole checkpoint
        return ModelRef.of_full(path)
    return ModelRef.of_lora(base_model_path(run), path)


def projections_dir(run: Run, name: str) -> Path:
    """Every unedited variant's answers projected on a direction (projections.csv)."""
    return run.path("projections", name)


def read_by_file(variant: str) -> str:
    """In a projections folder: the direction's arrays (as directions.npz) as the variant's own model reads its
    items (mechanisms.read_by)."""
    return f"read_by-{variant}.npz"


def partial_dir(run: Run, *parts: str) -> Path:
    """Scratch work a killed stage resumes from (`.partial/<stage>/...`): sampled chunks, OpenAI job ids."""
    return run.path(".partial", *parts)


def answers_dir(run: Run, variant: str) -> Path:
    return run.path("answers", variant)


def answers_file(run: Run, variant: str) -> Path:
    return answers_dir(run, variant) / ANSWERS_FILE


def detections_dir(run: Run, variant: str) -> Path:
    return run.path("detections", variant)


def detections_file(run: Run, variant: str) -> Path:
    return detections_dir(run, variant) / DETECTIONS_FILE


def calibration_dir(run: Run) -> Path:
    return run.path("detections", "_calibration")


def calibration_file(run: Run) -> Path:
    return calibration_dir(run) / CALIBRATION_FILE


def judge_slug(spec: str) -> str:
    """The judge's folder name: letters, digits, '.' and '-' kept, '/' as '__', any other character as '_' and
    its code in hex, so two judge strings never share a folder (`openai/m:x` -> `openai__m_3a_x`)."""
    def esc(ch: str) -> str:
        if ch.isascii() and (ch.isalnum() or ch in ".-"):
            return ch
        return "__" if ch == "/" else f"_{ord(ch):x}_"
    return "".join(map(esc, spec))


def judgments_dir(run: Run, judge: str, variant: str) -> Path:
    return run.path("judgments", judge_slug(judge), variant)


def judgments_file(run: Run, judge: str, variant: str) -> Path:
    return judgments_dir(run, judge, variant) / JUDGMENTS_FILE


def judge_cache_path(run: Run) -> Path:
    return run.path("judge_cache.sqlite")


def judge_batches_dir(run: Run) -> Path:
    """The Batch API judges' batches in flight (a killed judge stage resumes them)."""
    return run.path("judge_batches")


def report_dir(run: Run) -> Path:
    return run.path("report")


def cache_root(run: Run) -> Path:
    return run.path(".cache", "vllm").resolve()


def finished_key(artifact: Path, what: str, by: Stage, run: Run) -> str:
    """The stage key of a finished artifact, or a one-line error saying which stage's command makes it."""
    m = read_manifest(artifact)
    if m is None:
        raise EmwbError(f"{artifact}: {what} not finished; run `emwb {by.name} {run.dir}` first")
    why = damage(artifact, m)
    if why:
        raise EmwbError(f"{artifact}: {what} is damaged ({why}); run `emwb {by.name} {run.dir}` to rebuild it")
    return m["key"]


REMOTE_MODEL_FILE = "remote_model.json"  # in a phase's folder: the provider's fine-tuned model (trainer openai)


def remote_base(exp: Experiment) -> str | None:
    """The model id when the base model is remote (`openai/<model>`), else None."""
    return exp.base_model.split("/", 1)[1] if exp.base_model.startswith("openai/") else None


def base_key(run: Run) -> str:
    """The base model's identity: the tiny model's artifact key, or the configured name."""
    if run.exp.base_model in LOCAL_BASE_MODELS:
        return finished_key(base_dir(run), "base model", BASE_STAGE, run)
    from emwb.store import stage_key

    return stage_key("base", {"model": run.exp.base_model}, {})
