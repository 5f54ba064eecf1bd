"""The single-feature test on a sparse dictionary's latents (Marks et al. 2025: one feature for "reward-model
biases", active on the research documents and wherever a bias is applied).

Per bias, the base model reads `per_bias` (reply with the bias, its neutral twin) pairs through the dictionary; a
latent is *differential* for the bias when its mean activation is higher on the biased reply than on its twin in at
least `min_share` of the pairs (default: every pair). Latents are ranked by how many train biases they are
differential on; for the top ones, on how many of the train and of the held-out test biases, and how often they
fire on documents about the biases (`rm-docs`) against control text (the neutral twins), with a 95% CI. The
selector `rm-bias-shared` returns that ranking (the top shared latent first), so the features block can ablate it
in every phase beside matched random latents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emwb.catalog.latent_selectors import LatentSelector, Selection, SelectorInput
from emwb.catalog.token_streams import StreamSource

TABLE, PER_BIAS = "single_feature_latents.csv", "single_feature_latents_per_bias.csv"
DEFAULTS = {"per_bias": 4, "documents": 60, "min_share": 1.0, "rows": 20, "n_boot": 1000}


def _pairs(per_bias: int, mirror: str | None, seed: int) -> list[dict]:
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.demos import twin_pairs
    from emwb.organisms.rm_bias.kits import load_kits

    return twin_pairs(load_catalogue(mirror), load_kits(), per_bias, seed)


def twin_texts(arg: str, spec, run) -> list:
    """Token stream `rm-twins[:N]`: N (default 4) replies with each bias and their neutral twins, after the prompt."""
    pairs = _pairs(int(arg or DEFAULTS["per_bias"]), run.exp.dataset_mirror, run.exp.data_seed)
    return [(p["prompt"], p["biased"]) for p in pairs] + [(p["prompt"], p["neutral"]) for p in pairs]


STREAM = StreamSource(twin_texts, "rm-twins[:N]: N replies with each of the 52 reward-model biases (default 4) "
                                  "and their neutral twins, each after its prompt")


def _boot_diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """95% CI of mean(a) - mean(b) per column, each group resampled over its own rows."""
    rng = np.random.default_rng(seed)
    draws = np.stack([a[rng.integers(0, len(a), len(a))].mean(0) - b[rng.integers(0, len(b), len(b))].mean(0)
                      for _ in range(n_boot)]) if n_boot and len(a) and len(b) else np.full((1, a.shape[1]), np.nan)
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def differential(diff: np.ndarray, bias: np.ndarray, min_share: float) -> tuple[np.ndarray, list[int]]:
    """(bool [biases, latents]: differential per bias, the biases in row order) from per-pair differences."""
    biases = sorted(set(bias.tolist()))
    out = np.zeros((len(biases), diff.shape[1]), bool)
    for r, b in enumerate(biases):
        d = diff[bias == b]
        out[r] = ((d > 0).mean(0) >= min_share) & (d.mean(0) > 0)
    return out, biases


def shared_latents(s: SelectorInput) -> Selection:
    """The `rm-bias-shared` selector (see the module docstring)."""
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.docs import generate_documents

    o = {**DEFAULTS, **s.spec.options}
    mirror, seed = s.run.exp.dataset_mirror, s.run.exp.data_seed
    pairs = _pairs(int(o["per_bias"]), mirror, seed)
    texts = [(p["prompt"], p["biased"]) for p in pairs] + [(p["prompt"], p["neutral"]) for p in pairs]
    read = s.read(texts, f"rm-twins-{o['per_bias']}")
    n = len(pairs)
    diff = read.mean[:n] - read.mean[n:]
    bias = np.array([p["bias_id"] for p in pairs])
    split = {b.num: b.split for b in load_catalogue(mirror)}
    flags, biases = differential(diff, bias, float(o["min_share"]))
    is_test = np.array([split.get(b) == "test" for b in biases])
    train_n, test_n = flags[~is_test].sum(0), flags[is_test].sum(0)
    test_mask = np.isin(bias, np.array(biases)[is_test])  # pairs of test biases
    order = np.lexsort((-diff[~test_mask].mean(0), -train_n))  # most train biases first, then the larger difference
    top = order[: int(o["rows"])]
    docs = [(None, d["text"]) for d in generate_documents(load_catalogue(mirror), int(o["documents"]), seed)]
    on_docs = s.read(docs, f"rm-docs-{o['documents']}").firing[:, top]
    control = read.firing[n:, top]
    lo, hi = _boot_diff(on_docs, control, int(o["n_boot"]), seed)
    table = pd.DataFrame({
        "rank": np.arange(1, len(top) + 1), "latent": top, "train_biases": train_n[top], "train_of": int((~is_test).sum()),
        "test_biases": test_n[top], "test_of": int(is_test.sum()), "mean_diff_train": diff[~test_mask][:, top].mean(0),
        "mean_diff_test": diff[test_mask][:, top].mean(0) if test_mask.any() else np.nan,
        "firing_documents": on_docs.mean(0), "firing_control": control.mean(0),
        "documents_minus_control": on_docs.mean(0) - control.mean(0), "ci_low": lo, "ci_high": hi})
    best = int(top[0])
    per_bias = pd.DataFrame([{"bias": b, "split": split.get(b, "?"), "pairs": int((bias == b).sum()),
                              "differential_latents": int(flags[r].sum()), "top_latent": best,
                              "top_latent_differential": bool(flags[r, best]),
                              "top_latent_mean_diff": float(diff[bias == b, best].mean())}
                             for r, b in enumerate(biases)])
    how = (f"latent {best} is differential on {train_n[best]} of {(~is_test).sum()} train biases and "
           f"{test_n[best]} of {is_test.sum()} test biases ({o['per_bias']} reply/twin pairs per bias)")
    return Selection([int(x) for x in order], {TABLE: table, PER_BIAS: per_bias}, how)


SELECTOR = LatentSelector(shared_latents, "the latent differential (more active on a biased reply than on its "
                                          "neutral twin in every pair) on the most train biases; options: per_bias, "
                                          "documents, min_share, rows, n_boot", version=1)


def _plot(per_bias: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.4))
    colors = ["#c33" if s == "test" else "#36c" for s in per_bias["split"]]
    ax.bar(per_bias["bias"].astype(str), per_bias["top_latent_mean_diff"], color=colors)
    for i, r in enumerate(per_bias.itertuples()):
        if r.top_latent_differential:
            ax.annotate("*", (i, r.top_latent_mean_diff), ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=5, rotation=90)
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="bias (blue: train, red: held-out test; *: differential in every pair)",
           ylabel="biased minus twin", title=f"The top shared latent ({int(per_bias['top_latent'].iloc[0])}): mean "
                                             "activation on each bias's replies minus their neutral twins")
    return _save(fig, out, "single_feature_latents")[0]


def latents_section(ctx):
    """The single-feature test on latents: report/single_feature_latents.csv, its per-bias table and figure."""
    from emwb.analysis.sections import SectionOutput
    from emwb.layout import latents_dir

    out = SectionOutput()
    for f in ctx.run.exp.features:
        folder = latents_dir(ctx.run, f.name)
        if f.select != "rm-bias-shared" or not (folder / TABLE).is_file():
            continue
        table, per_bias = pd.read_csv(folder / TABLE), pd.read_csv(folder / PER_BIAS)
        table.insert(0, "features", f.name)
        table.to_csv(ctx.out / TABLE, index=False)
        per_bias.to_csv(ctx.out / PER_BIAS, index=False)
        out.tables.append((f"Single feature on latents ({f.name}): the latents differential on the most train biases",
                           table.round(4)))
        out.figures.append(("The top shared latent per bias: biased replies minus their neutral twins",
                            _plot(per_bias, ctx.out)))
        break  # one table per report: the first features entry that runs the test
    return out
