"""Model diffing and latent ablation against a planted variant: the tiny model with a known vector v added to the
residual stream after block 0 on chosen tokens (every 6th position: a sparse feature, whatever the token). A
dictionary trained on the base's and the variant's tokens has a latent for v; diffing must rank the latent closest
to v first, and ablating it (its activation times its decoder column removed while the model runs) must move the
variant's next-token log-probabilities back toward the base's, where random latents of matched firing rate do not.
(A vector added at every position is a dense offset, which a TopK dictionary splits over several latents; the
planted-feature tests of `test_features_dictionary.py` are sparse for the same reason.)"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

pytest.importorskip("sae_lens")

import torch  # noqa: E402

from emwb.features.diffing import diff_rows, matched_controls  # noqa: E402
from emwb.models.activations import ActivationStore  # noqa: E402
from emwb.models.dictionary import DictionarySettings, item_latents, load_dictionary, train_dictionary  # noqa: E402
from emwb.models.interventions import ablate_latents, decoder_blocks  # noqa: E402
from emwb.models.token_activations import stream_token_activations  # noqa: E402

LAYER, EVERY = 0, 6
WORDS = "the a garden river quiet light stone music open window green small paper bright road cloud".split()


@contextlib.contextmanager
def plant(model, v):
    """h <- h + v after block LAYER at positions 1, 1 + EVERY, 1 + 2 EVERY, ..."""
    vt = torch.as_tensor(v, dtype=torch.float32)

    def add(_m, _i, out):
        h = (out[0] if isinstance(out, tuple) else out).clone()
        h[:, 1::EVERY] += vt
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = decoder_blocks(model)[LAYER].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def _texts(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"Tell me about item {i}.", " ".join(rng.choice(WORDS, 12))) for i in range(n)]


@pytest.fixture(scope="module")
def planted(tiny_model, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    tmp = tmp_path_factory.mktemp("planted")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    texts = _texts(48, 0)
    read = lambda label, items: list(stream_token_activations(  # noqa: E731
        str(tiny_model), items, LAYER, ActivationStore(tmp / label), label, chunk_items=16, model=model))
    base_chunks = read("base", texts)
    norm = float(np.mean([np.linalg.norm(c.acts.astype(np.float32), axis=1).mean() for c in base_chunks]))
    u = np.random.default_rng(1).normal(size=base_chunks[0].acts.shape[1])
    v = norm * u / np.linalg.norm(u)
    with plant(model, v):
        planted_chunks = read("planted", texts)
    s = DictionarySettings(width=48, k=4, lr=3e-3, batch_tokens=128, tokens=30_000, buffer_tokens=4096,
                           checkpoint_every=1000, norm_batches=4)
    both = lambda: (c.acts for c in base_chunks + planted_chunks)  # noqa: E731
    sae = load_dictionary(train_dictionary(both, len(v), s, tmp / "dict"))
    return {"model": model, "sae": sae, "v": v, "texts": texts, "base": base_chunks, "planted": planted_chunks,
            "path": str(tiny_model)}


def _logprobs(p) -> np.ndarray:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(p["path"])
    ids = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                   return_dict=False) + tok(a, add_special_tokens=False).input_ids
           for q, a in p["texts"][:6]]
    with torch.no_grad():
        return np.stack([torch.log_softmax(p["model"](torch.tensor([x])).logits[0].double(), -1).numpy()[-4:]
                         for x in ids])


def test_diffing_ranks_the_latent_of_the_planted_vector_first(planted):
    n = len(planted["texts"])
    before = item_latents(planted["sae"], planted["base"], n)
    after = item_latents(planted["sae"], planted["planted"], n)
    rows = diff_rows(before, after, "planted", "planted", 200, 0)
    dec = torch.nn.functional.normalize(planted["sae"].W_dec.detach().float(), dim=1).numpy()
    closest = int(np.argmax(dec @ (planted["v"] / np.linalg.norm(planted["v"]))))
    assert int(rows.iloc[0]["latent"]) == closest and rows.iloc[0]["rank"] == 1
    assert rows.iloc[0]["ci_low"] > 0 and (rows["ci_low"] <= rows["change"]).all()
    assert (rows["change"] <= rows["ci_high"]).all()


def test_ablating_that_latent_moves_the_variant_back_and_a_matched_random_latent_does_not(planted):
    n = len(planted["texts"])
    before = item_latents(planted["sae"], planted["base"], n)
    after = item_latents(planted["sae"], planted["planted"], n)
    top = int(diff_rows(before, after, "planted", "planted", 0, 0).iloc[0]["latent"])
    firing = np.concatenate([before.firing, after.firing]).mean(0)
    random = matched_controls(firing, [top], 3, seed=0)
    base = _logprobs(planted)
    with plant(planted["model"], planted["v"]):
        moved = np.abs(_logprobs(planted) - base).mean()
        with ablate_latents(planted["model"], planted["sae"], LAYER, [top]):
            restored = np.abs(_logprobs(planted) - base).mean()
        controls = []
        for ctrl in random:
            with ablate_latents(planted["model"], planted["sae"], LAYER, ctrl):
                controls.append(np.abs(_logprobs(planted) - base).mean())
    assert moved > 0.05  # the planted variant differs from the base
    assert restored < 0.7 * moved, (moved, restored)  # seeds 1-5 here: 0.18-0.54 of the change is left
    assert min(controls) > 0.95 * moved, (moved, restored, controls)  # here: none below 0.998


def test_matched_controls_are_distinct_live_latents_of_the_nearest_firing_rates():
    firing = np.r_[0.5, 0.0, np.linspace(0.01, 0.3, 30)]
    sets = matched_controls(firing, [0, 5], sets=3, seed=0, pool=4)
    flat = [x for s in sets for x in s]
    assert len(sets) == 3 and all(len(s) == 2 for s in sets) and len(set(flat)) == 6
    assert not {0, 5, 1} & set(flat)  # never a selected latent, never a dead one
    near_0 = sorted(range(2, 32), key=lambda i: abs(np.log(firing[i]) - np.log(0.5)))[:6]
    assert {s[0] for s in sets} <= set(near_0)  # drawn among the nearest rates (pool 4, widened by draws)
    assert sets == matched_controls(firing, [0, 5], sets=3, seed=0, pool=4)  # seeded
