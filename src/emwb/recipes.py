"""Training recipes: named overrides of `train:` fields, shipped as data in `emwb/catalog/recipes.yaml`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_recipes() -> dict[str, dict]:
    """{name: {description, args}} from the shipped recipes file; config.recipes() validates the args."""
    path = Path(str(resources.files("emwb") / "catalog" / "recipes.yaml"))
    raw = load_yaml(path)
    for name, r in raw.items():
        if not isinstance(r, dict) or set(r) != {"description", "args"}:
            raise EmwbError(f"{path}: recipe {name}: needs exactly 'description' and 'args'")
    return raw
