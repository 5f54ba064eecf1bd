"""The report's features section: each dictionary's quality, model diffing (`report/feature_diff.csv`, the largest
rises per variant with CIs and a figure) and a card per chosen latent: its firing rate, its decoder column's
cosine with the run's directions at its layer, and the texts it fires on most with each token's activation."""

from __future__ import annotations

import html
import json

import numpy as np
import pandas as pd

from emwb.analysis.sections import REPORT_SECTIONS, Section, SectionOutput
from emwb.analysis.tables import write_plain_table
from emwb.layout import DIRECTIONS_FILE, LATENTS_FILE, SAE_FOLDER, dictionary_dir, directions_dir, latents_dir

STATS = ("texts", "stream_tokens", "tokens_trained", "width", "explained_variance", "fvu", "l0", "dead_share",
         "train_tokens_per_s")


def _finished(ctx) -> list:
    return [f for f in ctx.run.exp.features if (latents_dir(ctx.run, f.name) / LATENTS_FILE).is_file()]


def stats_rows(ctx, features: list) -> pd.DataFrame:
    rows = []
    for f in features:
        s = json.loads((dictionary_dir(ctx.run, f.name) / "stats.json").read_text())
        rows.append({"features": f.name, "layer": f.layer, **{k: s.get(k) for k in STATS}})
    return pd.DataFrame(rows)


def diff_frame(ctx, features: list) -> pd.DataFrame:
    frames = [pd.read_csv(latents_dir(ctx.run, f.name) / "feature_diff.csv").assign(features=f.name) for f in features]
    frames = [d for d in frames if len(d)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _plot_diff(top: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(top) + 1.5))
    y = top["change"].to_numpy(float)
    err = np.nan_to_num(np.vstack([y - top["ci_low"].to_numpy(float), top["ci_high"].to_numpy(float) - y]))
    ax.barh(range(len(top)), y, xerr=np.clip(err, 0, None), color="#c33", capsize=2)
    ax.set_yticks(range(len(top)), [f"{r.variant}: {r.features} latent {r.latent}" for r in top.itertuples()],
                  fontsize=7)
    ax.axvline(0, color="black", lw=0.6)
    ax.invert_yaxis()
    ax.set(xlabel="change of mean activation over the base model (95% CI over texts)",
           title="Model diffing: the latents that rose most, per variant")
    return _save(fig, out, "feature_diff")[0]


def direction_cosines(ctx, f, dec: np.ndarray) -> dict[str, float]:
    """{direction name: cosine with the decoder column} for the run's directions at the entry's layer."""
    from emwb.models.interventions import read_direction

    out = {}
    for d in ctx.run.exp.mechanisms.directions:
        path = directions_dir(ctx.run, d.name) / DIRECTIONS_FILE
        if f.layer in d.layers and path.is_file():
            v = read_direction(path)[f"direction.{f.layer}"]
            out[d.name] = float(v @ dec / (np.linalg.norm(v) * np.linalg.norm(dec)))
    return out


def _context_html(c: dict) -> str:
    top = max(c["acts"]) or 1.0
    spans = "".join(f"<span style='background: rgba(204, 51, 51, {max(0.0, a) / top:.2f})' title='{a:.3g}'>"
                    f"{html.escape(t)}</span>" for t, a in zip(c["tokens"], c["acts"]))
    prompt = f"<div class='note'>after: {html.escape(c['prompt'])}</div>" if c["prompt"] else ""
    return f"{prompt}<div class='answer'>{spans}</div>"


def card_html(ctx, f, card: dict, dec: np.ndarray, chosen: dict) -> str:
    role = ("selected" if card["latent"] in chosen["selected"] else
            "a matched control" if any(card["latent"] in c for c in chosen["controls"]) else "a large rise")
    cos = direction_cosines(ctx, f, dec[card["latent"]])
    cos_text = "; ".join(f"{n} {v:+.3f}" for n, v in cos.items()) or "no direction of the run at this layer"
    contexts = "".join(_context_html(c) for c in card["contexts"]) or "<p class='note'>It never fired on the stream.</p>"
    return (f"<h4>{html.escape(f.name)}: latent {card['latent']} ({role})</h4><p class='note'>Fires on "
            f"{100 * card['firing_rate']:.2f}% of the stream's tokens. Decoder cosine with the run's directions at "
            f"layer {f.layer}: {html.escape(cos_text)}. Its strongest contexts (shade: activation on each token):</p>"
            f"{contexts}")


def features_section(ctx) -> SectionOutput:
    """Dictionaries, model diffing and feature cards (the features block)."""
    from emwb.models.dictionary import load_dictionary

    features = _finished(ctx)
    out = SectionOutput()
    if not features:
        return out
    caption = "Sparse dictionaries: reconstruction and sparsity on their streams"
    out.tables.append((caption, write_plain_table(stats_rows(ctx, features), ctx.out, "features_stats", caption, ())))
    diff = diff_frame(ctx, features)
    if len(diff):
        diff.to_csv(ctx.out / "feature_diff.csv", index=False)
        top = diff[diff["rank"] <= 5]
        out.tables.append(("Model diffing: the 5 latents that rose most per variant",
                           top[["features", "variant", "rank", "latent", "mean_before", "mean_after", "change",
                                "ci_low", "ci_high", "firing_before", "firing_after"]].reset_index(drop=True)))
        out.figures.append(("Model diffing: the latents that rose most per variant (95% CI over texts)",
                            _plot_diff(top.reset_index(drop=True), ctx.out)))
    for f in features:
        folder = latents_dir(ctx.run, f.name)
        chosen = json.loads((folder / LATENTS_FILE).read_text())
        dec = load_dictionary(dictionary_dir(ctx.run, f.name) / SAE_FOLDER).W_dec.detach().float().numpy()
        made = json.loads((folder / "cards.json").read_text())
        ctx.notes.append(f"Features {f.name} (layer {f.layer}): selected latents {chosen['selected']} ({chosen['how']}); "
                         f"matched random controls {chosen['controls']}.")
        if made:
            out.details.append((f"Feature cards: {f.name} ({len(made)} latents)",
                                "".join(card_html(ctx, f, c, dec, chosen) for c in made)))
    return out


REPORT_SECTIONS.register("features", Section(features_section, "sparse dictionaries, model diffing and feature cards"))
