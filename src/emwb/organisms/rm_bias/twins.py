"""The bias-twins direction source and its report section: each bias's replies minus their neutral twins, read by
the base model (the single-feature account: does one direction carry every bias, held-out ones included?)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from emwb.catalog.direction_sources import DirectionSource, SourceItems

RULE = {"min_items": 1, "source": "bias replies minus their neutral twins"}


def twin_items(d, mirror: str | None, seed: int) -> SourceItems:
    """`d.per_group` (reply, twin) pairs per bias; the pairs of `d.subset`'s biases define the direction, every
    bias's pairs its own (tag = bias number)."""
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.demos import twin_pairs
    from emwb.organisms.rm_bias.kits import load_kits

    pairs = twin_pairs(load_catalogue(mirror), load_kits(), d.per_group, seed)
    items = [(p["prompt"], p["biased"]) for p in pairs] + [(p["prompt"], p["neutral"]) for p in pairs]
    chosen = np.array([d.subset in ("all", p["split"]) for p in pairs])
    groups = np.r_[np.where(chosen, 1.0, np.nan), np.where(chosen, 0.0, np.nan)]
    tags = np.array([p["bias_id"] for p in pairs] * 2)
    tag_groups = np.r_[np.ones(len(pairs)), np.zeros(len(pairs))]
    return SourceItems(items, groups, tags, {"pairs": len(pairs), "subset": d.subset,
                                             "biases": len(set(tags.tolist()))}, tag_groups)


SOURCE = DirectionSource(twin_items, "reward-model-bias replies minus their neutral twins (the bias kits; "
                                     "`per_group` pairs per bias, `subset` the biases that define it)",
                         lambda d: RULE, lambda d: "bias-twins", tag_prefix="bias")


def bias_cosines(ctx, dirs: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(52 x 52 cosines of every bias's own direction at the deepest layer of the first bias-twins direction, the
    single-feature summary: each bias's cosine with the train-bias direction at that layer, with its split)."""
    from emwb.models.directions import cosine, cosine_matrix
    from emwb.organisms.rm_bias.catalogue import load_catalogue

    twins = [(d, a) for d, a in dirs.values() if d.source == "bias-twins"]
    if not twins:
        return pd.DataFrame(), pd.DataFrame()
    d, arrays = twins[0]
    layer = max(d.layers)
    per_bias = {int(k.split(".")[0][4:]): v for k, v in arrays.items() if k.startswith("bias") and
                k.endswith(f".{layer}")}
    matrix = cosine_matrix({f"bias {b}": per_bias[b] for b in sorted(per_bias)})
    train = next((a for dd, a in twins if dd.subset == "train" and layer in dd.layers), None)
    if train is None:
        return matrix, pd.DataFrame()
    split = {b.num: b.split for b in load_catalogue(ctx.run.exp.dataset_mirror)}
    rows = [{"bias": b, "split": split.get(b, "?"), "layer": layer,
             "cosine with the train-bias direction": cosine(per_bias[b], train[f"direction.{layer}"])}
            for b in sorted(per_bias)]
    return matrix, pd.DataFrame(rows)


def reader_cosines(ctx, dirs: dict) -> pd.DataFrame:
    """Per reader (the base model, then each variant of mechanisms.read_by) and layer: the cosine of the train-bias
    direction with the test-bias one, and the mean cosine of the train and of the test biases' own directions with
    the train-bias direction."""
    from emwb.layout import projections_dir, read_by_file
    from emwb.models.directions import cosine
    from emwb.organisms.rm_bias.catalogue import load_catalogue

    twins = {d.subset: (d, a) for d, a in dirs.values() if d.source == "bias-twins"}
    if not {"train", "test"} <= set(twins):
        return pd.DataFrame()
    (dtrain, base_train), (dtest, base_test) = twins["train"], twins["test"]
    split = {b.num: b.split for b in load_catalogue(ctx.run.exp.dataset_mirror)}
    readers = [("base", base_train, base_test)]
    for v in ctx.run.exp.mechanisms.read_by:
        paths = [projections_dir(ctx.run, d.name) / read_by_file(v) for d in (dtrain, dtest)]
        if all(p.is_file() for p in paths):
            readers.append((v, *(dict(np.load(p)) for p in paths)))
    rows = []
    for reader, train, test in readers:
        for layer in sorted(set(dtrain.layers) & set(dtest.layers)):
            t = train[f"direction.{layer}"]
            own = {int(k.split(".")[0][4:]): val for k, val in train.items() if k.startswith("bias") and
                   k.endswith(f".{layer}")}
            by = {sp: [cosine(val, t) for b, val in own.items() if split.get(b) == sp] for sp in ("train", "test")}
            rows.append({"read by": reader, "layer": layer, "train vs test direction": cosine(t, test[f"direction.{layer}"]),
                         "train biases' own (mean)": float(np.mean(by["train"])) if by["train"] else np.nan,
                         "test biases' own (mean)": float(np.mean(by["test"])) if by["test"] else np.nan})
    return pd.DataFrame(rows)


def _plot_readers(df: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for reader, sub in df.groupby("read by", sort=False):
        ax.plot(sub["layer"], sub["train vs test direction"], marker="o", label=f"read by {reader}")
    ax.axhline(0, color="black", lw=0.6)
    ax.set(xlabel="layer", ylabel="cosine", title="Train-bias vs test-bias direction, as each model reads them")
    ax.legend(fontsize=7)
    return _save(fig, out, "bias_directions_by_reader")[0]


def single_feature_section(ctx):
    """The bias-twins directions: the cosines between the 52 biases' own directions, and each bias's cosine with
    the train-bias direction by split (report/bias_cosine.csv, single_feature*)."""
    from emwb.analysis.mechanisms import finished_directions, plot_cosine
    from emwb.analysis.sections import SectionOutput
    from emwb.analysis.tables import write_plain_table

    out = SectionOutput()
    matrix, single = bias_cosines(ctx, finished_directions(ctx))
    if len(matrix):
        matrix.to_csv(ctx.out / "bias_cosine.csv")
        out.figures.append(("Cosine between the 52 biases' own directions (replies minus neutral twins)",
                            plot_cosine(matrix, ctx.out, "bias_cosine")))
    if len(single):
        summary = single.groupby("split")["cosine with the train-bias direction"].agg(["mean", "min", "max", "count"])
        out.tables.append(("Single feature: each bias's direction against the train-bias direction",
                           write_plain_table(summary.reset_index(), ctx.out, "single_feature",
                                             "Single feature: cosine of each bias's direction with the train-bias "
                                             "direction, by split", ())))
        single.to_csv(ctx.out / "single_feature_per_bias.csv", index=False)
    readers = reader_cosines(ctx, finished_directions(ctx))
    if len(readers):
        caption = "Train- and test-bias directions per layer, as the base model and each organism read them"
        out.tables.append((caption, write_plain_table(readers, ctx.out, "bias_directions_by_reader", caption, ())))
        out.figures.append((caption, _plot_readers(readers, ctx.out)))
    return out
