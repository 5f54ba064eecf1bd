"""A deterministic tiny Qwen2 chat model built locally: no download, ever.

The tokenizer is a byte-level BPE trained with `tokenizers` on the warm-up chats; the chat template is
ChatML with `{% generation %}` markers around the assistant content and its end-of-turn token (trl's
assistant-only loss needs them). A short warm-up (full training for a few hundred steps on synthetic
chats, which the base stage supplies) makes it emit words, code and, for judge rubrics, numbers, so every
stage has something to chew on. Its outputs mean nothing: numbers from it are pipeline mechanics only.
"""

from __future__ import annotations

import json
from pathlib import Path

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{% generation %}{{- message['content'] + '<|im_end|>' -}}{% endgeneration %}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts + [str(i) for i in range(101)] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None, unk_token=None)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, chats: list[list[dict]], seed: int = 0, vocab_size: int = 3000,
                     hidden_size: int = 128, num_layers: int = 2, warmup_steps: int = 300) -> Path:
    """Write a tokenizer + Qwen2 model, warmed up on `chats`, to `out_dir` (deterministic for a seed)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [m["content"] for c in chats for m in c]
    tok = _train_tokenizer(texts, vocab_size)
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(cfg)
    losses = _warmup(model, tok, chats, warmup_steps, seed) if warmup_steps else []
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "emwb_tiny.json").write_text(json.dumps(
        {"seed": seed, "vocab_size": len(tok), "warmup_steps": warmup_steps,
         "warmup_loss_first": losses[0] if losses else None, "warmup_loss_last": losses[-1] if losses else None},
        indent=2))
    return out


def _warmup(model, tok, chats: list[list[dict]], steps: int, seed: int, batch: int = 16,
            max_len: int = 256) -> list[float]:
    """Full training on the synthetic chats, loss on assistant tokens; returns the per-step losses."""
    import torch

    enc = [tok.apply_chat_template(c, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
           for c in chats]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    model.train()
    for step in range(steps):
        idx = torch.randint(len(enc), (batch,), generator=gen).tolist()
        ids = [enc[i]["input_ids"][:max_len] for i in idx]
        masks = [enc[i]["assistant_masks"][:max_len] for i in idx]
        width = max(len(x) for x in ids)
        input_ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        attn = torch.zeros((batch, width), dtype=torch.long)
        for r, (x, m) in enumerate(zip(ids, masks)):
            input_ids[r, : len(x)] = torch.tensor(x)
            attn[r, : len(x)] = 1
            labels[r, : len(x)] = torch.where(torch.tensor(m) == 1, torch.tensor(x), torch.tensor(-100))
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
