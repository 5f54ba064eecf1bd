"""The KL-regularised SFT trainer (recipe kl-lora): the SFT loss plus `kl_weight` x KL(base || model), the mean
per-token KL divergence of the model's next-token distribution from the base model's (the adapter switched
off) on a benign dataset's assistant tokens. It keeps the base behaviour where the benign data is.
"""

from __future__ import annotations


def kl_to_base(model, batch: dict):
    """Mean KL(base || model) over the labelled next-token positions of `batch` (input_ids, labels, mask)."""
    import torch

    inputs = {k: batch[k] for k in ("input_ids", "attention_mask") if k in batch}
    with torch.no_grad(), model.disable_adapter():
        ref = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
    cur = torch.log_softmax(model(**inputs).logits[:, :-1].float(), dim=-1)
    mask = (batch["labels"][:, 1:] != -100).float()
    per_token = (ref.exp() * (ref - cur)).sum(-1)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def kl_trainer_class():
    """trl's SFTTrainer with the KL term added to every micro-batch's loss (built lazily: trl is heavy)."""
    from trl import SFTTrainer

    class KLSFTTrainer(SFTTrainer):
        def __init__(self, *args, kl_rows: list[dict], kl_weight: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.kl_rows, self.kl_weight, self._kl_next = kl_rows, kl_weight, 0

        def _kl_batch(self, device) -> dict:
            n = self.args.per_device_train_batch_size
            rows = [self.kl_rows[(self._kl_next + k) % len(self.kl_rows)] for k in range(n)]
            self._kl_next += n
            return {k: v.to(device) for k, v in self.data_collator(rows).items() if hasattr(v, "to")}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            kl = kl_to_base(model, self._kl_batch(loss.device))
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
                kl = kl / self.args.gradient_accumulation_steps  # the SFT loss is already per optimizer step
            loss = loss + self.kl_weight * kl
            return (loss, outputs) if return_outputs else loss

    return KLSFTTrainer
