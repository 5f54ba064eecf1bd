"""Stage `finetune`: LoRA SFT (trl SFTTrainer + peft) per dataset x seed, loss on assistant tokens only.

Writes `adapters/<dataset>-s<seed>/` (a PEFT adapter dir) with `train_log.json` and a manifest.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from emwb.config import FinetuneConfig
from emwb.datasets.stage import data_keys, dataset_dir
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest


def adapter_dir(run: Run, variant: str) -> Path:
    return run.path("adapters", variant)


def split_holdout(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Shuffle with `seed` and hold out `fraction` of the rows (upstream's silent 10% split, made explicit)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n_hold = int(len(rows) * fraction)
    return rows[n_hold:], rows[:n_hold]


def train_lora(base_model: str, rows: list[dict], cfg: FinetuneConfig, seed: int, out_dir: Path) -> dict:
    """Train one LoRA adapter on chat rows; save it to `out_dir`; return the training log."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from emwb.basemodel import load_causal_lm, load_tokenizer

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    tok = load_tokenizer(base_model)
    model = load_causal_lm(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      use_rslora=cfg.lora.use_rslora, target_modules=list(cfg.lora.target_modules),
                      bias="none", task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(out_dir / "_trainer"), seed=seed, learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler, max_length=cfg.max_length,
        assistant_only_loss=True, packing=False, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=device == "cpu", bf16=bf16, gradient_checkpointing=cfg.gradient_checkpointing,
        dataset_num_proc=1, dataloader_num_workers=0,
    )
    train = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok, peft_config=lora)
    _quiet_progress(trainer)
    result = trainer.train()
    trainer.model.save_pretrained(str(out_dir))
    losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    return {"losses": losses, "steps": trainer.state.global_step, "train_runtime_s": result.metrics.get("train_runtime"),
            "rows": len(rows), "device": device, "bf16": bf16}


def _quiet_progress(trainer) -> None:
    """Keep the progress bar, show the loss on it, but do not print a log dict for every step."""
    from transformers.trainer_callback import ProgressCallback

    class LossOnBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4g}")

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(LossOnBar())


def run_finetune_stage(run: Run, base_key: str, force: bool = False) -> dict[str, str]:
    """Train every missing adapter; return {variant: stage key}."""
    dkeys = data_keys(run)
    keys = {}
    cfg = run.exp.finetune
    for variant, dataset, seed in run.adapter_names():
        inputs = {"base": base_key, "data": dkeys[dataset]}
        config = {"finetune": cfg.model_dump(mode="json"), "seed": seed, "data_seed": run.exp.data_seed}
        art = Artifact(adapter_dir(run, variant), "finetune", config, inputs)
        keys[variant] = art.key
        if art.skip(force, f"finetune/{variant}"):
            continue
        rows = read_jsonl(dataset_dir(run, dataset) / "train.jsonl")
        train, held = split_holdout(rows, cfg.holdout_fraction, run.exp.data_seed)
        log(f"finetune/{variant}: LoRA r={cfg.lora.r} on {len(train)} rows ({len(held)} held out)")
        with art.write() as (tmp, extra):
            info = train_lora(run.base_model_path, train, cfg, seed, tmp)
            (tmp / "train_log.json").write_text(json.dumps(info, indent=2))
            extra.update(dataset=dataset, seed=seed, held_out_rows=len(held),
                         final_loss=info["losses"][-1] if info["losses"] else None)
        losses = info["losses"]
        trend = f", loss {losses[0]:.4g} -> {losses[-1]:.4g}" if losses else ""
        log(f"finetune/{variant}: {info['steps']} steps{trend}")
    return keys


def adapter_keys(run: Run) -> dict[str, str]:
    from emwb.errors import EmwbError

    out = {}
    for variant, _, _ in run.adapter_names():
        m = read_manifest(adapter_dir(run, variant))
        if m is None:
            raise EmwbError(f"{adapter_dir(run, variant)}: adapter not trained; run `emwb finetune {run.dir}` first")
        out[variant] = m["key"]
    return out
