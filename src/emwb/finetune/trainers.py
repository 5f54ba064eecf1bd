"""Trainers: one training phase on a peft model, by name (`trainer:` of a phase). trl does the training.

Add one with `TRAINERS.register(name, Trainer(...))`: its `run` gets the model (with the LoRA adapter of this
organism, new or continued), the tokenizer, the rows and the phase's settings, and returns a training log. A
trainer with settings of its own names a pydantic class as `options`: a phase's `options:` are validated by it
before any work and reach `run` as `job.options`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from emwb.config import TrainArgs
from emwb.registry import Registry


@dataclass(frozen=True)
class PhaseJob:
    model: Any                 # a peft model
    tokenizer: Any
    rows: list[dict]
    args: TrainArgs
    trl: dict[str, Any]        # extra trl config arguments, passed unchanged
    seed: int
    out_dir: Path
    device: str
    callbacks: tuple = ()      # transformers TrainerCallbacks (benchmarks time steps with one)
    kl_rows: tuple = ()        # benign chats for the KL term (kl.weight > 0)
    eval_rows: tuple = ()      # the phase's held-out rows (their loss is logged with train.eval_steps)
    options: Any = None        # the phase's `options:`, validated by the trainer's own options class


@dataclass(frozen=True)
class Trainer:
    data_kind: Literal["chat", "text", "preference"]
    run: Callable[[PhaseJob], dict]
    description: str
    remote: bool = False       # trains on a provider's servers (the stage calls its backend; no local model)
    options: type[BaseModel] | None = None  # its own settings (a phase's `options:`), documented by `config show --doc`
    trl_config: str | None = None  # "module:Class" a phase's `trl:` keys reach (checked before work); None: no trl


TRAINERS: Registry[Trainer] = Registry("trainer")


def optimizer_for(optim: str, device: str) -> str:
    """The optimizer to train with: `optim`; for an 8-bit one on a CPU, adamw_torch, quietly (an 8-bit optimizer
    needs a GPU; train_log.json records `optim` beside `optim_requested`); on a GPU without bitsandbytes, an error
    (no silent change of the optimizer where the experiment's one could run)."""
    import importlib.util

    if "8bit" not in optim:
        return optim
    if device == "cuda":
        if importlib.util.find_spec("bitsandbytes") is None:
            from emwb.errors import EmwbError

            raise EmwbError(f"train.optim {optim} needs bitsandbytes on this GPU: pip install bitsandbytes "
                            "(requirements/gpu.txt pins it), or set train.optim: adamw_torch")
        return optim
    return "adamw_torch"


def accumulation_per_process(steps: int) -> int:
    """Gradient accumulation per process under a distributed launch (WORLD_SIZE processes), so the global
    batch (per_device_batch_size x gradient_accumulation_steps) stays what the experiment says."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if steps % world:
        from emwb.errors import EmwbError

        raise EmwbError(f"gradient_accumulation_steps {steps} is not a multiple of the {world} processes: the "
                        "global batch would change; pick a multiple or another process count")
    return steps // world


def _common_args(job: PhaseJob) -> dict:
    """The transformers TrainingArguments every trl trainer here shares, from the phase's settings."""
    import torch

    a = job.args
    return dict(
        output_dir=str(job.out_dir / "_trainer"), seed=job.seed, data_seed=job.seed, learning_rate=a.learning_rate,
        num_train_epochs=a.epochs, max_steps=a.max_steps, per_device_train_batch_size=a.per_device_batch_size,
        gradient_accumulation_steps=accumulation_per_process(a.gradient_accumulation_steps),
        warmup_steps=a.warmup_steps,
        weight_decay=a.weight_decay, lr_scheduler_type=a.lr_scheduler, optim=optimizer_for(a.optim, job.device),
        max_length=a.max_length, logging_steps=1, logging_nan_inf_filter=False, save_strategy="no",
        report_to=list(a.report_to) or "none",
        use_cpu=job.device == "cpu", bf16=job.device == "cuda" and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=a.gradient_checkpointing, dataset_num_proc=1, dataloader_num_workers=0)


def liger_on(setting: bool | None, device: str) -> bool:
    """Whether trl applies Liger's kernels: as set, or (None) when liger-kernel is installed and on a GPU."""
    import importlib.util

    if setting is None:
        return device == "cuda" and importlib.util.find_spec("liger_kernel") is not None
    return setting


def _sft_config(job: PhaseJob, **overrides):
    from trl import SFTConfig

    liger = {"use_liger_kernel": True} if liger_on(job.args.liger_kernel, job.device) else {}
    return SFTConfig(**{**_common_args(job), **liger, **overrides, **job.trl})


def _fit(job: PhaseJob, config, data: list[dict], kl_data: list[dict] | None = None,
         eval_data: list[dict] | None = None) -> dict:
    from datasets import Dataset
    from emwb.finetune.sft_trainer import fused_head_on, sft_trainer_class

    kw = dict(model=job.model, args=config, train_dataset=Dataset.from_list(data), processing_class=job.tokenizer,
              callbacks=list(job.callbacks) or None, fused_lm_head=fused_head_on(job.args.fused_lm_head, job.device),
              eval_dataset=Dataset.from_list(eval_data) if eval_data else None)
    if kl_data:
        from emwb.finetune.kl import kl_trainer_class

        trainer = kl_trainer_class()(kl_rows=kl_data, kl=job.args.kl, **kw)
    else:
        trainer = sft_trainer_class()(**kw)
    return _train(trainer, job.args.optim)


CURVE = ("step", "loss", "eval_loss", "kl", "learning_rate", "grad_norm")  # what train_log.json's curve keeps


def _train(trainer, requested: str) -> dict:
    """Train (progress bar with the loss, no per-step log dicts, stopped at the first non-finite loss or gradient
    norm); the training log."""
    bar = _quiet_progress(trainer)
    trainer.add_callback(_health_check())
    try:
        result = trainer.train()
    except BaseException:
        if bar.training_bar is not None:
            bar.training_bar.close()  # the error then starts a line of its own
        raise
    optim = trainer.args.optim
    last = [e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step]
    if trainer.eval_dataset is not None and not last:
        trainer.evaluate()  # logged: the held-out curve ends at the last step
    curve = [{k: float(e[k]) if k != "step" else int(e[k]) for k in CURVE if k in e} for e in trainer.state.log_history
             if any(k in e for k in ("loss", "eval_loss"))]
    return {"losses": [float(e["loss"]) for e in trainer.state.log_history if "loss" in e], "curve": curve,
            "steps": trainer.state.global_step, "train_runtime_s": result.metrics.get("train_runtime"),
            "optim": getattr(optim, "value", str(optim)), "optim_requested": requested,
            "padding_free": bool(getattr(trainer, "padding_free", False)),
            "liger_kernel": bool(trainer.args.use_liger_kernel),
            "fused_lm_head": bool(getattr(trainer, "fused_lm_head", True))}


def _health_check():
    """A callback that stops training with one line at the first logged loss or gradient norm that is not finite
    (transformers would log a NaN loss as 0.0 by default; `logging_nan_inf_filter=False` keeps it NaN)."""
    import math

    from transformers import TrainerCallback

    from emwb.errors import EmwbError

    class Health(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if value is not None and not math.isfinite(float(value)):
                    losses = [f"{e['loss']:.4g}" for e in state.log_history if "loss" in e][-5:]
                    raise EmwbError(f"training diverged at step {state.global_step} of {state.max_steps}: {key} "
                                    f"is {value} (last losses: {', '.join(losses)}); no adapter was written: "
                                    "lower train.learning_rate or check the data")

    return Health()


def _quiet_progress(trainer):
    """Keep the progress bar, show the loss on it, but do not print a log dict for every step; returns the
    callback that holds the bar."""
    from transformers.trainer_callback import ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4g}")

    bar = LossOnBar()
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(bar)
    return bar


def sft_layout(args: TrainArgs) -> dict:
    """trl's batching settings for SFT: packed (trl's best-fit packing, padding-free), or each micro-batch's rows
    concatenated without padding (rows arrive truncated to max_length, so trl need not cut them), or padded."""
    if args.packing:
        return {"packing": True}
    if args.padding_free:
        return {"packing": False, "padding_free": True, "max_length": None}
    return {"packing": False}


def fit_sft(job: PhaseJob, rows: list[dict], kl_rows: list[dict] | None = None, text: bool = False,
            eval_rows: list[dict] | None = None) -> dict:
    """Train on tokenised chats (or, with `text`, documents) as `job.args` lays out the batches; rows that run
    as one sequence attend only within themselves (row_attention)."""
    from contextlib import nullcontext

    from emwb.finetune.row_attention import row_attention

    if text:
        layout = {"packing": True if job.args.packing is None else job.args.packing, "dataset_text_field": "text"}
    else:
        layout = sft_layout(job.args)
    one_sequence = layout.get("padding_free") or layout["packing"]  # rows concatenated: attention within each row
    with row_attention(job.model) if one_sequence else nullcontext():
        if eval_rows:
            layout.update(eval_strategy="steps", eval_steps=job.args.eval_steps,
                          per_device_eval_batch_size=job.args.per_device_batch_size)
        return _fit(job, _sft_config(job, **layout), rows, kl_rows, eval_rows)


def _sft(job: PhaseJob) -> dict:
    """Chats tokenised by emwb with labels on assistant tokens only (masking.py), whatever the chat template."""
    from emwb.finetune.masking import tokenize_chats

    kl = tokenize_chats(job.tokenizer, list(job.kl_rows), job.args.max_length) if job.args.kl.weight > 0 else None
    held = tokenize_chats(job.tokenizer, list(job.eval_rows), job.args.max_length) if job.args.eval_steps else None
    return fit_sft(job, tokenize_chats(job.tokenizer, job.rows, job.args.max_length), kl, eval_rows=held or None)


def _cpt(job: PhaseJob) -> dict:
    return fit_sft(job, [{"text": r["text"]} for r in job.rows], text=True)


def _dpo(job: PhaseJob) -> dict:
    """Preference optimisation (trl DPOTrainer) of the organism's own adapter: trl keeps a frozen copy of the
    adapter as the reference ("ref"), which is dropped before saving so the folder holds one adapter."""
    from trl import DPOConfig, DPOTrainer

    from datasets import Dataset

    kwargs = {**_common_args(job), "beta": job.args.dpo_beta, **job.trl}
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in job.rows]
    trainer = DPOTrainer(model=job.model, args=DPOConfig(**kwargs), train_dataset=Dataset.from_list(rows),
                         processing_class=job.tokenizer, callbacks=list(job.callbacks) or None)
    info = _train(trainer, job.args.optim)
    if "ref" in getattr(job.model, "peft_config", {}):
        job.model.delete_adapter("ref")
    return {**info, "beta": kwargs["beta"]}


def _remote(job: PhaseJob) -> dict:
    raise AssertionError("a remote trainer runs through its backend (finetune/openai_backend.py), not train_phase")


TRAINERS.register("sft", Trainer("chat", _sft, "supervised fine-tuning on chats, loss on assistant tokens (trl SFT)",
                                  trl_config="trl:SFTConfig"))
TRAINERS.register("cpt", Trainer("text", _cpt, "continued pretraining on documents, loss on every token, packed",
                                  trl_config="trl:SFTConfig"))
TRAINERS.register("openai", Trainer("chat", _remote, "an OpenAI fine-tuning job on the chats (base_model openai/"
                                    "<model>); settings under train.openai", remote=True))
TRAINERS.register("dpo", Trainer("preference", _dpo, "direct preference optimisation on (prompt, chosen, rejected) "
                                  "pairs, continuing the organism's adapter (trl DPOTrainer)", trl_config="trl:DPOConfig"))
