"""How a features entry chooses the latents its variants edit (`features[].select`), as a registry.

A selector gets the dictionary, the model diffing rows and a reader (texts -> each text's mean latent
activations and firing shares, read by the base model through the dictionary, saved so a killed stage resumes)
and returns the latents ranked best first, with any tables it wants written beside `latents.json`. emwb registers
`diff` (the largest rise of mean activation on one variant over the base: Wang et al. 2025's model diffing);
organisms register their own (the reward-model-bias organism: `rm-bias-shared`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from emwb.errors import EmwbError
from emwb.registry import Registry


@dataclass
class SelectorInput:
    spec: object                        # the FeatureSpec
    run: object                         # the Run
    sae: object                         # the dictionary (a SAELens SAE)
    read: Callable                      # (texts, label) -> ItemLatents, read by the base model
    diff: pd.DataFrame                  # model diffing rows (feature_diff.csv)
    firing: np.ndarray                  # each latent's firing rate on the dictionary's stream
    rank_on: str | None = None          # the variant `diff` ranks


@dataclass(frozen=True)
class Selection:
    latents: list[int]                                            # ranked, best first
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # file name -> table, beside latents.json
    how: str = ""                                                  # one line: why these


@dataclass(frozen=True)
class LatentSelector:
    select: Callable[[SelectorInput], Selection]
    description: str
    version: int = 1                    # in the latents' key: bump when the selection changes
    check: Callable[[object, object], None] = lambda spec, exp: None   # (spec, experiment): before any work


LATENT_SELECTORS: Registry[LatentSelector] = Registry("latent selector")


def _by_diff(s: SelectorInput) -> Selection:
    rows = s.diff[s.diff["variant"] == s.rank_on].sort_values("change", ascending=False)
    if not len(rows):
        raise EmwbError(f"features {s.spec.name}: no latent fired on the texts read by {s.rank_on} or the base model")
    top = rows.head(s.spec.top)
    return Selection([int(x) for x in top["latent"]], {},
                     f"the {len(top)} latents whose mean activation rose most on {s.rank_on} over the base "
                     f"(change {top['change'].iloc[0]:.4g} for the first)")


def _needs_organism(spec, exp) -> None:
    if not exp.organisms:
        raise EmwbError("select diff ranks latents by how an organism's activations changed: the experiment has no "
                        "organism (choose another selector)")


LATENT_SELECTORS.register("diff", LatentSelector(_by_diff, "the latents whose mean activation rose most on "
                                                           "`rank_on` over the base model (model diffing)",
                                                 check=_needs_organism))
