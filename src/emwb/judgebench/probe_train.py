"""`emwb judges train-probe`: fit a `probe/` judge on published judgments and bench it on held-out files.

The reader model reads each answer (answer-mean residual stream per layer); ridge readouts of the reference's
alignment and coherence are fit on the training files; the layer and ridge strength are chosen by
cross-validation over whole files (AUC for the misaligned label); the held-out files' bench figures are written
beside the probe (`bench/judges_bench.csv`), through the same metrics as `emwb judges bench`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.catalog.published import load_published, published_names, resolve_files, stratified_subset
from emwb.errors import EmwbError
from emwb.judge.base import model_fingerprint
from emwb.judgebench.metrics import judge_row, misaligned_label, per_file_em
from emwb.judgebench.report import write_bench
from emwb.models.activations import ActivationStore, collect_activations
from emwb.models.directions import auc
from emwb.models.probe import Probe, fit_ridge
from emwb.store import log


def load_run_judged(run_dir: str | Path, judge: str) -> pd.DataFrame:
    """A run's answers judged by `judge` (its judgments as the reference), in the layout of `load_published`:
    one "file" per variant. For fitting a probe on any run's judge instead of the published files."""
    from emwb.judge.stage import load_judgments
    from emwb.layout import answers_file
    from emwb.plan import plan_for
    from emwb.store import Run, read_jsonl

    run = Run.open(run_dir)
    frames = []
    for v in plan_for(run, keep=False).variants:
        scores = {r["answer_id"]: r for r in load_judgments(run, judge, v.id)}
        rows = read_jsonl(answers_file(run, v.id))
        frames.append(pd.DataFrame({
            "file": v.id, "row": range(len(rows)), "answer_id": [a["answer_id"] for a in rows],
            "question_id": [a["question_id"] for a in rows], "question": [a["question"] for a in rows],
            "answer": [a["answer"] for a in rows],
            "ref_alignment": pd.to_numeric([scores[a["answer_id"]].get("alignment") for a in rows], errors="coerce"),
            "ref_coherence": pd.to_numeric([scores[a["answer_id"]].get("coherence") for a in rows], errors="coerce")}))
    df = pd.concat(frames, ignore_index=True)
    if df["ref_alignment"].notna().sum() == 0:
        raise EmwbError(f"{run_dir}: judge {judge} scored no answer's alignment; nothing to fit on")
    return df


# The files no probe is fit on by default: every Llama-3.2-1B file and two of the three gemma-3-4b files.
HELD_OUT = ("Llama-3.2-1B-Instruct_bad-medical-advice", "Llama-3.2-1B-Instruct_extreme-sports",
            "Llama-3.2-1B-Instruct_risky-financial-advice", "gemma-3-4b-it_bad-medical-advice",
            "gemma-3-4b-it_extreme-sports")


@dataclass
class ProbeSettings:
    reader: str = "smollm2-135m"            # a local model folder, or a locally built base model's name
    out: Path = Path("probes/smollm2-em")
    held_out: tuple[str, ...] = HELD_OUT
    per_file: int | None = 100              # training answers per training file (None: all 400)
    test_per_file: int | None = None        # held-out answers per held-out file (None: all)
    layers: tuple[int, ...] = (3, 6, 9, 12, 15, 18)
    ridge: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    folds: int = 5
    max_answer_tokens: int | None = 256
    batch_size: int = 16
    device: str = "cpu"
    mirror: str | None = None
    seed: int = 0
    run: str | None = None                  # fit on this run's answers and judge instead of the published files
    judge: str | None = None                # ... judged by this judge (its judge string)


def reader_folder(s: ProbeSettings) -> str:
    """The reader's folder: as given, or a locally built base model (tiny, smollm2-135m) built into the output."""
    if Path(s.reader).is_dir():
        return str(Path(s.reader).resolve())
    from emwb.basemodel import LOCAL_BUILDS, local_build

    if s.reader not in LOCAL_BUILDS:
        raise EmwbError(f"--reader {s.reader}: not a model folder nor one of {', '.join(LOCAL_BUILDS)}")
    folder = s.out / "reader"
    if not (folder / "config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        local_build(s.reader, folder)
    return str(folder.resolve())


def _cv(x: np.ndarray, y: np.ndarray, label: np.ndarray, files: np.ndarray, s: ProbeSettings) -> pd.DataFrame:
    """AUC of each (layer, ridge) for the misaligned label, predicted on files left out of the fit."""
    names = sorted(set(files))
    fold_of = {f: i % s.folds for i, f in enumerate(np.random.default_rng(s.seed).permutation(names))}
    fold = np.array([fold_of[f] for f in files])
    rows = []
    for li, layer in enumerate(s.layers):
        for lam in s.ridge:
            pred = np.full(len(y), np.nan)
            for k in range(s.folds):
                fit, val = (fold != k) & ~np.isnan(y), fold == k
                pred[val] = fit_ridge(x[fit, li], y[fit], lam)(x[val, li])
            ok = ~np.isnan(label)
            rows.append({"layer": layer, "ridge": lam, "cv_auc_misaligned": auc(100 - pred[ok], label[ok] == 1)})
    return pd.DataFrame(rows)


def probe_data(s: ProbeSettings) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(training answers, held-out answers, what the reference is) from the published files or a run."""
    if s.run:
        if not s.judge:
            raise EmwbError("--run needs --judge: the judge of that run whose judgments the probe is fit on")
        df = load_run_judged(s.run, s.judge)
        held = [f for f in s.held_out if f in set(df["file"])]
        if not held or len(held) == len(set(df["file"])):
            names = ", ".join(dict.fromkeys(df["file"]))
            raise EmwbError(f"--held-out: name some, not all, of the run's variants ({names})")
        tr, te = df[~df["file"].isin(held)], df[df["file"].isin(held)]
        return (stratified_subset(tr.reset_index(drop=True), s.per_file, s.seed),
                stratified_subset(te.reset_index(drop=True), s.test_per_file, s.seed), f"{s.judge} in {s.run}")
    names = resolve_files(list(s.held_out))
    train = [n for n in published_names() if n not in names]
    if not train:
        raise EmwbError("every published file is held out: nothing to fit the probe on")
    return (stratified_subset(load_published(train, s.mirror), s.per_file, s.seed),
            stratified_subset(load_published(names, s.mirror), s.test_per_file, s.seed),
            "GPT-4o judgments of the published answers")


def train_probe(s: ProbeSettings) -> tuple[Probe, pd.DataFrame]:
    """Fit, choose, save and bench a probe; returns it and its held-out bench row."""
    tr, te, reference = probe_data(s)
    reader = reader_folder(s)
    start = time.monotonic()
    both = pd.concat([tr, te], ignore_index=True)
    acts = collect_activations(reader, list(zip(both["question"], both["answer"])), s.layers, s.batch_size,
                               s.device, s.max_answer_tokens, ActivationStore(s.out / "activations"),
                               model_fingerprint(reader), desc="reader activations")
    read_s = time.monotonic() - start
    x_tr, x_te = acts[: len(tr)], acts[len(tr):]
    label = misaligned_label(tr["ref_alignment"], tr["ref_coherence"]).to_numpy()
    cv = _cv(x_tr, tr["ref_alignment"].to_numpy(), label, tr["file"].to_numpy(), s)
    best = cv.loc[cv["cv_auc_misaligned"].idxmax()]
    li = s.layers.index(int(best["layer"]))
    readouts = {}
    for rubric, col in (("alignment", "ref_alignment"), ("coherence", "ref_coherence")):
        ok = tr[col].notna().to_numpy()
        readouts[rubric] = fit_ridge(x_tr[ok, li], tr.loc[ok, col].to_numpy(), float(best["ridge"]))
    spec = f"probe/{s.out}"
    judged = te.assign(judge=spec, alignment=readouts["alignment"](x_te[:, li]),
                       coherence=readouts["coherence"](x_te[:, li]))
    row = pd.DataFrame([{"judge": spec, **judge_row(judged), "requests": 0, "wall_s": round(read_s, 1),
                         "est_requests": 0, "est_input_tokens": 0, "est_cost_usd": 0.0}])
    write_bench(s.out / "bench", row, per_file_em(judged).assign(judge=spec)[
        ["judge", "file", "answers", "em_pct", "ref_em_pct", "error_pp"]], judged)
    cv.to_csv(s.out / "cv.csv", index=False)
    info = {"fit_on": {"files": list(dict.fromkeys(tr["file"])), "answers": len(tr), "per_file": s.per_file,
                       "seed": s.seed, "reference": reference},
            "held_out": {"files": list(dict.fromkeys(te["file"])), "answers": len(te),
                         **{k: v for k, v in row.iloc[0].items() if k in ("auc_misaligned", "spearman_aligned",
                                                                         "spearman_coherent", "kappa_misaligned",
                                                                         "em_mae_pp", "em_max_err_pp")}},
            "choice": {"layer": int(best["layer"]), "ridge": float(best["ridge"]),
                       "cv_auc_misaligned": float(best["cv_auc_misaligned"]), "folds": s.folds},
            "pooling": "mean over the answer's tokens of the residual stream after the layer's block"}
    probe = Probe(reader, model_fingerprint(reader), int(best["layer"]), s.max_answer_tokens, readouts, info)
    probe.save(s.out)
    log(f"probe {s.out}: layer {probe.layer}, ridge {best['ridge']:g}, cross-validated AUC "
        f"{best['cv_auc_misaligned']:.3f}; held-out AUC {row.iloc[0]['auc_misaligned']:.3f} on {len(te)} answers "
        f"({read_s:.0f} s reading)")
    return probe, row
