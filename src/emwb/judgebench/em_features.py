"""`emwb em-features`: a sparse dictionary (SAELens) on a local model's residual stream over the published judged
answers, and its best single latent as a misalignment detector beside the mean-difference direction.

The answers and the split are `emwb em-direction`'s (20 files fit, the probe's 5 held out). Each answer's tokens
at one layer are read once, streamed in chunks into `tokens/` (resumable), the dictionary is trained on them
(`emwb.models.dictionary`, resumable), and each answer becomes its tokens' mean latent activations. The latent
whose mean activation best ranks the fit files' misaligned answers (GPT-4o's alignment < 30, coherence > 50) is
scored on the held-out files: AUC with a bootstrap CI, beside the same layer's mean-difference direction (rule
`em`) fit and scored on the same answers.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.models.dictionary import (
    DictionarySettings,
    dictionary_stats,
    item_latents,
    load_dictionary,
    train_dictionary,
)
from emwb.judge.base import model_fingerprint
from emwb.judgebench.metrics import misaligned_label
from emwb.judgebench.probe_train import HELD_OUT, ProbeSettings, probe_data, reader_folder
from emwb.models.activations import ActivationStore
from emwb.models.directions import group_of, group_rules, mean_difference, projection_auc
from emwb.models.token_activations import stream_token_activations
from emwb.store import log

SUMMARY = "em_features.json"


@dataclass
class FeatureSettings:
    reader: str = "smollm2-135m"
    out: Path = Path("features/smollm2-em")
    held_out: tuple[str, ...] = HELD_OUT
    per_file: int | None = None        # fit answers per fit file (None: all)
    test_per_file: int | None = None   # held-out answers per held-out file (None: all)
    layer: int = 15
    dictionary: DictionarySettings = field(default_factory=lambda: DictionarySettings(width=4608, k=32))
    max_answer_tokens: int = 256
    batch_size: int = 16
    n_boot: int | None = None
    mirror: str | None = None
    seed: int = 0


def _latent_aucs(means: np.ndarray, label: np.ndarray) -> np.ndarray:
    """AUC of every latent's mean activation ranking label-1 rows above label-0 ones (ties count half)."""
    ranks = pd.DataFrame(means).rank(method="average").to_numpy()
    pos, neg = int(label.sum()), int((~label).sum())
    return (ranks[label].sum(0) - pos * (pos + 1) / 2) / (pos * neg)


def em_features(s: FeatureSettings) -> dict:
    """Read, train, measure, and score; everything written into `s.out` (em_features.json, README.md)."""
    ps = ProbeSettings(s.reader, s.out, s.held_out, s.per_file, s.test_per_file, (s.layer,), mirror=s.mirror,
                       seed=s.seed)
    tr, te, reference = probe_data(ps)
    reader = reader_folder(ps)
    both = pd.concat([tr, te], ignore_index=True)
    items = list(zip(both["question"], both["answer"]))
    store, fp = ActivationStore(s.out / "tokens"), model_fingerprint(reader)

    def stream():
        return stream_token_activations(reader, items, s.layer, store, fp, s.max_answer_tokens,
                                        batch_size=s.batch_size)

    from tqdm import tqdm

    start = time.monotonic()
    tokens, d_in = 0, 0
    with tqdm(total=len(items), desc=f"tokens at layer {s.layer}", unit="answer", mininterval=2.0) as bar:
        for c in stream():  # the first pass reads the model (chunks saved); later passes read the chunks back
            tokens, d_in = tokens + len(c.acts), c.acts.shape[1]
            bar.update(len(np.unique(c.items)) if len(c.items) else 0)
    read_s = time.monotonic() - start
    start = time.monotonic()
    folder = train_dictionary(lambda: (c.acts for c in stream()), d_in, s.dictionary, s.out / "dictionary")
    train_s = time.monotonic() - start
    sae = load_dictionary(folder)
    stats = dictionary_stats(sae, (c.acts for c in stream()))
    per = item_latents(sae, stream(), len(items), resid=True)
    means, resid = per.mean, per.resid
    fit, held = np.arange(len(tr)), np.arange(len(tr), len(both))
    y_fit = misaligned_label(tr["ref_alignment"], tr["ref_coherence"]).to_numpy()
    y_te = misaligned_label(te["ref_alignment"], te["ref_coherence"]).to_numpy()
    ok_fit, ok_te = ~np.isnan(y_fit), ~np.isnan(y_te)
    aucs = _latent_aucs(means[fit][ok_fit], y_fit[ok_fit] == 1)
    best = int(np.nanargmax(aucs))
    latent = projection_auc(means[held][ok_te, best], y_te[ok_te] == 1, s.n_boot, s.seed)
    groups = group_of(tr.rename(columns={"ref_alignment": "alignment", "ref_coherence": "coherence"}), "em")
    direction = mean_difference(resid[fit], groups, int(group_rules()["em"].get("min_items", 10)), "direction em")
    dir_auc = projection_auc(resid[held][ok_te] @ (direction / np.linalg.norm(direction)), y_te[ok_te] == 1,
                             s.n_boot, s.seed)
    dec = sae.W_dec.detach().float().numpy()[best]
    summary = {"reader": s.reader, "layer": s.layer, "reference": reference, "fit_answers": len(tr),
               "held_out_answers": len(te), "held_out_files": list(te["file"].unique()), "tokens": tokens,
               "read_s": round(read_s, 1), "read_tokens_per_s": round(tokens / max(read_s, 1e-9), 1),
               "train_s": round(train_s, 1), "train_tokens_per_s": round(s.dictionary.tokens / max(train_s, 1e-9), 1),
               "dictionary": asdict(s.dictionary), "stats": asdict(stats), "best_latent": best,
               "best_latent_fit_auc": float(aucs[best]), "best_latent_auc": latent, "direction_auc": dir_auc,
               "best_latent_direction_cosine": float(dec @ direction / (np.linalg.norm(dec) * np.linalg.norm(direction)))}
    (s.out / SUMMARY).write_text(json.dumps(summary, indent=1, default=float))
    (s.out / "README.md").write_text(readme(summary))
    log(f"em-features: layer {s.layer}, {tokens} tokens; explained variance {stats.explained_variance:.3f}, L0 "
        f"{stats.l0:.1f}, dead {stats.dead_share:.1%}; latent {best}: held-out AUC {latent[0]:.3f} "
        f"[{latent[1]:.3f}, {latent[2]:.3f}] vs direction {dir_auc[0]:.3f} [{dir_auc[1]:.3f}, {dir_auc[2]:.3f}]")
    return summary


def readme(m: dict) -> str:
    """The summary as a short page."""
    st, d = m["stats"], m["dictionary"]
    a, b = m["best_latent_auc"], m["direction_auc"]
    return (f"# A sparse dictionary read by {m['reader']} at layer {m['layer']}\n\n"
            f"{d['architecture']} SAE (SAELens), {d['width']} latents, k={d['k']}, trained on {d['tokens']:,} tokens "
            f"of a stream of {m['tokens']:,} answer tokens ({m['fit_answers']} fit and {m['held_out_answers']} "
            f"held-out published answers; {m['reference']}).\n\n"
            f"| explained variance | FVU | mean L0 | dead latents | read tokens/s | train tokens/s | read s | train s |\n"
            f"|---|---|---|---|---|---|---|---|\n"
            f"| {st['explained_variance']:.3f} | {st['fvu']:.3f} | {st['l0']:.1f} | {st['dead_share']:.1%} | "
            f"{m['read_tokens_per_s']:.0f} | {m['train_tokens_per_s']:.0f} | {m['read_s']:.0f} | {m['train_s']:.0f} |\n\n"
            f"| detector (held-out files: {', '.join(m['held_out_files'])}) | AUC misaligned | 95% CI |\n|---|---|---|\n"
            f"| best single latent ({m['best_latent']}; fit AUC {m['best_latent_fit_auc']:.3f}) | {a[0]:.3f} | "
            f"[{a[1]:.3f}, {a[2]:.3f}] |\n"
            f"| mean-difference direction, same layer and answers | {b[0]:.3f} | [{b[1]:.3f}, {b[2]:.3f}] |\n\n"
            f"Cosine of the latent's decoder column with the direction: {m['best_latent_direction_cosine']:.3f}.\n")
