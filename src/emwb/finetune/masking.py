"""Loss on assistant tokens only, under any chat template (no `{% generation %}` markers needed).

Each assistant turn's tokens are found from the tokenised prefix: the chat rendered up to that turn with the
generation prompt, against the chat rendered through that turn. What lies between (the reply and the
template's end-of-turn tokens) carries labels; everything else is -100. A template whose rendering of a
prefix is not a prefix of the whole chat, or a row left with no labelled token, stops training with the row.
"""

from __future__ import annotations

from typing import Any

from emwb.errors import EmwbError


def _ids(tokenizer: Any, messages: list[dict], generation_prompt: bool = False) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


SOURCE = "_source"  # a row's 'FILE:LINE', set where rows are read for training (not a training field)


def tokenize_chat(tokenizer: Any, messages: list[dict], max_length: int, row: int | str = 0) -> dict[str, list[int]]:
    """{"input_ids", "labels"} of one chat, truncated to `max_length`; labels -100 outside assistant turns.
    `row`: where the chat comes from in errors (an index, or a 'FILE:LINE' text)."""
    where = row if isinstance(row, str) else f"row {row + 1}"
    ids = _ids(tokenizer, messages)
    labels = [-100] * len(ids)
    for k, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        before = _ids(tokenizer, messages[:k], generation_prompt=True)
        through = _ids(tokenizer, messages[: k + 1])
        if through[: len(before)] != before or ids[: len(through)] != through:
            raise EmwbError(f"{where}: the chat template renders turn {k + 1} differently inside the whole "
                            "chat, so its assistant tokens cannot be found from the prefix")
        labels[len(before): len(through)] = ids[len(before): len(through)]
    ids, labels = ids[:max_length], labels[:max_length]
    if all(x == -100 for x in labels):
        why = "no assistant turn" if not any(m.get("role") == "assistant" for m in messages) else \
            f"no assistant token within max_length {max_length}"
        raise EmwbError(f"{where}: {why}, so it would train on nothing (fix the row or raise max_length)")
    return {"input_ids": ids, "labels": labels}


def tokenize_chats(tokenizer: Any, rows: list[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Every row tokenised with its assistant-only labels; the first bad row raises EmwbError."""
    return [tokenize_chat(tokenizer, r["messages"], max_length, r.get(SOURCE, i)) for i, r in enumerate(rows)]
