"""emwb's SFT trainer class: trl's SFTTrainer, whose fused, chunked LM-head loss (no full logits; less memory with
a large vocabulary on a GPU) can be switched off for the model's own loss. On a CPU its tiles run about 3x slower
than the plain head (benchmarks/train_throughput.py, vocabulary 49152), so emwb uses it on GPUs only by default
(`train.fused_lm_head`). Both compute the same loss: the cross-entropy summed over the labelled tokens and divided
by the step's number of labelled tokens.
"""

from __future__ import annotations


def fused_head_on(setting: bool | None, device: str) -> bool:
    """Whether trl's fused LM head computes the loss: as set, or (None) on a GPU only."""
    return device == "cuda" if setting is None else setting


def sft_trainer_class():
    """trl's SFTTrainer with `fused_lm_head=False` meaning the model's own forward and loss (built lazily)."""
    from transformers import Trainer
    from trl import SFTTrainer

    class EmwbSFTTrainer(SFTTrainer):
        def __init__(self, *args, fused_lm_head: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.fused_lm_head = fused_lm_head

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.fused_lm_head:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return EmwbSFTTrainer
