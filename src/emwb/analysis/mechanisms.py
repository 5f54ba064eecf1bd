"""Report sections of the mechanisms block: steering sweeps, ablations beside their random controls, and the
cosines between directions (`report/steering.*`, `report/ablation.*`, `report/directions_cosine.*`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emwb.analysis.differences import metric_difference
from emwb.analysis.tables import metric_columns, write_plain_table
from emwb.layout import DIRECTIONS_FILE, directions_dir, projections_dir, variant_model_dir
from emwb.models.directions import cosine, cosine_matrix
from emwb.models.interventions import read_direction

# a rank-1 adapter's B vector that writes into the residual stream after block <layer>
B_VECTOR = re.compile(r"layers\.(\d+)\.(?:mlp\.down_proj|self_attn\.o_proj)\.lora_B\.weight$")


def _roled(ctx, roles: tuple[str, ...]) -> list[tuple[str, object, list[str]]]:
    """(column, metric, CI columns) of each metric of these roles ("narrow", "broad") the comparison has."""
    return [(col, m, cis) for col, m, _, cis in metric_columns(ctx.evals)
            if m.role in roles and col in ctx.comp and ctx.comp[col].notna().any()]


def _rates(ctx, group: str, roles: tuple[str, ...] = ("broad",)) -> list[tuple[object, dict]]:
    """(metric, {metric, rate %, its CI, answers}) per metric of these roles with a value for `group` (first
    judge)."""
    row = ctx.comp[(ctx.comp["group"] == group) & (ctx.comp["judge"] == ctx.judges[0])]
    if not len(row):
        return []
    r, answers = row.iloc[0], int((ctx.first["group"] == group).sum())
    return [(m, {"metric": m.name, "rate %": 100 * r[col], "ci_low": 100 * r[cis[0]] if cis else np.nan,
                 "ci_high": 100 * r[cis[1]] if cis else np.nan, "answers": answers})
            for col, m, cis in _roled(ctx, roles) if pd.notna(r[col])]


def steering_rows(ctx) -> pd.DataFrame:
    """Each steered variant's broad rates, and its change from the unsteered variant (paired by prompt: points,
    CI, p)."""
    rows = []
    for v in ctx.variants:
        if v.edit is not None and v.edit.kind == "steer":
            on = ctx.first[ctx.first["variant"] == v.edit.on]
            steered = ctx.first[ctx.first["variant"] == v.id]
            for metric, r in _rates(ctx, v.group):
                d = reduction(metric, on, steered, ctx.settings)  # unsteered minus steered
                rows.append({"direction": v.edit.direction, "on": v.edit.on, "layer": v.edit.layers[0],
                             "alpha": v.edit.alpha, "variant": v.id, **r,
                             "change (pp)": -d["reduction (pp)"], "change ci_low": -d["reduction ci_high"],
                             "change ci_high": -d["reduction ci_low"], "p": d["p"]})
    return pd.DataFrame(rows)


def metric_value(metric, df: pd.DataFrame, settings) -> float:
    """The metric on `df` as the tables compute it, as a float (NaN on no answers)."""
    got = metric.compute(df, settings) if len(df) else math.nan
    return float(getattr(got, "value", got))


def reduction(metric, unedited: pd.DataFrame, edited: pd.DataFrame, settings) -> dict:
    """The rate on the unedited variant's answers minus on the edited one's, in points, paired by prompt: the
    reduction, its 95% CI, p and MDE (`emwb.analysis.paired`)."""
    d = metric_difference(metric, unedited, edited, settings)
    return {"reduction (pp)": 100 * d.value, "reduction ci_low": 100 * d.ci_low,
            "reduction ci_high": 100 * d.ci_high, "p": d.p_value, "mde (pp)": 100 * d.mde}


ABLATED = {"ablate": ("direction", "random control"), "ablate-latents": ("latents", "matched random latents")}


def ablation_rows(ctx) -> pd.DataFrame:
    """Each ablated variant (a direction projected out, or a dictionary's latents removed) beside the unablated one,
    per narrow and broad metric: the rate, and the reduction (paired by prompt) with its CI, p and MDE; the
    direction's rows also against its controls (`against_controls`)."""
    rows = []
    by_id = {v.id: v for v in ctx.variants}
    roles = ("narrow", "broad")
    for v in ctx.variants:
        if v.edit is None or v.edit.kind not in ABLATED:
            continue
        on = by_id[v.edit.on]
        unablated = {r["metric"]: r for _, r in _rates(ctx, on.group, roles)}
        base, edited = (ctx.first[ctx.first["variant"] == x] for x in (on.id, v.id))
        what, control = ABLATED[v.edit.kind]
        for metric, r in _rates(ctx, v.group, roles):
            rows.append({"direction": v.edit.direction, "on": on.id,
                         "ablated": what if not v.edit.control else f"{control} {v.edit.control}",
                         "variant": v.id, **r, "unablated %": unablated.get(r["metric"], {}).get("rate %"),
                         **reduction(metric, base, edited, ctx.settings)})
    return against_controls(ctx, pd.DataFrame(rows))


def against_controls(ctx, rows: pd.DataFrame) -> pd.DataFrame:
    """Per direction (or latents) and metric: where its reduction ranks among its random controls' (`rank p`: (1 +
    controls reducing as much) / (controls + 1); the smallest possible is 1 / (controls + 1)), and its answers
    against the controls' pooled answers, paired by prompt (`vs controls (pp)`, CI, p)."""
    if not len(rows):
        return rows
    out = rows.copy()
    for col in ("controls", "rank p", "smallest rank p", "vs controls (pp)", "vs controls ci_low",
                "vs controls ci_high", "vs controls p"):
        out[col] = np.nan
    metrics = {m.name: m for ms in ctx.evals.values() for m in ms}
    for (direction, on, metric), sub in rows.groupby(["direction", "on", "metric"], sort=False):
        main = sub[sub["ablated"].isin([w for w, _ in ABLATED.values()])]
        controls = sub[~sub.index.isin(main.index)]
        if not len(main) or not len(controls):
            continue
        i, red = main.index[0], main["reduction (pp)"].iloc[0]
        reds = controls["reduction (pp)"].to_numpy(float)
        out.loc[i, ["controls", "rank p", "smallest rank p"]] = [
            len(reds), (1 + int((reds >= red - 1e-9).sum())) / (len(reds) + 1), 1 / (len(reds) + 1)]
        ablated = ctx.first[ctx.first["variant"] == main["variant"].iloc[0]]
        pooled = ctx.first[ctx.first["variant"].isin(controls["variant"])]
        d = metric_difference(metrics[metric], pooled, ablated, ctx.settings)  # controls' rate minus the direction's
        out.loc[i, ["vs controls (pp)", "vs controls ci_low", "vs controls ci_high", "vs controls p"]] = [
            100 * d.value, 100 * d.ci_low, 100 * d.ci_high, d.p_value]
    return out


def finished_directions(ctx) -> dict[str, tuple[object, dict]]:
    """{name: (its spec, its arrays)} of every finished direction of the run (read once per report)."""
    out = {}
    for d in ctx.run.exp.mechanisms.directions:
        path = directions_dir(ctx.run, d.name) / DIRECTIONS_FILE
        if path.is_file():
            out[d.name] = (d, read_direction(path))
    return out


def cosine_rows(dirs: dict) -> pd.DataFrame:
    vectors = {f"{name} L{la}": arrays[f"direction.{la}"] for name, (d, arrays) in dirs.items() for la in d.layers}
    return cosine_matrix(vectors) if vectors else pd.DataFrame()


def adapter_rows(ctx, dirs: dict | None = None) -> pd.DataFrame:
    """For rank-1 LoRA adapters (the phase's end and every kept checkpoint): the cosine of each module's B vector
    that writes into the residual stream at a layer (down_proj, o_proj) with each direction at that layer."""
    dirs = finished_directions(ctx) if dirs is None else dirs
    if not dirs:
        return pd.DataFrame()
    from safetensors.numpy import load_file

    rows = []
    for v in ctx.variants:
        folder = variant_model_dir(ctx.run, v) if v.edit is None else None
        if folder is None or not (folder / "adapter_config.json").is_file():
            continue
        if int(json.loads((folder / "adapter_config.json").read_text()).get("r", 0)) != 1:
            continue
        for key, w in load_file(str(folder / "adapter_model.safetensors")).items():
            m = B_VECTOR.search(key)
            if not m or w.shape[1] != 1:
                continue
            layer = int(m.group(1))
            for name, (d, arrays) in dirs.items():
                if f"direction.{layer}" in arrays:
                    rows.append({"variant": v.id, "organism": v.organism, "seed": v.seed,
                                 "step": v.step if v.step is not None else v.phase_steps, "module": key,
                                 "layer": layer, "direction": name,
                                 "cosine": cosine(w[:, 0].astype(float), arrays[f"direction.{layer}"])})
    return pd.DataFrame(rows)


def projection_rows(ctx) -> pd.DataFrame:
    """Every unedited variant's mean projection on each direction (stage projections), in table order."""
    frames = [pd.read_csv(p) for d in ctx.run.exp.mechanisms.directions
              if (p := projections_dir(ctx.run, d.name) / "projections.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _plot_projections(df: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    groups = list(dict.fromkeys(df["group"]))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) + 2), 3.6))
    for (d, layer), sub in df.groupby(["direction", "layer"], sort=False):
        sub = sub.groupby("group", sort=False)[["mean_projection", "ci_low", "ci_high"]].mean().reindex(groups)
        y = sub["mean_projection"].to_numpy(float)
        err = np.nan_to_num(np.vstack([y - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - y]))
        ax.errorbar(range(len(groups)), y, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=f"{d} L{layer}")
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="mean projection of the answers", title="Answers projected on each direction, by variant (95% CI)")
    ax.legend(fontsize=7)
    return _save(fig, out, "projections")[0]


def _plot_steering(df: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (d, on, layer, metric), sub in df.groupby(["direction", "on", "layer", "metric"], sort=False):
        sub = sub.sort_values("alpha")
        y = sub["rate %"].to_numpy(float)
        err = np.nan_to_num(np.vstack([y - sub["ci_low"].to_numpy(float), sub["ci_high"].to_numpy(float) - y]))
        ax.errorbar(sub["alpha"], y, yerr=np.clip(err, 0, None), marker="o", capsize=3,
                    label=f"{metric}: {d} on {on}, L{layer}")
    ax.set(xlabel="steering strength alpha (x the layer's mean residual norm)", ylabel="rate (%)",
           title="Steering: the broad rate against alpha, per layer (95% CI)")
    ax.legend(fontsize=7)
    return _save(fig, out, "steering")[0]


def _plot_ablation(df: pd.DataFrame, out) -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(df) + 1.4))
    y = df["reduction (pp)"].to_numpy(float)
    err = np.nan_to_num(np.vstack([y - df["reduction ci_low"].to_numpy(float),
                                   df["reduction ci_high"].to_numpy(float) - y]))
    colors = ["#c33" if a in ("direction", "latents") else "#999" for a in df["ablated"]]
    ax.barh(range(len(df)), y, xerr=np.clip(err, 0, None), color=colors, capsize=3)
    ax.set_yticks(range(len(df)), [f"{r.on}: {r.direction} {r.ablated} ({r.metric})" for r in df.itertuples()],
                  fontsize=7)
    ax.axvline(0, color="black", lw=0.6)
    ax.invert_yaxis()
    ax.set(xlabel="reduction of the rate (points, 95% CI)", title="Ablation against random controls")
    return _save(fig, out, "ablation")[0]


def plot_cosine(cos: pd.DataFrame, out, stem: str = "directions_cosine") -> str:
    from emwb.analysis.plots import _plt, _save

    plt = _plt()
    size = min(12.0, 1 + 0.5 * len(cos))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cos.to_numpy(float), vmin=-1, vmax=1, cmap="RdBu_r")
    font = 7 if len(cos) <= 20 else 4
    ax.set_xticks(range(len(cos)), cos.columns, rotation=90, fontsize=font)
    ax.set_yticks(range(len(cos)), cos.index, fontsize=font)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("Cosine between directions")
    return _save(fig, out, stem)[0]


STEERING_NOTE = ("Rates: exact 95% CIs over the answers (units: seeds, then answers); change: the steered variant "
                 "minus the unsteered one on the same prompts (paired by prompt; p from a permutation test within "
                 "prompts).")
ABLATION_NOTE = ("Reduction: the unablated variant's rate minus the ablated one's on the same prompts, in points "
                 "(paired by prompt: MOVER CI from the exact intervals, p from a permutation test within prompts, "
                 "MDE at 80% power). Against its controls: rank p = (1 + controls reducing as much) / (controls + "
                 "1), at best 'smallest rank p'; 'vs controls' tests the ablated answers against the controls' "
                 "pooled answers, paired by prompt.")


@dataclass
class Parts:
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)


def mechanisms_parts(ctx) -> Parts:
    """Steering sweeps (rate against alpha per layer), ablations beside random controls (reductions with CIs) and
    the cosines between directions, when the experiment has a mechanisms block."""
    out = Parts()

    def add(df: pd.DataFrame, stem: str, caption: str, figure=None, figure_caption: str = "", note: str = "") -> None:
        if len(df):
            out.tables.append((caption, write_plain_table(df, ctx.out, stem, caption, (), note)))
            if figure is not None:
                out.figures.append((figure_caption, figure(df, ctx.out)))

    add(steering_rows(ctx), "steering", "Steering", _plot_steering, "Steering: the broad rate against alpha per layer",
        STEERING_NOTE)
    add(ablation_rows(ctx), "ablation", "Ablation beside random controls", _plot_ablation,
        "Ablation: reduction of the broad rate, direction and controls", ABLATION_NOTE)
    add(projection_rows(ctx), "projections", "Each variant's answers projected on each direction", _plot_projections,
        "Answers projected on each direction, by variant (phases and checkpoints in order)")
    dirs = finished_directions(ctx)
    add(adapter_rows(ctx, dirs), "adapter_direction_cosine", "Rank-1 adapters' B vector against the directions")
    cos = cosine_rows(dirs)
    if len(cos):
        cos.to_csv(ctx.out / "directions_cosine.csv")
        (ctx.out / "directions_cosine.md").write_text(cos.round(3).to_csv())
        out.tables.append(("Cosine between directions", cos.round(3).reset_index(names="direction")))
        out.figures.append(("Cosine between directions", plot_cosine(cos, ctx.out)))
    return out
