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
from emwb.yamlio import loads


def parse_override(text: str) -> tuple[list[str], Any]:
    """("train.learning_rate=3e-4") -> (["train", "learning_rate"], 0.0003); VALUE is read as experiment files are
    (emwb.yamlio: 3e-4 is a number, true and yes are booleans, "3" a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise EmwbError(f"--set {text!r}: expected KEY=VALUE with a dotted KEY, e.g. train.learning_rate=3e-4")
    try:
        parsed = loads(value) if value.strip() else value
    except yaml.YAMLError as exc:
        raise EmwbError(f"--set {key}: the value is not YAML ({str(exc).splitlines()[0]})") from None
    except EmwbError as exc:  # a key given twice in a mapping
        raise EmwbError(f"--set {key}: the value is not valid YAML (line {exc})") from None
    return key.strip().split("."), parsed


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
    return applied(raw, overrides)[0]


def applied(raw: dict, overrides: list[str]) -> tuple[dict, list[tuple[str, tuple]]]:
    """`apply_overrides`, and each override with the key path it set, list entries by index (("organisms", 0,
    "name") for organisms.insecure.name): what a validation error's location is matched against."""
    out = copy.deepcopy(raw)
    paths = []
    for text in overrides:
        path, value = parse_override(text)
        key = ".".join(path)
        node: Any = out
        where: list = []
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                i = _child(node, part, key) % len(node)  # organisms.-1 is the last one: its index
                if isinstance(node[i], str) and not last:  # `evaluations: [free-form]` -> a spec to extend
                    node[i] = {"name": node[i]}
                if last:
                    node[i] = value
                node = node[i]
                where.append(i)
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
                where.append(part)
            else:
                raise EmwbError(f"--set {key}: {'.'.join(path[:depth])} is a value, not a mapping or list")
        paths.append((text, tuple(where)))
    return out, paths


def blamed(sets: list[tuple[str, tuple]], loc: tuple, source: str) -> str:
    """What a validation error at key path `loc` is blamed on: the last `--set` (from `applied`) that wrote there,
    above it or inside it (`seeds.0=x` where `seeds` is wrong), else `source` (the experiment file)."""
    text = next((t for t, at in reversed(sets) if loc[:len(at)] == at or (loc and at[:len(loc)] == loc)), None)
    return f"--set {text}" if text is not None else source
