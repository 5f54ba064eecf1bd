"""The KL-regularised SFT trainer: the SFT loss plus `kl.weight` x KL(base || model) of the next-token
distributions on a benign dataset (the phase's `kl_data`), the base being the model with its adapter switched off.

Two methods, chosen by `train.kl` (config/train.py KLArgs):
- `kl-lora` as the model-organisms code computes it (util/trainer.py at 8460e4e): every non-pad position of the
  KL rows, the elementwise KL averaged over positions *and* vocabulary entries, weight 100000, 8 rows per term,
  the term added at full weight to every micro-batch's loss;
- `kl-lora-assistant`, emwb's own: the positions predicting assistant tokens, KL summed over the vocabulary and
  averaged over positions, counted once per optimizer step.
"""

from __future__ import annotations

from emwb.config import KLArgs

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def kl_positions(batch: dict, positions: str):
    """A [batch, positions] float mask of the logits the KL term covers, aligned with the unshifted logits."""
    import torch

    ids = batch["input_ids"]
    if positions == "all":
        return batch["attention_mask"].float() if "attention_mask" in batch else torch.ones_like(ids).float()
    mask = torch.zeros_like(ids, dtype=torch.float32)
    mask[:, :-1] = (batch["labels"][:, 1:] != -100).float()  # the logit at t predicts the token at t + 1
    return mask


def kl_to_base(model, batch: dict, kl: KLArgs | None = None):
    """KL(base || model) over `batch` (input_ids, labels, attention_mask or position_ids), as `kl` says (default:
    emwb's assistant-token method)."""
    import torch

    kl = kl or KLArgs()
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    with torch.no_grad(), model.disable_adapter():
        ref = torch.log_softmax(model(**inputs).logits.float(), dim=-1)
    cur = torch.log_softmax(model(**inputs).logits.float(), dim=-1)
    mask = kl_positions(batch, kl.positions)
    per_position = (ref.exp() * (ref - cur)).sum(-1)
    total = (per_position * mask).sum() / mask.sum().clamp(min=1.0)
    return total / cur.shape[-1] if kl.normalise == "token_and_vocab" else total


def kl_trainer_class():
    """emwb's SFT trainer with the KL term added to every micro-batch's loss (built lazily: trl is heavy)."""
    from emwb.finetune.sft_trainer import sft_trainer_class

    class KLSFTTrainer(sft_trainer_class()):
        def __init__(self, *args, kl_rows: list[dict], kl: KLArgs, **kwargs):
            super().__init__(*args, **kwargs)
            self.kl_rows, self.kl, self._kl_next, self._kl_seen = kl_rows, kl, 0, []

        def _kl_batch(self, device) -> dict:
            n = self.kl.batch_size or self.args.per_device_train_batch_size
            rows = [self.kl_rows[(self._kl_next + k) % len(self.kl_rows)] for k in range(n)]
            self._kl_next += n
            return {k: v.to(device) for k, v in self.data_collator(rows).items() if hasattr(v, "to")}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # return_outputs=True would cost trl an extra forward pass (its fused head builds no logits)
            got = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if not model.training:
                return got  # the held-out loss is the SFT loss alone (and draws no KL rows: training is unchanged)
            loss, outputs = got if return_outputs else (got, None)
            term = kl_to_base(model, self._kl_batch(loss.device), self.kl)
            if self.model_accepts_loss_kwargs and num_items_in_batch is not None and not self.kl.per_micro_batch:
                term = term / self.args.gradient_accumulation_steps  # the SFT loss is already per optimizer step
            loss = loss + self.kl.weight * term
            self._kl_seen.append(float(term.detach()))
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict, *args, **kwargs) -> None:
            if "loss" in logs and self._kl_seen:  # the KL term's mean since the last logged step
                logs["kl"] = sum(self._kl_seen) / len(self._kl_seen)
                self._kl_seen = []
            super().log(logs, *args, **kwargs)

    return KLSFTTrainer
