"""Sparse dictionaries trained through SAELens: planted directions are found, the saved folder loads in SAELens and
reconstructs the same activations, and a run killed with SIGKILL resumes to the dictionary an uninterrupted run
makes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sae_lens")

import torch  # noqa: E402

from emwb.models.dictionary import (  # noqa: E402
    DictionarySettings,
    batch_stream,
    dictionary_stats,
    load_dictionary,
    train_dictionary,
)

D, PLANTED = 32, 8


def planted(seed: int = 0, chunks: int = 20, rows: int = 2000):
    """(directions [8, 32], chunks()): each token is a sparse sum of known unit directions plus noise."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(PLANTED, D))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def make():
        g = np.random.default_rng(seed + 1)
        for _ in range(chunks):
            on = (g.random((rows, PLANTED)) < 0.1) * (1 + 2 * g.random((rows, PLANTED)))
            yield (on @ dirs + 0.05 * g.normal(size=(rows, D))).astype(np.float16)

    return dirs, make


SMALL = DictionarySettings(width=32, k=4, lr=3e-3, batch_tokens=256, tokens=40_000, buffer_tokens=8192,
                           checkpoint_every=20, norm_batches=5)


def test_planted_directions_each_have_a_latent(tmp_path):
    dirs, chunks = planted()
    sae = load_dictionary(train_dictionary(chunks, D, SMALL, tmp_path / "dict"))
    dec = torch.nn.functional.normalize(sae.W_dec.detach().float(), dim=1).numpy()
    best = (dec @ dirs.T).max(axis=0)
    assert (best >= 0.9).all(), best
    stats = dictionary_stats(sae, chunks())
    assert stats.tokens == 40_000 and 0 <= stats.fvu < 1 and 0 < stats.l0 <= 4 and 0 <= stats.dead_share <= 1


def test_saved_folder_loads_in_saelens_and_reconstructs_the_same(tmp_path):
    from sae_lens import SAE

    _, chunks = planted()
    folder = train_dictionary(chunks, D, SMALL, tmp_path / "dict")
    ours, theirs = load_dictionary(folder), SAE.load_from_disk(str(folder))
    x = torch.from_numpy(next(chunks()).astype(np.float32))
    assert type(theirs).__name__ == "TopKSAE"
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=0, atol=1e-6)
        err = float(((theirs(x) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert err == pytest.approx(dictionary_stats(ours, [x.numpy()]).fvu, rel=1e-4)


def test_the_stream_is_the_same_on_every_pass_and_shuffled():
    _, chunks = planted(chunks=3, rows=1000)
    a, b = batch_stream(chunks, SMALL), batch_stream(chunks, SMALL)
    first = [next(a) for _ in range(20)]
    assert all(np.array_equal(x, next(b)) for x in first)
    assert all(x.shape == (256, D) for x in first)
    assert not np.array_equal(first[0], np.concatenate(list(chunks()))[:256].astype(np.float32))


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_features_dictionary import D, planted
from emwb.models.dictionary import DictionarySettings, train_dictionary
s = DictionarySettings(width=32, k=4, lr=3e-3, batch_tokens=256, tokens=200_000, buffer_tokens=8192,
                       checkpoint_every=40, norm_batches=5)
train_dictionary(planted()[1], D, s, {folder!r})
"""


def _train(folder: Path) -> subprocess.Popen:
    code = textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent), folder=str(folder)))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=os.environ.copy())


def test_kill_9_during_training_resumes_to_the_same_dictionary(tmp_path):
    ref = _train(tmp_path / "ref")
    killed = _train(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while not list((tmp_path / "killed" / "checkpoints").glob("step-*/done")):
        assert killed.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere past the checkpoint
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "sae").exists()
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-2000:]
    resumed = _train(tmp_path / "killed")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    a, b = load_dictionary(tmp_path / "ref" / "sae"), load_dictionary(tmp_path / "killed" / "sae")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-4, atol=1e-5)
