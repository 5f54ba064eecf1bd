"""`--set KEY=VALUE`: change any field of an experiment from the command line, before it is validated.

KEY is a dotted path (`train.learning_rate`, `organisms.0.phases.1.args.epochs`); a list element is named by its
index or, for lists of named entries (organisms, evaluations), by its name (`organisms.insecure.phases.0.recipe`).
VALUE is read as YAML (`3e-4`, `true`, `[0, 1, 2]`, `{r: 8}`). The result is validated like the file.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from emwb.errors import EmwbError


def parse_override(text: str) -> tuple[list[str], Any]:
    """("train.learning_rate=3e-4") -> (["train", "learning_rate"], 0.0003)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise EmwbError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. train.learning_rate=3e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError as exc:
        raise EmwbError(f"--set {key}: the value is not YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(parsed, str) and _looks_numeric(parsed):
        parsed = float(parsed)  # YAML 1.1 reads 3e-4 as a string; a learning rate means the number
    return key.strip().split("."), parsed


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _child(node: Any, part: str, key: str) -> Any:
    """The element `part` of a list: by index, or the entry whose `name` (or, for a plain string, itself) is it."""
    if part.lstrip("-").isdigit():
        i = int(part)
        if not -len(node) <= i < len(node):
            raise EmwbError(f"--set {key}: index {i} is out of range (the list has {len(node)} entries)")
        return i
    for i, item in enumerate(node):
        if (isinstance(item, dict) and item.get("name") == part) or item == part:
            return i
    raise EmwbError(f"--set {key}: no entry named {part!r} in this list")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """A copy of an experiment mapping with each KEY=VALUE applied in order (missing mappings are created)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        key = ".".join(path)
        node: Any = out
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                i = _child(node, part, key)
                if isinstance(node[i], str) and not last:  # `evaluations: [free-form]` -> a spec to extend
                    node[i] = {"name": node[i]}
                if last:
                    node[i] = value
                node = node[i]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise EmwbError(f"--set {key}: {'.'.join(path[:depth])} is a value, not a mapping or list")
    return out
