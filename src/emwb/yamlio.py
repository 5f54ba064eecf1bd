"""Strict YAML reading: a duplicated key in any mapping is an error (PyYAML silently keeps the last)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from emwb.errors import EmwbError


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)  # resolves `<<: *anchor` merges first; explicit keys may override them
    seen: dict[Any, int] = {}
    merged_from = {id(k) for k, _ in getattr(node, "_emwb_merged", [])}
    for key_node, _ in node.value:
        if id(key_node) in merged_from:
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise EmwbError(f"{key_node.start_mark.line + 1}: duplicate key {key!r} "
                            f"(first at line {seen[key]}); a YAML mapping must name each key once")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _merge_aware_flatten(self, node):  # remember which key nodes came from a `<<:` merge
    before = {id(k) for k, _ in node.value}
    yaml.SafeLoader.flatten_mapping(self, node)
    node._emwb_merged = [(k, v) for k, v in node.value if id(k) not in before]


_StrictLoader.flatten_mapping = _merge_aware_flatten
# YAML 1.2 reads 3e-4 and 1E5 as numbers; PyYAML (YAML 1.1) as strings, which a number field refuses
# (emwb.config.base): read them as the numbers they are. A quoted "3e-4" stays a string.
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"),
                                    list("-+0123456789"))


def loads(text: str) -> Any:
    """One YAML value read as experiment files are (a `--set` VALUE); yaml.YAMLError when it is not YAML."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


MAX_BYTES = 16 << 20     # no experiment, question set or rubric is near this; a bigger file is refused unread
MAX_NODES = 1_000_000    # values once aliases are expanded (what hashing and validation walk): an alias bomb


def _expanded(data: Any, limit: int) -> int:
    """The number of values in `data` with every alias expanded, counted up to `limit` + 1 (so this stops fast on
    a YAML alias bomb, whose expansion is exponential)."""
    stack, n = [data], 0
    while stack and n <= limit:
        item = stack.pop()
        n += 1
        if isinstance(item, dict):
            stack.extend(item.values())
            n += len(item)
        elif isinstance(item, list):
            stack.extend(item)
    return n


def load_yaml(path: str | Path, text: str | None = None) -> Any:
    """Parse a YAML file strictly; any problem is an EmwbError naming the file and line. A file over MAX_BYTES,
    or one whose aliases expand to more than MAX_NODES values, is refused before anything walks it."""
    path = Path(path)
    if text is None:
        try:
            if path.stat().st_size > MAX_BYTES:
                raise EmwbError(f"{path}: {path.stat().st_size:,} bytes, more than the {MAX_BYTES:,} a YAML file of "
                                "emwb may have")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EmwbError(f"{path}: file not found") from None
        except UnicodeDecodeError:
            raise EmwbError(f"{path}: not UTF-8 text") from None
    if len(text) > MAX_BYTES:
        raise EmwbError(f"{path}: {len(text):,} characters, more than the {MAX_BYTES:,} a YAML file of emwb may have")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except EmwbError as exc:
        raise EmwbError(f"{path}:{exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise EmwbError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if _expanded(data, MAX_NODES) > MAX_NODES:
        raise EmwbError(f"{path}: its aliases (*name) expand to more than {MAX_NODES:,} values; write the values out "
                        "or reuse fewer")
    return data


def _answers_path(source, base: Path):
    """`answers:<run directory>` relative to the experiment file (other sources as they are)."""
    if isinstance(source, str) and source.startswith("answers:") and not Path(source[8:]).is_absolute():
        return "answers:" + str((base / source[8:]).resolve())
    return source


def resolve_relative_paths(raw: dict, base: Path) -> dict:
    """Local paths (data sources, question sets, the mirror) are taken relative to the experiment file."""
    if isinstance(raw.get("dataset_mirror"), str):
        raw["dataset_mirror"] = str((base / raw["dataset_mirror"]).resolve())
    if isinstance(raw.get("data"), dict):
        for spec in raw["data"].values():
            src = spec.get("source") if isinstance(spec, dict) else None
            if isinstance(src, str) and ":" not in src.split("/")[0] and not Path(src).is_absolute():
                spec["source"] = str((base / src).resolve())
    for ev in raw.get("evaluations") or []:
        sets = ev.get("question_sets") if isinstance(ev, dict) else None
        if isinstance(sets, list):
            ev["question_sets"] = [str((base / s).resolve()) if isinstance(s, str) and Path(s).suffix in
                                   (".yaml", ".yml", ".json") and not Path(s).is_absolute() else s for s in sets]
    for f in raw.get("features") or []:  # a SAELens folder to load; a finished run's answers as a token stream
        if not isinstance(f, dict):
            continue
        if isinstance(f.get("load"), str) and not Path(f["load"]).is_absolute():
            f["load"] = str((base / f["load"]).resolve())
        streams = [f.get("stream"), (f.get("diff") or {}).get("stream") if isinstance(f.get("diff"), dict) else None]
        for st in (st for st in streams if isinstance(st, dict)):
            src = st.get("source")
            one = isinstance(src, str)
            got = [_answers_path(x, base) for x in ([src] if one else src if isinstance(src, list) else [])]
            if got:
                st["source"] = got[0] if one else got
    bm = raw.get("base_model")
    if isinstance(bm, str) and bm.startswith((".", "~")):
        raw["base_model"] = str((base / Path(bm).expanduser()).resolve())
    return raw
