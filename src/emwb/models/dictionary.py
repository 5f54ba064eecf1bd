"""Sparse dictionaries (SAEs) trained with SAELens on a stream of activation batches, resumable after kill -9.

SAELens does the modelling: its TopK or JumpReLU training SAE, its `SAETrainer` driven step by step through the
seams it documents for external coordinators (`step`, `maybe_reset_sparsity`, `save_trainer_state` /
`load_trainer_state`), its activation scaler, and its file format: the finished dictionary is saved with
`save_inference_model`, so `sae_lens.SAE.load_from_disk(folder)` (and tools that read SAELens folders) load it.
What emwb adds: a deterministic batch stream (a seeded shuffle of the chunks), a checkpoint every
`checkpoint_every` steps written to a temporary folder and renamed into place, and a resume that skips the
stream to where the checkpoint stopped, so a killed run ends with the dictionary an uninterrupted one makes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emwb.errors import EmwbError

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class DictionarySettings:
    """How a dictionary is trained (the `features:` block's defaults live here)."""

    architecture: str = "topk"    # topk | jumprelu
    width: int = 4096             # latents
    k: int = 32                   # topk: latents active per token
    l0_coefficient: float = 1.0   # jumprelu: the L0 penalty
    lr: float = 3e-4
    batch_tokens: int = 4096
    tokens: int = 1_000_000       # training tokens (the stream is passed over again as needed)
    seed: int = 0
    buffer_tokens: int = 65536    # tokens shuffled together
    checkpoint_every: int = 25    # steps
    norm_batches: int = 20        # batches that estimate the activation scale


def batch_stream(chunks: Callable[[], Iterable[np.ndarray]], s: DictionarySettings) -> Iterator[np.ndarray]:
    """float32 batches of `s.batch_tokens` rows, forever: consecutive chunks pooled into buffers of
    `s.buffer_tokens` rows, each shuffled by a generator seeded with (seed, pass, buffer): the same stream on every
    call."""
    rest = np.zeros((0, 0), np.float32)
    for n_pass in range(1 << 30):
        pool, size, b, any_rows = [], 0, 0, False
        for acts in chunks():
            if len(acts):
                any_rows = True
                pool.append(np.asarray(acts, np.float32))
                size += len(acts)
            if size >= s.buffer_tokens:
                rest = yield from _emit(np.concatenate(pool), rest, s, n_pass, b)
                pool, size, b = [], 0, b + 1
        if pool:
            rest = yield from _emit(np.concatenate(pool), rest, s, n_pass, b)
        if not any_rows:
            raise EmwbError("the token stream is empty: no activations to train a dictionary on")


def _emit(buf: np.ndarray, rest: np.ndarray, s: DictionarySettings, n_pass: int, b: int):
    rng = np.random.default_rng([s.seed, n_pass, b])
    buf = buf[rng.permutation(len(buf))]
    if len(rest):
        buf = np.concatenate([rest, buf])
    n = len(buf) // s.batch_tokens * s.batch_tokens
    for i in range(0, n, s.batch_tokens):
        yield buf[i:i + s.batch_tokens]
    return buf[n:]


def make_sae(d_in: int, s: DictionarySettings):
    """A fresh SAELens training SAE (seeded)."""
    import torch
    from sae_lens import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig

    torch.manual_seed(s.seed)
    if s.architecture == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=s.width, k=s.k,
                                                     normalize_activations="expected_average_only_in"))
    if s.architecture == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=s.width, l0_coefficient=s.l0_coefficient,
                                                             normalize_activations="expected_average_only_in"))
    raise EmwbError(f"features.architecture {s.architecture!r}: topk or jumprelu")


def _trainer(sae, s: DictionarySettings, stream: Iterator):
    import torch
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    total = s.tokens // s.batch_tokens * s.batch_tokens
    cfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=s.batch_tokens, lr=s.lr,
                           lr_end=s.lr, device="cpu", logger=LoggingConfig(log_to_wandb=False),
                           dead_feature_window=max(1, total // s.batch_tokens // 4),
                           feature_sampling_window=max(1, total // s.batch_tokens))
    torch.manual_seed(s.seed)
    return SAETrainer(cfg, sae, stream)


def _latest(folder: Path) -> Path | None:
    done = sorted((p for p in (folder / CHECKPOINTS).glob("step-*") if (p / "done").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def _checkpoint(trainer, folder: Path) -> None:
    """The SAE and the trainer's state, in a temporary folder renamed into place; older checkpoints removed."""
    root = folder / CHECKPOINTS
    final = root / f"step-{trainer.n_training_steps:07d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.sae.save_model(str(tmp))
    trainer.save_trainer_state(tmp)
    (tmp / "done").write_text("ok")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def train_dictionary(chunks: Callable[[], Iterable[np.ndarray]], d_in: int, s: DictionarySettings,
                     folder: str | Path) -> Path:
    """Train (or resume) a dictionary on the activation stream `chunks()`; the SAELens folder of the result."""
    import torch
    from tqdm import tqdm

    folder = Path(folder)
    out, wanted = folder / "sae", json.dumps(asdict(s), indent=1)
    _same_settings(folder, wanted)
    if (out / "cfg.json").is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(wanted)
    sae, ckpt = make_sae(d_in, s), _latest(folder)
    stream = map(torch.from_numpy, batch_stream(chunks, s))
    trainer = _trainer(sae, s, stream)
    if ckpt is not None:  # resume: the checkpoint's weights and state, the stream skipped to where it stopped
        sae.load_state_dict(_weights(ckpt))
        trainer.load_trainer_state(ckpt)
        for _ in range(trainer.n_training_samples // s.batch_tokens):
            next(stream)
    else:
        trainer.activation_scaler.estimate_scaling_factor(d_in, map(torch.from_numpy, batch_stream(chunks, s)),
                                                          s.norm_batches)
    steps = trainer.cfg.total_training_steps
    with tqdm(total=steps, initial=trainer.n_training_steps, desc="dictionary", mininterval=1.0) as bar:
        while trainer.n_training_steps < steps:
            trainer.maybe_reset_sparsity()
            trainer.step(next(stream))
            trainer.n_training_steps += 1
            bar.update(1)
            if trainer.n_training_steps % s.checkpoint_every == 0 and trainer.n_training_steps < steps:
                _checkpoint(trainer, folder)
    if trainer.activation_scaler.scaling_factor is not None:  # the saved dictionary reads raw activations
        sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    tmp = folder / ".tmp-sae"
    shutil.rmtree(tmp, ignore_errors=True)
    sae.save_inference_model(str(tmp))
    tmp.rename(out)
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
    return out


def _same_settings(folder: Path, wanted: str) -> None:
    path = folder / "settings.json"
    if path.is_file() and path.read_text() != wanted:
        raise EmwbError(f"{path}: this folder holds a dictionary trained with other settings; use another folder "
                        "or delete it")


@dataclass(frozen=True)
class DictionaryStats:
    """How well a dictionary reconstructs a token stream."""

    tokens: int
    fvu: float               # fraction of variance unexplained (1 - explained variance)
    explained_variance: float
    l0: float                # mean latents active per token
    dead_share: float        # latents that never fired on these tokens
    mean_norm: float = float("nan")  # mean L2 norm of the activations (the unit of steering strengths)


def stream_measures(sae, chunks: Iterable[np.ndarray], max_tokens: int | None = None
                    ) -> tuple[DictionaryStats, np.ndarray]:
    """(reconstruction and sparsity over the stream's tokens (the first `max_tokens`), each latent's firing rate:
    the share of tokens it is active on), in one streamed pass."""
    import torch

    n, sq_err, sum_x, sum_x2, l0, norm = 0, 0.0, None, None, 0.0, 0.0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    with torch.no_grad():
        for acts in chunks:
            x = torch.from_numpy(np.asarray(acts, np.float32))[: None if max_tokens is None else max_tokens - n]
            if not len(x):
                break
            z = sae.encode(x)
            sq_err += float(((sae.decode(z) - x) ** 2).sum())
            sum_x = x.sum(0) if sum_x is None else sum_x + x.sum(0)
            sum_x2 = (x ** 2).sum(0) if sum_x2 is None else sum_x2 + (x ** 2).sum(0)
            l0 += float((z > 0).sum())
            fired += (z > 0).sum(0).double()
            norm += float(x.norm(dim=1).sum())
            n += len(x)
    if not n:
        raise EmwbError("the token stream is empty: no activations to measure the dictionary on")
    total_var = float((sum_x2 - sum_x ** 2 / n).sum())
    fvu = sq_err / total_var if total_var > 0 else float("nan")
    rate = (fired / n).numpy()
    return DictionaryStats(n, fvu, 1 - fvu, l0 / n, float((rate == 0).mean()), norm / n), rate


def dictionary_stats(sae, chunks: Iterable[np.ndarray], max_tokens: int | None = None) -> DictionaryStats:
    """Reconstruction and sparsity over the stream's tokens (the first `max_tokens`), in one streamed pass."""
    return stream_measures(sae, chunks, max_tokens)[0]


@dataclass(frozen=True)
class ItemLatents:
    """Per text: each latent's mean activation over its tokens, the share of its tokens each fires on, and the mean
    residual (None unless asked for)."""

    mean: np.ndarray          # float32 [texts, latents]
    firing: np.ndarray        # float32 [texts, latents]
    resid: np.ndarray | None  # float32 [texts, hidden]


def item_latents(sae, chunks, n_items: int, resid: bool = False) -> ItemLatents:
    """`ItemLatents` of the token chunks (`TokenChunk`s: activations and each token's text index)."""
    import torch

    width = sae.cfg.d_sae
    z_sum, f_sum, count = torch.zeros(n_items, width), torch.zeros(n_items, width), torch.zeros(n_items)
    x_sum = None
    with torch.no_grad():
        for c in chunks:
            x, idx = torch.from_numpy(c.acts.astype(np.float32)), torch.from_numpy(c.items.astype(np.int64))
            z = sae.encode(x)
            z_sum.index_add_(0, idx, z)
            f_sum.index_add_(0, idx, (z > 0).float())
            count.index_add_(0, idx, torch.ones(len(idx)))
            if resid:
                x_sum = torch.zeros(n_items, x.shape[1]) if x_sum is None else x_sum
                x_sum.index_add_(0, idx, x)
    n = count.clamp(min=1).unsqueeze(1)
    return ItemLatents((z_sum / n).numpy(), (f_sum / n).numpy(), None if x_sum is None else (x_sum / n).numpy())


def _weights(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(ckpt / "sae_weights.safetensors"))


def load_dictionary(folder: str | Path):
    """A SAELens SAE from a SAELens-format folder (emwb's or anyone's)."""
    from sae_lens import SAE

    folder = Path(folder)
    if not (folder / "cfg.json").is_file():
        raise EmwbError(f"{folder}: not a SAELens dictionary (no cfg.json); train one or point to a SAELens folder")
    return SAE.load_from_disk(str(folder))
