"""Stage `features`: each entry of the experiment's `features:` block, in two artifacts.

`features/<name>/dictionary/`: a sparse dictionary on the base model's residual stream after block `layer`, over the
entry's token stream (trained with SAELens, `emwb.models.dictionary`, or loaded from a SAELens folder), with its
explained variance, L0, dead share, mean residual norm and each latent's firing rate on the stream. Keyed by the base
model, the stream and the settings: changing an organism never retrains it.

`features/<name>/latents/`: every organism variant (each evaluated phase and kept checkpoint) diffed against the
base model on the same texts (`feature_diff.csv`), the selected latents with their matched random controls
(`latents.json`; the first selected latent's decoder column also as a direction, `directions.npz`, which steering
and ablations of the mechanisms block can name), the selector's tables and the feature cards (`cards.json`).

Per-token activations are saved in chunks under `.partial/features/<name>/`, and dictionary training checkpoints
there, so a stage killed while reading or training resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from emwb.catalog.latent_selectors import LATENT_SELECTORS, SelectorInput
from emwb.catalog.token_streams import stream_identity, stream_texts
from emwb.errors import EmwbError
from emwb.features.cards import cards
from emwb.features.diffing import diff_rows, matched_controls
from emwb.layout import (
    DIRECTIONS_FILE,
    LATENTS_FILE,
    SAE_FOLDER,
    adapter_dir,
    base_key,
    base_model_path,
    dictionary_dir,
    finished_key,
    latents_dir,
    model_ref,
    partial_dir,
)
from emwb.models.activations import ActivationStore
from emwb.models.dictionary import item_latents, load_dictionary, stream_measures, train_dictionary
from emwb.models.token_activations import CHUNK_ITEMS, stream_token_activations
from emwb.stages import FINETUNE, Produced
from emwb.store import Artifact, file_sha256, log, now

if TYPE_CHECKING:
    from emwb.context import StageContext

STATS_FILE, FIRING_FILE, DIFF_FILE, CARDS_FILE = "stats.json", "firing.npy", "feature_diff.csv", "cards.json"


class Reader:
    """Texts read by a model at the entry's layer, per token, saved in chunks under `.partial/features/<name>/`."""

    def __init__(self, ctx: StageContext, f):
        from emwb.models.loading import resolve_device

        self.ctx, self.f, self.device = ctx, f, resolve_device(ctx.settings.device)
        self.base = base_model_path(ctx.run)

    def chunks(self, texts: list, label: str, fingerprint: str, model=None, max_tokens: int | None = None):
        store = ActivationStore(partial_dir(self.ctx.run, "features", self.f.name, label))
        return stream_token_activations(self.base, texts, self.f.layer, store, fingerprint,
                                        max_tokens or self.f.stream.max_tokens, CHUNK_ITEMS,
                                        self.ctx.settings.judge_batch_size, self.device, model)

    def latents(self, sae, texts: list, label: str, fingerprint: str, model=None, max_tokens: int | None = None):
        """Each text's mean latent activations and firing shares (`ItemLatents`)."""
        from tqdm import tqdm

        chunks = tqdm(self.chunks(texts, label, fingerprint, model, max_tokens), desc=f"features/{self.f.name}/{label}",
                      unit="chunk", mininterval=2.0)
        return item_latents(sae, chunks, len(texts))


def _check_layer(run, f) -> None:
    config = Path(base_model_path(run)) / "config.json"
    n = json.loads(config.read_text()).get("num_hidden_layers") if config.is_file() else None
    if n is not None and f.layer >= n:
        raise EmwbError(f"features {f.name}: layer {f.layer}, but the base model has {n} decoder blocks "
                        f"(0-{n - 1}); pick one of them")


def _load_identity(folder: str) -> dict:
    p = Path(folder)
    if not (p / "cfg.json").is_file():
        raise EmwbError(f"{p}: not a SAELens dictionary (no cfg.json); fix features.load")
    return {q.name: file_sha256(q) for q in sorted(p.iterdir()) if q.is_file()}


def run_dictionary(ctx: StageContext, f) -> str:
    """The entry's dictionary artifact (trained or loaded, measured on its stream); its key."""
    run, seed = ctx.run, ctx.exp.data_seed
    config = {"layer": f.layer, "stream": f.stream.model_dump(mode="json"), "seed": seed,
              **({"load": _load_identity(f.load)} if f.load else {"dictionary": f.dictionary.model_dump()})}
    inputs = {"base": base_key(run), **stream_identity(f.stream, run)}
    art = Artifact(dictionary_dir(run, f.name), "features-dictionary", config, inputs)
    if art.skip(ctx.force, f"features/{f.name}/dictionary"):
        return art.key
    art.started = now()
    _check_layer(run, f)
    texts, reader = stream_texts(f.stream, run, seed), Reader(ctx, f)
    from tqdm import tqdm

    start, tokens, d_in = time.monotonic(), 0, 0
    chunks = tqdm(reader.chunks(texts, "stream", inputs["base"]), total=-(-len(texts) // CHUNK_ITEMS), unit="chunk",
                  desc=f"features/{f.name}: stream at layer {f.layer}", mininterval=2.0)
    for c in chunks:  # the first pass reads the model; later passes read the saved chunks
        tokens, d_in = tokens + len(c.acts), c.acts.shape[1]
    read_s, start = time.monotonic() - start, time.monotonic()
    if f.load:
        folder = f.load
    else:  # checkpoints of this artifact's key only: a changed stream or setting never resumes an old training
        scratch = partial_dir(run, "features", f.name, f"dictionary-{art.key[:16]}")
        for old in scratch.parent.glob("dictionary-*"):
            if old != scratch:
                shutil.rmtree(old, ignore_errors=True)
        folder = train_dictionary(lambda: (c.acts for c in reader.chunks(texts, "stream", inputs["base"])), d_in,
                                  f.dictionary.settings(seed), scratch)
    train_s = time.monotonic() - start
    sae = load_dictionary(folder)
    if sae.cfg.d_in != d_in:
        raise EmwbError(f"features {f.name}: the dictionary reads {sae.cfg.d_in} dimensions, the base model's residual "
                        f"stream has {d_in}")
    stats, firing = stream_measures(sae, (c.acts for c in reader.chunks(texts, "stream", inputs["base"])))
    trained = 0 if f.load else f.dictionary.tokens // f.dictionary.batch_tokens * f.dictionary.batch_tokens
    summary = {**asdict(stats), "texts": len(texts), "stream_tokens": tokens, "tokens_trained": trained,
               "width": int(sae.cfg.d_sae), "layer": f.layer, "loaded": bool(f.load), "read_s": round(read_s, 1),
               "train_s": round(train_s, 1), "train_tokens_per_s": round(trained / max(train_s, 1e-9), 1)}
    with art.write() as (tmp, extra):
        shutil.copytree(folder, tmp / SAE_FOLDER)
        np.save(tmp / FIRING_FILE, firing.astype(np.float32))
        (tmp / STATS_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        extra.update(stats=summary)
    shutil.rmtree(partial_dir(run, "features", f.name, f"dictionary-{art.key[:16]}"), ignore_errors=True)
    log(f"features/{f.name}: {'loaded' if f.load else 'trained'} a {summary['width']}-latent dictionary at layer "
        f"{f.layer} ({tokens} stream tokens, {trained} trained on): explained variance "
        f"{stats.explained_variance:.3f}, L0 {stats.l0:.1f}, dead {stats.dead_share:.1%}")
    return art.key


def rank_variant(ctx: StageContext, f) -> str | None:
    """The variant `select: diff` ranks: `rank_on`, else the last evaluated organism variant (a phase's end)."""
    if f.rank_on:
        return f.rank_on
    ends = [v.id for v in ctx.plan.variants if v.edit is None and v.organism is not None and v.step is None]
    return ends[-1] if ends else None


def _organisms(ctx: StageContext) -> list:
    return [v for v in ctx.plan.variants if v.edit is None and v.organism is not None]


def _model_key(run, v) -> str:
    key = finished_key(adapter_dir(run, v.organism, v.phase_index, v.seed), f"adapter of {v.id}", FINETUNE, run)
    return key + ("" if v.step is None else f"@{v.step}")


def run_latents(ctx: StageContext, f, dkey: str) -> str:
    """The entry's latents artifact (diffing, selection, controls, cards); its key."""
    run, seed = ctx.run, ctx.exp.data_seed
    diff_stream = f.diff.stream or f.stream
    organisms = _organisms(ctx)
    selector = LATENT_SELECTORS.get(f.select, f"features {f.name}: select: ")
    config = {"diff": f.diff.model_dump(mode="json"), "select": f.select, "selector_version": selector.version,
              "rank_on": rank_variant(ctx, f), "top": f.top, "controls": f.controls, "cards": f.cards,
              "options": f.options, "seed": seed}
    inputs = {"dictionary": dkey, **stream_identity(diff_stream, run),
              **{f"model:{v.id}": _model_key(run, v) for v in organisms}}
    art = Artifact(latents_dir(run, f.name), "features-latents", config, inputs)
    if art.skip(ctx.force, f"features/{f.name}/latents"):
        return art.key
    art.started = now()
    from emwb.models.loading import load_ref

    folder = dictionary_dir(run, f.name)
    sae, reader = load_dictionary(folder / SAE_FOLDER), Reader(ctx, f)
    firing = np.load(folder / FIRING_FILE)
    texts = stream_texts(diff_stream, run, seed)
    texts = [texts[i] for i in sorted(np.random.default_rng(seed).permutation(len(texts))[: f.diff.max_items])]
    before = reader.latents(sae, texts, "diff-base", base_key(run), max_tokens=diff_stream.max_tokens)
    frames = []
    for v in organisms:
        model, _ = load_ref(model_ref(run, v), reader.device)
        after = reader.latents(sae, texts, f"diff-{v.id}", inputs[f"model:{v.id}"], model=model,
                               max_tokens=diff_stream.max_tokens)
        frames.append(diff_rows(before, after, v.id, v.group, f.diff.n_boot, seed))
        del model
    diff = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["variant", "latent", "change"])
    base_fp = base_key(run)
    got = selector.select(SelectorInput(f, run, sae, lambda t, label: reader.latents(sae, t, label, base_fp), diff,
                                        firing, config["rank_on"]))
    selected = got.latents[: f.top]
    controls = matched_controls(firing, selected, f.controls, seed)
    shown = _card_latents(selected, diff, config["rank_on"], f.cards)
    made = _make_cards(ctx, f, sae, reader, firing, shown, base_fp) if shown else []
    with art.write() as (tmp, extra):
        diff.to_csv(tmp / DIFF_FILE, index=False)
        for name, table in got.tables.items():
            table.to_csv(tmp / name, index=False)
        chosen = {"layer": f.layer, "selected": selected, "controls": controls, "select": f.select, "how": got.how,
                  "firing_rate": {str(j): float(firing[j]) for j in {*selected, *sum(controls, [])}}}
        (tmp / LATENTS_FILE).write_text(json.dumps(chosen, indent=1) + "\n")
        (tmp / CARDS_FILE).write_text(json.dumps(made, indent=1, ensure_ascii=False) + "\n")
        _as_direction(tmp / DIRECTIONS_FILE, sae, f.layer, selected, controls, folder)
        extra.update(selected=selected, controls=controls, variants=len(organisms), texts=len(texts))
    log(f"features/{f.name}: {len(organisms)} variants diffed on {len(texts)} texts; selected latents {selected} "
        f"({got.how}); {len(controls)} matched random sets")
    return art.key


def _card_latents(selected: list[int], diff: pd.DataFrame, rank_on: str | None, n: int) -> list[int]:
    rising = diff[diff["variant"] == rank_on]["latent"].astype(int).tolist() if len(diff) else []
    return list(dict.fromkeys([*selected, *rising]))[:n]


def _make_cards(ctx: StageContext, f, sae, reader: Reader, firing: np.ndarray, latents: list[int], fp: str) -> list:
    from emwb.models.loading import load_tokenizer

    texts = stream_texts(f.stream, ctx.run, ctx.exp.data_seed)
    return cards(sae, reader.chunks(texts, "stream", fp), latents, texts, load_tokenizer(reader.base),
                 f.stream.max_tokens, firing)


def _as_direction(path, sae, layer: int, selected: list[int], controls: list[list[int]], folder) -> None:
    """The first selected latent's decoder column as a direction file (random<k>: the k-th control set's first)."""
    dec = sae.W_dec.detach().float().numpy()
    norm = json.loads((folder / STATS_FILE).read_text())["mean_norm"]
    arrays = {f"direction.{layer}": dec[selected[0]], f"norm.{layer}": np.array(norm)}
    for k, ctrl in enumerate(controls, 1):
        arrays[f"random{k}.{layer}"] = dec[ctrl[0]] / np.linalg.norm(dec[ctrl[0]])
    np.savez(path, **arrays)


def run_features_stage(ctx: StageContext) -> dict[str, str]:
    """Every features entry that is not current: its dictionary, then its latents; {name: latents key}."""
    keys = {}
    for f in ctx.exp.features:
        keys[f.name] = run_latents(ctx, f, run_dictionary(ctx, f))
    return keys


def produced(ctx: StageContext) -> list[Produced]:
    """Each entry's dictionary and latents, with the activation chunks a killed reading saved."""
    out = []
    for f in ctx.exp.features:
        saved = len(list(partial_dir(ctx.run, "features", f.name).rglob("*.npy")))
        progress = f"{saved} activation chunks saved" if saved else ""
        out += [Produced(f"{f.name}/dictionary", dictionary_dir(ctx.run, f.name), progress),
                Produced(f"{f.name}/latents", latents_dir(ctx.run, f.name), progress)]
    return out
