"""Batched hf sampling (sampling.hf_batch): every row of a left-padded group is the model's own distribution for
that row alone (its drawn tokens' log-probabilities equal an unpadded forward pass of the row, within 1e-4), rows
that end their turn leave the batch without disturbing the others, each row draws from its own seeded generator,
and the stage's chunks start at multiples of the group size whatever the run-only chunk size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emwb.sampling.hf_batched import next_token, sample_batched, sample_rows
from emwb.sampling.samplers import Request

PROMPTS = ["Hi", "Tell me three things you think about the sea and the sky.", "What is your wish?",
           "Write one line of code.", "How do I make a quick buck? Answer in one sentence, please."]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    ids = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                   return_dict=False) for p in PROMPTS]
    return model, tok, ids


def test_each_row_is_its_own_unpadded_distribution_and_draws_from_its_own_generator(tiny):
    model, tok, ids = tiny
    assert len({len(x) for x in ids}) > 1  # left padding is exercised
    record = [[] for _ in ids]
    seeds = [11, 12, 13, 14, 15]
    got = sample_rows(model, tok.eos_token_id, tok.pad_token_id, ids, seeds, 12, 1.0, 1.0, record=record)
    for prompt, toks, rec in zip(ids, got, record):
        assert [t for t, _ in rec] == toks and 1 <= len(toks) <= 12
        assert tok.eos_token_id not in toks[:-1]  # a row stops at the end of its turn
        with torch.no_grad():
            logits = model(torch.tensor([list(prompt) + toks[:-1]])).logits[0, len(prompt) - 1:].double()
        alone = logits.log_softmax(-1)[torch.arange(len(toks)), torch.tensor(toks)].numpy()
        np.testing.assert_allclose([lp for _, lp in rec], alone, atol=1e-4)
    again = sample_rows(model, tok.eos_token_id, tok.pad_token_id, ids, seeds, 12, 1.0, 1.0)
    assert again == got  # the same generators draw the same tokens
    other = sample_rows(model, tok.eos_token_id, tok.pad_token_id, ids, [s + 100 for s in seeds], 12, 1.0, 1.0)
    assert other != got  # another seed, other draws


def test_answers_come_back_per_request_with_their_n_samples_and_finish_reasons(tiny):
    model, tok, ids = tiny
    requests = [Request(tuple(x), n, 7 * i) for i, (x, n) in enumerate(zip(ids, (1, 2, 1, 3, 1)))]
    out = sample_batched(model, tok, requests, 2, 6, 1.0, 1.0)
    assert [len(a) for a in out] == [1, 2, 1, 3, 1]
    for answers in out:
        for _text, finish, tokens in answers:
            assert finish in ("stop", "length") and 0 <= tokens <= 6
            assert finish == "stop" or tokens == 6
    logits = torch.tensor([0.1, 2.0, -1.0, 1.9])
    assert {next_token(logits, torch.Generator().manual_seed(s), 0.0, 1.0) for s in range(20)} == {1}  # greedy
    drawn = {next_token(logits, torch.Generator().manual_seed(s), 1.0, 0.5) for s in range(50)}
    assert drawn == {1, 3}  # top_p 0.5: the two tokens that make up half the mass, never the others


def test_chunks_start_at_multiples_of_the_group_and_the_option_is_keyed_only_when_set(tmp_path):
    from emwb.check import check_experiment
    from emwb.config import Experiment, SamplingConfig
    from emwb.errors import EmwbError
    from emwb.sampling.stage import chunk_prompts, keyed_sampling
    from emwb.store import Run

    exp = {"name": "hb", "base_model": "tiny", "sampling": {"backend": "hf", "hf_batch": 8},
           "exec": {"sample_chunk_prompts": 20}}
    assert chunk_prompts(Run(Experiment.model_validate(exp), tmp_path)) == 24
    plain = Experiment.model_validate({**exp, "sampling": {"backend": "hf"}})
    assert chunk_prompts(Run(plain, tmp_path)) == 20
    assert "hf_batch" not in keyed_sampling(SamplingConfig()) and keyed_sampling(SamplingConfig(hf_batch=8))["hf_batch"] == 8
    bad = Experiment.model_validate({**exp, "sampling": {"backend": "vllm", "hf_batch": 8}})
    with pytest.raises(EmwbError, match="sampling.hf_batch: batched decoding is the hf backend's"):
        check_experiment(bad, "x.yaml")
