"""`emwb directions em`: the EM direction (Soligo et al.: misaligned minus aligned answers, both coherent) read
by a local model from the published judged answers of 20 files, per layer, and the projection of each answer of
5 held-out files on it scored as a misalignment detector (AUC with a bootstrap CI, per layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.judge.base import model_fingerprint
from emwb.judgebench.metrics import misaligned_label
from emwb.judgebench.probe_train import HELD_OUT, ProbeSettings, probe_data, reader_folder
from emwb.judgebench.report import markdown_table
from emwb.models.activations import ActivationStore, collect_activations
from emwb.models.directions import cosine_matrix, group_of, group_rules, mean_difference, projection_auc
from emwb.store import log


@dataclass
class DirectionSettings:
    reader: str = "smollm2-135m"
    out: Path = Path("directions/smollm2-em")
    held_out: tuple[str, ...] = HELD_OUT
    per_file: int | None = 100
    layers: tuple[int, ...] = (3, 6, 9, 12, 15, 18)
    store: Path | None = None          # activations folder (default: out/activations); a probe's may be reused
    rule: str = "em"
    n_boot: int | None = None          # bootstrap replicates of the AUC's CI (None: the analysis default)
    batch_size: int = 16
    mirror: str | None = None
    seed: int = 0


def em_direction(s: DirectionSettings) -> pd.DataFrame:
    """Directions per layer from the training files, held-out AUC per layer; written into `s.out`."""
    ps = ProbeSettings(s.reader, s.out, s.held_out, s.per_file, None, s.layers, mirror=s.mirror, seed=s.seed,
                       batch_size=s.batch_size)
    tr, te, reference = probe_data(ps)
    reader = reader_folder(ps)
    start = time.monotonic()
    both = pd.concat([tr, te], ignore_index=True)
    acts = collect_activations(reader, list(zip(both["question"], both["answer"])), s.layers, s.batch_size,
                               "cpu", 256, ActivationStore(s.store or s.out / "activations"),
                               model_fingerprint(reader), desc="reader activations")
    read_s = time.monotonic() - start
    x_tr, x_te = acts[: len(tr)], acts[len(tr):]
    groups = group_of(tr.rename(columns={"ref_alignment": "alignment", "ref_coherence": "coherence"}), s.rule)
    dirs = mean_difference(x_tr, groups, int(group_rules()[s.rule].get("min_items", 10)), f"direction {s.rule}")
    label = misaligned_label(te["ref_alignment"], te["ref_coherence"]).to_numpy()
    ok = ~np.isnan(label)
    rows = []
    for li, layer in enumerate(s.layers):
        unit = dirs[li] / np.linalg.norm(dirs[li])
        auc, lo, hi = projection_auc(x_te[ok, li] @ unit, label[ok] == 1, s.n_boot, s.seed)
        rows.append({"layer": layer, "auc_misaligned": auc, "ci_low": lo, "ci_high": hi,
                     "held_out_misaligned": int((label[ok] == 1).sum()), "held_out_other": int((label[ok] == 0).sum()),
                     "train_positive": int((groups == 1).sum()), "train_negative": int((groups == 0).sum()),
                     "direction_norm": float(np.linalg.norm(dirs[li]))})
    table = pd.DataFrame(rows)
    s.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(s.out / "em_direction_auc.csv", index=False)
    np.savez(s.out / "directions.npz", **{f"layer{layer}": dirs[li] for li, layer in enumerate(s.layers)})
    cos = cosine_matrix({f"layer {layer}": dirs[li] for li, layer in enumerate(s.layers)})
    cos.to_csv(s.out / "directions_cosine.csv")
    (s.out / "README.md").write_text(
        f"# EM direction read by {s.reader}\n\nRule {s.rule}: {group_rules()[s.rule]['source']}. Fit on "
        f"{len(tr)} answers of {tr['file'].nunique()} files ({reference}); held out: {', '.join(te['file'].unique())}"
        f" ({len(te)} answers). {read_s:.0f} s reading.\n\n" + markdown_table(table) + "\n")
    best = table.loc[table["auc_misaligned"].idxmax()]
    log(f"direction {s.rule}: best layer {int(best['layer'])}, held-out AUC {best['auc_misaligned']:.3f} "
        f"[{best['ci_low']:.3f}, {best['ci_high']:.3f}] ({read_s:.0f} s reading)")
    return table
