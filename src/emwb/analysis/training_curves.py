"""Training curves: each phase's loss per optimizer step (and its held-out loss, and the KL term where used), per
organism and seed, from the adapters' `train_log.json` (phases of an organism follow each other on one axis)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from emwb.layout import adapter_dir


def curve_rows(run, variants) -> pd.DataFrame:
    """One row per logged step: organism, seed, phase, step (within the phase), global step, loss, eval_loss, kl."""
    rows = []
    seen = set()
    for v in variants:
        if v.organism is None or v.step is not None or (v.organism, v.seed) in seen:
            continue
        seen.add((v.organism, v.seed))
        offset = 0
        organism = next(o for o in run.exp.organisms if o.name == v.organism)
        for k, phase in enumerate(organism.phases):
            path = adapter_dir(run, v.organism, k, v.seed) / "train_log.json"
            if not path.is_file():
                continue
            log = json.loads(path.read_text())
            curve = log.get("curve") or [{"step": i + 1, "loss": x} for i, x in enumerate(log.get("losses", []))]
            for c in curve:
                rows.append({"organism": v.organism, "seed": v.seed, "phase": phase.label, "step": c["step"],
                             "global_step": offset + c["step"], "loss": c.get("loss"),
                             "eval_loss": c.get("eval_loss"), "kl": c.get("kl")})
            offset += int(log.get("steps") or (curve[-1]["step"] if curve else 0))
    return pd.DataFrame(rows, columns=["organism", "seed", "phase", "step", "global_step", "loss", "eval_loss",
                                       "kl"])


def curves_plot(df: pd.DataFrame, out_dir: Path, stem: str = "training_curves") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    organisms = list(dict.fromkeys(df["organism"]))
    fig, axes = plt.subplots(1, len(organisms), figsize=(4.5 * len(organisms), 3.4), squeeze=False)
    for ax, o in zip(axes[0], organisms):
        sub = df[df["organism"] == o]
        for seed, s in sub.groupby("seed"):
            train = s[s["loss"].notna()]
            line = ax.plot(train["global_step"], train["loss"], lw=1, label=f"loss, seed {seed}")[0]
            held = s[s["eval_loss"].notna()]
            if len(held):
                ax.plot(held["global_step"], held["eval_loss"], "o--", color=line.get_color(), ms=4,
                        label=f"held-out loss, seed {seed}")
            kl = s[s["kl"].notna()]
            if len(kl):
                ax.plot(kl["global_step"], kl["kl"], ":", color=line.get_color(), label=f"KL term, seed {seed}")
        for boundary in sub.groupby("phase", sort=False)["global_step"].max().iloc[:-1]:
            ax.axvline(boundary + 0.5, color="grey", lw=0.6)
        ax.set(title=o, xlabel="optimizer step (phases in order)", ylabel="loss")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    fig.savefig(out_dir / f"{stem}.svg")
    plt.close(fig)
    return f"{stem}.png"
