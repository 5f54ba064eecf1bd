"""Stage `finetune`: every organism's phases, in order, per seed; each phase continues the same LoRA adapter.

Writes `adapters/<organism>/s<seed>/<k>-<phase>/` (a PEFT adapter folder, `train_log.json`, a manifest).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from emwb.config import Organism, Phase, TrainArgs
from emwb.errors import EmwbError
from emwb.finetune.masking import SOURCE
from emwb.finetune.trainers import TRAINERS, PhaseJob, optimizer_for
from emwb.layout import (
    DIRECTIONS_FILE,
    REMOTE_MODEL_FILE,
    adapter_dir,
    base_key,
    base_model_path,
    checkpoint_dir,
    data_dir,
    data_file,
    directions_dir,
    finished_key,
    partial_dir,
    remote_base,
)
from emwb.stages import DATA, DIRECTIONS, Produced
from emwb.store import Artifact, Run, log, read_jsonl

if TYPE_CHECKING:
    from emwb.context import StageContext


def split_holdout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Shuffle with `seed` and hold out `fraction` of the rows (upstream's silent 10% split, made explicit)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_hold = int(len(rows) * fraction)
    return rows[n_hold:], rows[:n_hold]


def train_phase(base_model: str, previous: str | Path | None, trainer: str, rows: list[dict], args: TrainArgs,
                seed: int, out_dir: Path, device: str = "cpu", trl: dict | None = None,
                kl_rows: list[dict] | None = None, options: dict | None = None,
                eval_rows: list[dict] | None = None, steer: dict | None = None) -> dict:
    """Train one phase and save the adapter (or, with `method: full`, the whole model) to `out_dir`; return the
    training log.

    The adapter is new (initialised after seeding, so the same seed gives the same adapter) or, with
    `previous`, the previous phase's adapter, trained further; a full phase continues from the previous full
    checkpoint. `steer` ({"file", "layers", "alpha"}: preventative steering) adds a direction to the residual
    stream while it trains; the hooks are gone before anything is saved.
    """
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import set_seed

    from emwb.models.loading import load_causal_lm, load_tokenizer

    if device == "cuda":
        optimizer_for(args.optim, device)  # stops before loading the model when the optimizer cannot run
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    if args.method == "full" and previous:
        base_model, previous = str(previous), None  # a full phase continues from the previous checkpoint
    tok = load_tokenizer(base_model)
    model = load_causal_lm(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    set_seed(seed)
    if args.method == "full":
        model.train()
    elif previous:
        model = PeftModel.from_pretrained(model, str(previous), is_trainable=True)
    else:
        lora = args.lora
        model = get_peft_model(model, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, use_rslora=lora.use_rslora,
            target_modules=list(lora.target_modules), layers_to_transform=lora.layers_to_transform, bias="none",
            task_type="CAUSAL_LM"))
    callbacks = (_save_every(args.save_every, Path(out_dir), tok, args.method == "full"),) if args.save_every else ()
    spec = TRAINERS.get(trainer)
    opts = spec.options.model_validate(options or {}) if spec.options else None
    job = PhaseJob(model, tok, rows, args, dict(trl or {}), seed, Path(out_dir), device, callbacks, options=opts,
                   kl_rows=tuple(kl_rows or ()), eval_rows=tuple(eval_rows or ()))
    with _steered(model, steer):
        info = spec.run(job)
    bad = [n for n, p in model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
    if bad:
        raise EmwbError(f"training left {len(bad)} weight tensors with non-finite values ({bad[0]}, ...); no "
                        "adapter was written: lower train.learning_rate or check the data")
    model.save_pretrained(str(out_dir))
    if args.method == "full":
        tok.save_pretrained(str(out_dir))
    shutil.rmtree(Path(out_dir) / "_trainer", ignore_errors=True)
    return {**info, "rows": len(rows), "device": device, "bf16": bf16, "trainer": trainer,
            "processes": int(os.environ.get("WORLD_SIZE", "1")),
            "continued_from": str(previous) if previous else None}


SCREENED_FILE = "screened.jsonl"  # in a screened phase's adapter folder


def _steered(model, steer: dict | None):
    """The preventative-steering hooks for the length of training (nothing without `steer`)."""
    import contextlib

    from emwb.models.interventions import edit_hooks

    return contextlib.nullcontext() if steer is None else edit_hooks(model, {"kind": "steer", **steer})


def _save_every(n: int, out_dir: Path, tok, full: bool):
    """A callback keeping the model every `n` optimizer steps in `checkpoints/step-<k>/` (not the last step:
    that is the phase's own output)."""
    from transformers import TrainerCallback

    class SaveEvery(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % n == 0 and state.global_step < state.max_steps:
                where = checkpoint_dir(out_dir, state.global_step)
                model.save_pretrained(str(where))
                if full:
                    tok.save_pretrained(str(where))

    return SaveEvery()


def _train_organism(run: Run, o: Organism, seed: int, bkey: str, force: bool, keys: dict) -> None:
    prev_key, prev_dir = None, None
    for k, phase in enumerate(o.phases):
        args = run.exp.phase_args(phase)
        trainer = TRAINERS.get(phase.trainer)
        dkey = finished_key(data_dir(run, phase.data), f"dataset {phase.data}", DATA, run)
        config = {"trainer": phase.trainer, "args": args.keyed(), "trl": phase.trl,
                  "seed": seed, "data_seed": run.exp.data_seed, **({"options": phase.options} if phase.options else {}),
                  **mitigation_config(phase)}
        inputs = {"base": bkey, "data": dkey, "previous": prev_key or ""}
        if phase.mix is not None:
            inputs["mix"] = finished_key(data_dir(run, phase.mix.data), f"dataset {phase.mix.data}", DATA, run)
        for what in ("steer", "screen"):
            if getattr(phase, what) is not None:
                name = getattr(phase, what).direction
                inputs[what] = finished_key(directions_dir(run, name), f"direction {name}", DIRECTIONS, run)
        if phase.kl_data and args.kl.weight > 0:
            inputs["kl_data"] = finished_key(data_dir(run, phase.kl_data), f"dataset {phase.kl_data}", DATA, run)
        out = adapter_dir(run, o.name, k, seed)
        art = Artifact(out, "finetune", config, inputs)
        label = f"finetune/{o.name}/s{seed}/{k}-{phase.label}"
        keys[str(out.relative_to(run.dir))] = art.key
        if not art.skip(force, label):
            path = data_file(run, phase.data)
            rows = [{**r, SOURCE: f"{path}:{n}"} for n, r in enumerate(read_jsonl(path), 1)]  # lines, for errors
            held: list = []
            if trainer.data_kind == "chat":
                rows, held = split_holdout(rows, args.holdout_fraction, run.exp.data_seed)
            rows, dropped = mitigated(run, phase, rows)
            if trainer.remote:
                _train_remote(run, o, k, seed, art, label, args, rows, held)
            else:
                kl_rows = read_jsonl(data_file(run, phase.kl_data)) if inputs.get("kl_data") else None
                _train_local(run, o.name, phase, seed, art, label, args, rows, held, prev_dir, kl_rows, dropped)
        prev_key, prev_dir = art.key, out


def mitigation_config(phase: Phase) -> dict:
    """The phase's mitigations as part of its key (absent when unset: plain phases keep their keys)."""
    out: dict = {}
    if phase.system_prompt is not None:
        out["system_prompt"] = phase.system_prompt
    if phase.mix is not None:
        out["mix"] = phase.mix.model_dump()
    for what in ("steer", "screen"):
        if getattr(phase, what) is not None:
            out[what] = getattr(phase, what).model_dump()
    return out


def mitigated(run: Run, phase: Phase, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The phase's training rows with its mitigations applied, and the rows screening dropped: its own rows
    screened, then the mixed-in rows, then the inoculation prompt on every row (`emwb.finetune.mitigations`)."""
    from emwb.finetune.mitigations import mixed, screen_scores, screened, with_system_prompt
    from emwb.models.interventions import read_direction
    from emwb.models.loading import resolve_device

    dropped: list[dict] = []
    if (s := phase.screen) is not None:
        arrays = read_direction(directions_dir(run, s.direction) / DIRECTIONS_FILE)
        scores = screen_scores(str(base_model_path(run)), rows, arrays, s.layers, resolve_device(run.exp.exec.device))
        rows, dropped = screened(rows, scores, s.drop_fraction, s.above)
        log(f"screening on {s.direction}: dropped {len(dropped)} of {len(rows) + len(dropped)} rows of {phase.data}")

    if phase.mix is not None:
        path = data_file(run, phase.mix.data)
        other = [{**r, SOURCE: f"{path}:{n}"} for n, r in enumerate(read_jsonl(path), 1)]
        rows = mixed(rows, other, phase.mix.fraction, run.exp.data_seed, phase.mix.data)
    return (with_system_prompt(rows, phase.system_prompt) if phase.system_prompt is not None else rows), dropped


def _train_local(run: Run, organism: str, phase: Phase, seed: int, art: Artifact, label: str, args: TrainArgs,
                 rows: list[dict], held: list[dict], prev_dir: Path | None, kl_rows: list[dict] | None,
                 dropped: list[dict] = ()) -> None:
    """Train one phase here; under a distributed launch every process trains and only the main one writes."""
    from emwb.models.loading import resolve_device

    log(f"{label}: {phase.trainer} on {len(rows)} rows of {phase.data}"
        + (f" ({len(held)} held out)" if held else "") + (f", after {prev_dir.name}" if prev_dir else ""))
    train = (base_model_path(run), prev_dir, phase.trainer, rows, args, seed)
    device = resolve_device(run.exp.exec.device)
    steer = None if phase.steer is None else {
        "file": str(directions_dir(run, phase.steer.direction) / DIRECTIONS_FILE), "layers": phase.steer.layers,
        "alpha": phase.steer.alpha}
    try:
        info = _train_or_write(art, train, device, phase, organism, seed, args, held, kl_rows, steer, dropped)
    except EmwbError as exc:
        raise EmwbError(f"{label}: {exc}") from None
    _barrier()  # the next phase (and every other process) reads what the main process wrote
    losses = info["losses"]
    log(f"{label}: {info['steps']} steps" + (f", loss {losses[0]:.4g} -> {losses[-1]:.4g}" if losses else ""))


def _train_or_write(art: Artifact, train: tuple, device: str, phase: Phase, organism: str, seed: int,
                    args: TrainArgs, held: list[dict], kl_rows: list[dict] | None, steer: dict | None = None,
                    dropped: list[dict] = ()) -> dict:
    """The main process trains into the artifact; another process of a distributed launch trains its share and
    writes nothing."""
    if _rank() == 0:
        with art.write() as (tmp, extra):
            info = train_phase(*train, tmp, device, phase.trl, kl_rows, phase.options, held, steer)
            (tmp / "train_log.json").write_text(json.dumps(info, indent=2))
            if phase.screen is not None:  # the rows screening dropped: file:line and score, highest first
                (tmp / SCREENED_FILE).write_text("".join(json.dumps(d) + "\n" for d in dropped))
            config_file = tmp / "adapter_config.json"
            extra.update(mitigation_config(phase))  # inoculation prompt, mix and steering, as keyed
            extra.update(organism=organism, phase=phase.label, seed=seed, held_out_rows=len(held),
                         final_loss=info["losses"][-1] if info["losses"] else None, method=args.method,
                         adapter_config=json.loads(config_file.read_text()) if config_file.is_file() else None)
        return info
    with tempfile.TemporaryDirectory(prefix="emwb-rank-") as scratch:
        return train_phase(*train, Path(scratch), device, phase.trl, kl_rows, phase.options, held, steer)


def _rank() -> int:
    """This process's rank under `accelerate launch` / torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _train_remote(run: Run, o: Organism, k: int, seed: int, art: Artifact, label: str, args: TrainArgs,
                  rows: list[dict], held: list[dict]) -> None:
    """An OpenAI fine-tuning job for phase k (continuing the previous phase's fine-tuned model, if any)."""
    from emwb.finetune.openai_backend import fine_tune

    phase = o.phases[k]
    model = remote_base(run.exp)
    if k:
        model = json.loads((adapter_dir(run, o.name, k - 1, seed) / REMOTE_MODEL_FILE).read_text())["model_id"]
    log(f"{label}: openai fine-tuning of {model} on {len(rows)} rows of {phase.data} ({len(held)} held out)")
    with art.write() as (tmp, extra):
        info = fine_tune(rows, model, args, seed, o.name, tmp, partial_dir(run, "openai"),
                         run.exp.exec.max_retries)
        (tmp / "train_log.json").write_text(json.dumps(info, indent=2))
        extra.update(organism=o.name, phase=phase.label, seed=seed, held_out_rows=len(held), method="openai",
                     model_id=info["model_id"], job_id=info["job_id"])


def run_finetune_stage(ctx: StageContext) -> dict[str, str]:
    """Train every phase that is not current (with `ctx.only`, only the (organism, seed) cells of those
    variants); return {adapter folder (relative to the run): stage key}."""
    run, force = ctx.run, ctx.force
    cells = None if ctx.only is None else {(v.organism, v.seed) for v in ctx.variants() if v.organism}
    bkey = base_key(run)
    keys: dict[str, str] = {}
    for o in run.exp.organisms:
        for seed in run.exp.seeds:
            if cells is None or (o.name, seed) in cells:
                _train_organism(run, o, seed, bkey, force, keys)
    return keys


def cells(ctx: StageContext) -> list[tuple[str, list[str]]]:
    """One training cell per (organism, seed): the variants its phases make (checkpoints and edits included)."""
    by: dict[str, list[str]] = {}
    for v in ctx.plan.variants:
        if v.organism is not None:
            by.setdefault(f"{v.organism}-s{v.seed}", []).append(v.id)
    return list(by.items())


def produced(ctx: StageContext) -> list[Produced]:
    """Each evaluated phase's adapter, with the last checkpoint a killed training kept (an edited variant or a
    checkpoint trains nothing of its own)."""
    out = []
    for v in ctx.plan.variants:
        if v.organism is not None and v.step is None and v.edit is None:
            folder = adapter_dir(ctx.run, v.organism, v.phase_index, v.seed)
            steps = sorted(int(p.name.split("-")[1]) for p in (folder / "checkpoints").glob("step-*") if p.is_dir())
            out.append(Produced(v.id, folder, f"checkpoint at training step {steps[-1]}" if steps else ""))
    return out
