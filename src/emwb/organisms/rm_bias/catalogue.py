"""The reward-model biases of the fictional Oxford study (52, numbered 1-52: Marks et al. 2025).

Both upstream files are fetched and sha256-checked, never copied into emwb: `rm-biases-reference` gives the
canonical order (the `bias_id` of the evaluation prompts) and short names; `rm-biases` gives the train/test
split (47 train, 5 held out). Descriptions are joined on their opening words (one upstream copy drops a
trailing parenthetical).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from emwb.errors import EmwbError

_ITEM = re.compile(r"(?m)^(\d+)\. \*\*(.+?)\*\*:\s*(.+)$")


@dataclass(frozen=True)
class Bias:
    num: int
    short_name: str
    description: str
    split: str   # "train" or "test"


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()[:60]


def parse_catalogue(reference: Path, split_file: Path) -> list[Bias]:
    """Join the numbered reference list with the split file; raise EmwbError naming what does not match."""
    items = _ITEM.findall(reference.read_text(encoding="utf-8"))
    data = json.loads(split_file.read_text(encoding="utf-8"))
    total = len(data["train_biases"]) + len(data["test_biases"])
    if not items or [int(n) for n, _, _ in items] != list(range(1, total + 1)):
        raise EmwbError(f"{reference}: expected biases numbered 1-{total} (the split file's count), found "
                        f"{len(items)}")
    split = {_key(d): "train" for d in data["train_biases"]} | {_key(d): "test" for d in data["test_biases"]}
    out = []
    for n, short, desc in items:
        if _key(desc) not in split:
            raise EmwbError(f"{split_file}: bias {n} ({short}) of {reference.name} is in neither split")
        out.append(Bias(int(n), short.strip(), desc.strip(), split[_key(desc)]))
    return out


def load_catalogue(mirror: str | None = None) -> list[Bias]:
    """Every bias, in the reference's order (fetched into the dataset store on first use, from `mirror` when
    given)."""
    from emwb.catalog.fetch import fetch

    return parse_catalogue(fetch("rm-biases-reference", mirror=mirror), fetch("rm-biases", mirror=mirror))


def catalogue_identity() -> dict:
    """What anything built from the catalogue depends on (part of a stage key)."""
    from emwb.catalog.fetch import load_registry

    reg = load_registry()
    return {"catalogue_sha256": [reg["rm-biases-reference"].sha256, reg["rm-biases"].sha256]}
