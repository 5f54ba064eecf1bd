"""A linear readout of judge scores from a local model's activations: what a `probe/<folder>` judge applies.

The folder holds `probe.json` (the reader model and its fingerprint, the layer, how activations were pooled,
what the readouts were fit on, and their held-out figures) and `readouts.npz` (per rubric: feature mean and
scale, weights, intercept). A score is the standardised answer-mean activation at the layer times the weights,
plus the intercept, clipped to 0..100.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emwb.errors import EmwbError

PROBE_FILE, READOUTS_FILE = "probe.json", "readouts.npz"


@dataclass
class Readout:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip(((x - self.mean) / self.scale) @ self.weights + self.intercept, 0.0, 100.0)


def fit_ridge(x: np.ndarray, y: np.ndarray, lam: float) -> Readout:
    """Ridge regression of y on standardised x (closed form; lam is per standardised feature and item)."""
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    n, d = z.shape
    w = np.linalg.solve(z.T @ z + lam * n * np.eye(d), z.T @ (y - y.mean()))
    return Readout(mean, scale, w, float(y.mean()))


@dataclass
class Probe:
    reader: str                  # the model whose activations are read (a local folder)
    reader_fingerprint: str
    layer: int
    max_answer_tokens: int | None
    readouts: dict[str, Readout]  # rubric name (alignment, coherence) -> readout
    info: dict = field(default_factory=dict)  # how it was fit, and its held-out figures

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"{r}.{k}": np.asarray(getattr(ro, k)) for r, ro in self.readouts.items()
                  for k in ("mean", "scale", "weights", "intercept")}
        np.savez(folder / READOUTS_FILE, **arrays)
        meta = {"reader": self.reader, "reader_fingerprint": self.reader_fingerprint, "layer": self.layer,
                "max_answer_tokens": self.max_answer_tokens, "rubrics": list(self.readouts), **self.info}
        (folder / PROBE_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def load_probe(folder: str | Path) -> Probe:
    folder = Path(folder)
    try:
        meta = json.loads((folder / PROBE_FILE).read_text())
        arrays = np.load(folder / READOUTS_FILE)
        readouts = {r: Readout(arrays[f"{r}.mean"], arrays[f"{r}.scale"], arrays[f"{r}.weights"],
                               float(arrays[f"{r}.intercept"])) for r in meta["rubrics"]}
    except FileNotFoundError:
        raise EmwbError(f"{folder}: not a probe (no {PROBE_FILE} and {READOUTS_FILE}; make one with `emwb judges "
                        "train-probe`)") from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise EmwbError(f"{folder}: damaged probe ({exc})") from None
    info = {k: v for k, v in meta.items()
            if k not in ("reader", "reader_fingerprint", "layer", "max_answer_tokens", "rubrics")}
    return Probe(meta["reader"], meta["reader_fingerprint"], int(meta["layer"]), meta["max_answer_tokens"], readouts,
                 info)
