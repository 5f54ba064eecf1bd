"""Training recipes: named overrides of `train:` fields, shipped as data in `emwb/catalog/recipes.yaml`, each value
cited (a source file at a commit, or emwb's reason)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

RECIPE_KEYS = {"description", "args", "cite"}
SOURCE_KEYS = {"repo", "commit", "file"}


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flatten(args: dict, prefix: str = "") -> dict[str, Any]:
    """{dotted name (`lora.r`): value} of the values in `args`, nested blocks opened."""
    out: dict[str, Any] = {}
    for k, v in args.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def recipes_file() -> Path:
    return Path(str(resources.files("emwb") / "catalog" / "recipes.yaml"))


def load_sources() -> dict[str, dict]:
    """{name: {repo, commit, file}}: the files the recipes cite."""
    return load_yaml(recipes_file())["sources"]


def _check_citations(path: Path, name: str, recipe: dict, sources: dict) -> None:
    cite = recipe["cite"] or {}
    missing = [f for f in flatten(recipe["args"]) if f not in cite and f.split(".")[0] not in cite]
    if missing:
        raise EmwbError(f"{path}: recipe {name}: {', '.join(missing)} set without a citation under 'cite'")
    for field, text in cite.items():
        where = str(text).split(":", 1)[0]
        if where != "emwb" and where not in sources:
            raise EmwbError(f"{path}: recipe {name}: cite.{field} names {where!r}, which is neither a source under "
                            "'sources' nor 'emwb'")


def load_recipes() -> dict[str, dict]:
    """{name: {description, args, cite}} from the shipped recipes file; config.recipes() validates the args."""
    path = recipes_file()
    raw = load_yaml(path)
    sources = raw.get("sources") or {}
    for name, s in sources.items():
        if not isinstance(s, dict) or set(s) != SOURCE_KEYS:
            raise EmwbError(f"{path}: source {name}: needs exactly {', '.join(sorted(SOURCE_KEYS))}")
    for name, r in (raw.get("recipes") or {}).items():
        if not isinstance(r, dict) or set(r) != RECIPE_KEYS:
            raise EmwbError(f"{path}: recipe {name}: needs exactly 'description', 'args' and 'cite'")
        _check_citations(path, name, r, sources)
    return raw["recipes"]
