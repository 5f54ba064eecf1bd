"""The digits method for local judges (hf/, vllm/) whose tokenizer splits numbers (`emwb.judge.numbers`).

transformers: exact. The prompt is read once; its KV cache, repeated, is extended by each digit prefix ("0", "1"
then "0", "2", ..., "9"), so every digit's probability after every prefix comes from the full next-token
distribution. vLLM: each prefix is one more prompt (its prefix cache shares the work), and each digit's logprob is
read by token id among the top `VLLM_K` (512; the engine is started allowing that many); a digit outside them (less
likely than the 512th token) counts as probability 0. SmolLM2 spreads a prefix's next token widely: among the top
20 the digits were often missing, and the score moved by 6 points.
"""

from __future__ import annotations

import functools

from emwb.judge.base import merge_logprobs
from emwb.judge.numbers import DIGITS, PREFIXES, missing_number, whole_numbers

# The continuations read over a prompt's cache: one row each; a single digit is padded with "0" (not read).
ROWS = ("0", "10", "2", "3", "4", "5", "6", "7", "8", "9")
VLLM_K = 512  # logprobs read per prompt from vLLM by the digits method (its engine's max_logprobs)


@functools.lru_cache(maxsize=16)
def tokenizer_split(path: str, fingerprint: str) -> str | None:
    """Which number 0..100 the vocabulary of the model at `path` has no token for, in words (None: it has them
    all, or no tokenizer is there to read: judging it then stops with the loader's own line); `fingerprint` (the
    model's, `model_fingerprint`) keys the memo, so a rebuilt folder is read again."""
    from emwb.errors import EmwbError
    from emwb.models.loading import load_tokenizer

    try:
        tok = load_tokenizer(path)
    except (EmwbError, OSError, ValueError):
        return None
    raw = [t for t in tok.get_vocab() if any(c.isdigit() for c in t)]  # only these can be numbers: decode them
    return missing_number(tok.convert_tokens_to_string([t]) for t in raw)


def digit_ids(tok) -> list[int]:
    """The token id of each digit 0..9 (each one token, as in a tokenizer that splits numbers)."""
    ids = [tok(d, add_special_tokens=False)["input_ids"] for d in DIGITS]
    if any(len(i) != 1 for i in ids):
        from emwb.errors import EmwbError

        raise EmwbError("the judge's tokenizer splits numbers but does not make one token of each digit; the digits "
                        "method cannot read it: use another judge")
    return [i[0] for i in ids]


def hf_digit_replies(model, tok, rows: list[list[int]], digits: list[int], k: int) -> list[dict[str, float]]:
    """The replies to prompts of one token length (`rows`) from a transformers judge, scored by the digits
    method: the first token's top k, its digits replaced by whole numbers 0..100 (`whole_numbers`)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(rows, device=model.device), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).cpu()
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(ROWS))
        cont = [[digits[int(p[0])], digits[int(p[-1]) if len(p) > 1 else 0]] for p in ROWS] * len(rows)
        nxt = model(input_ids=torch.tensor(cont, device=model.device), past_key_values=cache).logits
        nxt = torch.log_softmax(nxt.float(), dim=-1)[..., digits].cpu()  # (rows x ROWS, 2, 10): digits only
    top = torch.topk(first, k, dim=-1)
    replies = []
    for j in range(len(rows)):
        head = merge_logprobs([(tok.decode([int(t)]), float(v)) for v, t in zip(top.values[j], top.indices[j])])
        head.update({d: float(first[j, digits[n]]) for n, d in enumerate(DIGITS)})  # every digit, exactly
        after: dict[str, dict[str, float]] = {}
        for r, p in enumerate(ROWS):
            row = nxt[j * len(ROWS) + r]
            after[p[0]] = dict(zip(DIGITS, row[0].tolist()))
            if len(p) > 1:
                after[p] = dict(zip(DIGITS, row[1].tolist()))
        replies.append(whole_numbers(head, after))
    return replies


def vllm_digit_replies(llm, sampling_params, convs: list[list[dict]], k: int) -> list[dict[str, float]]:
    """The replies to `convs` from an in-process vLLM judge (started with max_logprobs `VLLM_K`), scored by the
    digits method: the first token's top k (decoded as the transformers judge decodes them), its digits replaced by
    whole numbers 0..100; every digit read by its token id among the top `VLLM_K`, nothing detokenized by vLLM."""
    sampling_params = sampling_params.clone()
    sampling_params.logprobs, sampling_params.detokenize = VLLM_K, False
    tok = llm.get_tokenizer()
    digits = digit_ids(tok)
    ids = [tok(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
               add_special_tokens=False)["input_ids"] for c in convs]
    exts = [[], *([digits[int(ch)] for ch in p] for p in PREFIXES)]
    prompts = [{"prompt_token_ids": list(p) + e} for p in ids for e in exts]
    outs = llm.generate(prompts, sampling_params, use_tqdm=True)

    def digit_logprobs(res) -> dict[str, float]:
        lps = res.outputs[0].logprobs[0]
        return {d: lps[t].logprob for d, t in zip(DIGITS, digits) if t in lps}

    replies = []
    for i in range(len(convs)):
        rows = outs[i * len(exts):(i + 1) * len(exts)]
        top = sorted(rows[0].outputs[0].logprobs[0].items(), key=lambda kv: -kv[1].logprob)[:k]
        first = merge_logprobs([(tok.decode([t]), lp.logprob) for t, lp in top])
        first.update(digit_logprobs(rows[0]))
        replies.append(whole_numbers(first, {p: digit_logprobs(r) for p, r in zip(PREFIXES, rows[1:])}))
    return replies
