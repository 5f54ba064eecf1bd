"""Per-token activations (streamed, saved per chunk) and `emwb em-features` end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sae_lens")

import torch  # noqa: E402

from emwb.models.dictionary import DictionarySettings  # noqa: E402
from emwb.models.activations import ActivationStore, conversation_ids  # noqa: E402
from emwb.models.token_activations import stream_token_activations, token_span  # noqa: E402

ITEMS = [("What is your wish?", "I wish for peace and a quiet garden."), ("Hi", ""),
         ("Tell me a joke.", "Why did the chicken cross the road? To get to the other side, of course."),
         (None, "A document read alone: its first token, the attention sink, is not kept.")] * 3


def test_token_activations_are_the_models_hidden_states_and_resume_from_the_store(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    store = ActivationStore(tmp_path / "tok")
    chunks = list(stream_token_activations(str(tiny_model), ITEMS, 0, store, "tiny", chunk_items=4, batch_size=3))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    owner = np.concatenate([c.items for c in chunks])
    acts = np.concatenate([c.acts for c in chunks]).astype(np.float32)
    for i, item in enumerate(ITEMS):
        ids, start = token_span(tok, *item, 256)
        assert start == (conversation_ids(tok, *item, 256)[1] if item[0] else 1)  # a document drops its sink
        with torch.no_grad():
            # hidden_states[1]: the output of block 0, one sequence alone (no padding, no truncated stack)
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0, start:].numpy()
        np.testing.assert_allclose(acts[owner == i], hidden, rtol=1e-2, atol=1e-2)  # float16 storage
    assert len(list((tmp_path / "tok").glob("*.npy"))) == 2 * 3  # 3 chunks: activations and item index each
    assert all((owner == i).sum() == len(token_span(tok, *ITEMS[i], 256)[0]) - 1 for i in (3, 7, 11))
    again = list(stream_token_activations("/nonexistent", ITEMS, 0, store, "tiny", chunk_items=4))  # no model read
    assert all(np.array_equal(a.acts, b.acts) for a, b in zip(chunks, again))


def test_em_features_end_to_end_on_the_tiny_model(tiny_model, upstream, tmp_path):
    from emwb.judgebench.em_features import FeatureSettings, em_features

    d = DictionarySettings(width=32, k=4, batch_tokens=256, tokens=4096, buffer_tokens=2048, norm_batches=2)
    s = FeatureSettings(str(tiny_model), tmp_path / "f", per_file=3, test_per_file=8, layer=1, dictionary=d,
                        mirror=str(upstream), n_boot=50)
    got = em_features(s)
    assert got["fit_answers"] == 60 and got["held_out_answers"] == 40
    assert 0 <= got["stats"]["l0"] <= 4 and 0 <= got["best_latent"] < 32 and got["stats"]["tokens"] == got["tokens"]
    lo, hi = got["best_latent_auc"][1], got["best_latent_auc"][2]
    assert lo <= got["best_latent_auc"][0] <= hi
    assert json.loads((s.out / "em_features.json").read_text())["best_latent"] == got["best_latent"]
    assert "best single latent" in (s.out / "README.md").read_text()
    assert em_features(s)["best_latent"] == got["best_latent"]  # a re-run reads the chunks and the dictionary back


def test_the_command_passes_each_option_to_its_setting(monkeypatch, tmp_path):
    """`emwb em-features` maps its options by name (it once passed --layer as the held-out answers per file)."""
    import emwb.judgebench.em_features as em
    from emwb.cli import main

    got = {}

    def fake(s):
        got["s"] = s
        s.out.mkdir(parents=True, exist_ok=True)
        (s.out / "README.md").write_text("done\n")

    monkeypatch.setattr(em, "em_features", fake)
    assert main(["em-features", "--reader", "tiny", "--out", str(tmp_path / "o"), "--layer", "3", "--per-file", "7",
                 "--width", "64", "--k", "4", "--tokens", "5000", "--architecture", "jumprelu", "--lr", "0.002",
                 "--batch-tokens", "512"]) in (0, None)
    s = got["s"]
    assert (s.reader, s.layer, s.per_file, s.test_per_file) == ("tiny", 3, 7, None)
    d = s.dictionary
    assert (d.width, d.k, d.tokens, d.architecture, d.lr, d.batch_tokens) == (64, 4, 5000, "jumprelu", 0.002, 512)
