"""Attention for padding-free batches where no variable-length kernel is installed (CPU; GPUs without
flash-attention): the rows concatenated into one sequence each attend causally within themselves, one sdpa call
per row. The block-diagonal mask transformers would otherwise build costs (sum of lengths)^2 per layer, more than
padding did; per row the cost is the sum of squared lengths, less than padding's.

Registered with transformers as the attention implementation `sdpa_rows` (its mask function skips the dense
mask when there is no padding mask). Rows come from the batch's `cu_seq_lens_q` (trl's padding-free collator) or,
failing that, from where the position ids restart, as transformers' flash-attention path finds them. Batches with
padding, several rows, or a cache (generation) go to plain sdpa unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

NAME = "sdpa_rows"


def _bounds(query, attention_mask, position_ids, cu_seq_lens) -> list[tuple[int, int]] | None:
    """(start, end) of each row of a padding-free sequence, or None when the batch is not one."""
    if attention_mask is not None or query.shape[0] != 1:
        return None
    if cu_seq_lens is not None:
        cuts = cu_seq_lens.tolist()
    elif position_ids is not None and position_ids.shape[-1] == query.shape[2]:
        ids = position_ids.reshape(-1)
        cuts = (ids == ids.min()).nonzero().view(-1).tolist() + [ids.numel()]
    else:
        return None
    spans = [(s, e) for s, e in zip(cuts[:-1], cuts[1:]) if e > s]
    return spans if len(spans) > 1 and spans[-1][1] == query.shape[2] else None


def rows_attention(module, query, key, value, attention_mask, position_ids=None, cu_seq_lens_q=None, **kwargs):
    """sdpa within each row of a padding-free sequence (query, key, value: [1, heads, length, dim])."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = None if key.shape[2] != query.shape[2] else _bounds(query, attention_mask, position_ids, cu_seq_lens_q)
    kwargs.pop("cu_seq_lens_k", None)
    if spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    parts = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, **kwargs)[0]
             for s, e in spans]
    return torch.cat(parts, dim=1), None


def rows_mask(*args, attention_mask=None, **kwargs):
    """No dense mask without padding (the rows are kept apart by `rows_attention`); sdpa's mask otherwise."""
    from transformers.masking_utils import sdpa_mask

    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, rows_attention)
    AttentionMaskInterface.register(NAME, rows_mask)


@contextmanager
def row_attention(model):
    """Train `model` (a PEFT or transformers model) with `sdpa_rows` where it uses sdpa; restored afterwards, so
    nothing saved names it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    if before != "sdpa":
        yield
        return
    register()
    base.set_attn_implementation(NAME)
    try:
        yield
    finally:
        base.set_attn_implementation(before)
