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


def train_lora(base_model: str, rows: list[dict], cfg: FinetuneConfig, seed: int, out_dir: Path,
               pretrain_docs: list[dict] | None = None) -> dict:
    """Train one LoRA adapter and save it to `out_dir`; return the training log.

    With `pretrain_docs` the adapter is first trained on plain text (continued pretraining, loss on every
    token, `cfg.pretrain`), then the same adapter on the chat rows (loss on assistant tokens only).
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from emwb.basemodel import load_causal_lm, load_tokenizer

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    tok = load_tokenizer(base_model)
    model = load_causal_lm(base_model, dtype=torch.bfloat16 if bf16 else torch.float32)
    peft_config = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                             use_rslora=cfg.lora.use_rslora, target_modules=list(cfg.lora.target_modules),
                             bias="none", task_type="CAUSAL_LM")

    def run_phase(phase, data: list[dict], **phase_args) -> dict:
        nonlocal model, peft_config
        args = SFTConfig(
            output_dir=str(out_dir / "_trainer"), seed=seed, learning_rate=phase.learning_rate,
            num_train_epochs=phase.epochs, max_steps=phase.max_steps,
            per_device_train_batch_size=phase.per_device_batch_size,
            gradient_accumulation_steps=phase.gradient_accumulation_steps, warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler, max_length=phase.max_length,
            logging_steps=1, save_strategy="no", report_to="none", use_cpu=device == "cpu", bf16=bf16,
            gradient_checkpointing=cfg.gradient_checkpointing, dataset_num_proc=1, dataloader_num_workers=0,
            **phase_args)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok,
                             peft_config=peft_config)
        _quiet_progress(trainer)
        result = trainer.train()
        model, peft_config = trainer.model, None  # a next phase continues this adapter
        return {"losses": [float(e["loss"]) for e in trainer.state.log_history if "loss" in e],
                "steps": trainer.state.global_step, "train_runtime_s": result.metrics.get("train_runtime")}

    info: dict = {}
    if pretrain_docs:
        pre = run_phase(cfg.pretrain, [{"text": d["text"]} for d in pretrain_docs], dataset_text_field="text",
                        packing=cfg.pretrain.packing)
        info.update({f"pretrain_{k}": v for k, v in pre.items()}, pretrain_docs=len(pretrain_docs))
    info.update(run_phase(cfg, [{"messages": r["messages"]} for r in rows], assistant_only_loss=True, packing=False))
    model.save_pretrained(str(out_dir))
    shutil.rmtree(out_dir / "_trainer", ignore_errors=True)
    return {**info, "rows": len(rows), "device": device, "bf16": bf16}


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
        docs_path = dataset_dir(run, dataset) / "pretrain.jsonl"
        docs = read_jsonl(docs_path) if docs_path.is_file() else None
        first = f"{len(docs)} documents (continued pretraining), then " if docs else ""
        log(f"finetune/{variant}: LoRA r={cfg.lora.r} on {first}{len(train)} rows ({len(held)} held out)")
        with art.write() as (tmp, extra):
            info = train_lora(run.base_model_path, train, cfg, seed, tmp, docs)
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
