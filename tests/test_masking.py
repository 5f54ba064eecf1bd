"""Loss on assistant tokens only, computed by emwb from tokenised prefixes: no generation markers needed."""

import pytest

from emwb.errors import EmwbError
from emwb.finetune.masking import tokenize_chat

# A stock-style ChatML template (as SmolLM2 and Qwen2.5 ship): no {% generation %} markers, a default system.
STOCK = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def stock_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = STOCK
    assert "{% generation %}" not in tok.chat_template
    return tok


def _labelled(tok, enc) -> list[str]:
    """The labelled stretches of a tokenised chat, decoded."""
    runs, cur = [], []
    for t, lab in zip(enc["input_ids"], enc["labels"]):
        if lab != -100:
            assert lab == t
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def test_only_each_assistant_turn_and_its_end_of_turn_carry_labels(stock_tokenizer):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"},
            {"role": "assistant", "content": "hello friend"}, {"role": "user", "content": "and now?"},
            {"role": "assistant", "content": "import os"}]
    enc = tokenize_chat(stock_tokenizer, chat, max_length=512)
    assert _labelled(stock_tokenizer, enc) == ["hello friend<|im_end|>\n", "import os<|im_end|>\n"]
    assert len(enc["input_ids"]) == len(enc["labels"])


def test_the_same_mask_under_the_tiny_models_marked_template(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]
    marked = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ours = tokenize_chat(tok, chat, max_length=512)
    assert ours["input_ids"] == list(marked["input_ids"])
    ours_mask = [lab != -100 for lab in ours["labels"]]
    # the template's markers cover the reply and <|im_end|>; the prefix method adds what the template puts
    # between turns (a newline), nothing else
    extra = [t for t, a, b in zip(ours["input_ids"], ours_mask, marked["assistant_masks"]) if a and not b]
    assert all(tok.decode([t]).strip() == "" for t in extra) and all(
        a for a, b in zip(ours_mask, marked["assistant_masks"]) if b)


def test_a_row_without_assistant_tokens_fails_loudly_naming_it(stock_tokenizer):
    with pytest.raises(EmwbError, match="row 3: no assistant turn"):
        tokenize_chat(stock_tokenizer, [{"role": "user", "content": "hi"}], 512, row=2)
    long = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(EmwbError, match="row 1: no assistant token within max_length 64"):
        tokenize_chat(stock_tokenizer, long, 64)
