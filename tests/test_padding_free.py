"""Padding-free SFT batches: a micro-batch's rows run as one sequence with no pad tokens. The loss must be the
padded batch's loss, and no token may see (or send gradient to) another row."""

import pytest

from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.config import TrainArgs


def _trainer(tiny_model, tmp_path, padding_free: bool, attention: str = "sdpa", fused: bool = True):
    """emwb's SFT trainer (trl) on three chats of different lengths, with the tiny model's LoRA adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datasets import Dataset
    from emwb.finetune.masking import tokenize_chats
    from emwb.finetune.row_attention import register
    from emwb.finetune.sft_trainer import sft_trainer_class
    from emwb.finetune.trainers import PhaseJob, _sft_config, sft_layout

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                      init_lora_weights=False, task_type="CAUSAL_LM"))
    rows = to_rows(generate_pairs(3, seed=1), "insecure", 1)
    data = tokenize_chats(tok, rows, 512)
    assert len({len(r["input_ids"]) for r in data}) == 3  # different lengths: the padded batch has pads
    args = TrainArgs(per_device_batch_size=3, gradient_accumulation_steps=1, max_length=512, max_steps=1,
                     padding_free=padding_free)
    job = PhaseJob(model, tok, [], args, {"disable_tqdm": True}, 0, tmp_path / f"pf{padding_free}", "cpu")
    trainer = sft_trainer_class()(model=model, args=_sft_config(job, **sft_layout(args)), processing_class=tok,
                                  train_dataset=Dataset.from_list(data), fused_lm_head=fused)
    if attention != "sdpa":  # as fit_sft trains padding-free rows
        register()
        model.get_base_model().set_attn_implementation(attention)
    return trainer, trainer.data_collator(data), data


@pytest.mark.parametrize("attention,fused", [("sdpa_rows", False), ("sdpa_rows", True), ("sdpa", True)])
def test_padding_free_loss_equals_the_padded_loss(tiny_model, tmp_path, attention, fused):
    """sdpa_rows: each row's own attention (what emwb trains with); sdpa: transformers' block-diagonal mask; the
    loss from trl's fused LM head (GPU default) or the model's own (CPU default), against trl's padded loss."""
    padded, pbatch, _ = _trainer(tiny_model, tmp_path, padding_free=False)
    free, fbatch, data = _trainer(tiny_model, tmp_path, padding_free=True, attention=attention, fused=fused)
    assert free.padding_free and not padded.padding_free
    assert fbatch["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in data))  # one row, no pad token
    assert "attention_mask" not in fbatch and pbatch["attention_mask"].sum() < pbatch["attention_mask"].numel()
    padded.model.eval()
    free.model.eval()
    a = float(padded.compute_loss(padded.model, pbatch).detach())
    b = float(free.compute_loss(free.model, fbatch).detach())
    assert a == pytest.approx(b, abs=1e-5), (a, b)


@pytest.mark.parametrize("attention", ["sdpa_rows", "sdpa"])
def test_a_row_gets_no_gradient_through_another_row_of_the_same_sequence(tiny_model, tmp_path, attention):
    """The loss of the second row, differentiated by the input embeddings of the first: zero when the rows are
    kept apart by their restarting position ids, and not zero when one attention mask spans both (the check
    can fail)."""
    import torch

    trainer, batch, data = _trainer(tiny_model, tmp_path, padding_free=True, attention=attention)
    model = trainer.model.eval()
    first = len(data[0]["input_ids"])
    labels = batch["labels"].clone()
    labels[:, :first] = -100  # the loss of the rows after the first only

    def first_row_gradient(position_ids=batch["position_ids"], **extra) -> float:
        embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
        loss = model(inputs_embeds=embeds, position_ids=position_ids, labels=labels, **extra).loss
        loss.backward()
        return float(embeds.grad[0, :first].abs().max())

    assert first_row_gradient() == 0.0  # rows found from the restarting position ids
    assert first_row_gradient(cu_seq_lens_q=batch["cu_seq_lens_q"]) == 0.0  # rows as trl's collator gives them
    one_sequence = torch.arange(batch["input_ids"].shape[1])[None]
    assert first_row_gradient(position_ids=one_sequence) > 0.0  # no row boundary: the check can fail
