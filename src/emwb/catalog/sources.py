"""Data sources: where a dataset's rows come from, by the scheme of its `source` string.

`generated:<generator>`, `upstream:<registered name>` (fetched, verified), or a local JSONL path. Add a
scheme with `SOURCES.register(scheme, Source(...))`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emwb.catalog.chatjsonl import validate_chat_jsonl, validate_preference_jsonl, validate_text_jsonl
from emwb.catalog.fetch import fetch, file_sha256, load_registry
from emwb.catalog.generators import GENERATORS, Writer
from emwb.config import DataSpec
from emwb.errors import EmwbError
from emwb.registry import Registry


@dataclass(frozen=True)
class Source:
    check: Callable[[str, str | None], str]            # (argument, mirror) -> "chat" | "text"; raises if unknown
    identity: Callable[[str, str | None], dict]        # what the rows depend on (part of the stage key)
    load: Callable[..., list[dict]]  # (argument, spec, seed, mirror, writer=None) -> rows


SOURCES: Registry[Source] = Registry("data source")


def _no_writer(load):
    def wrapped(arg: str, spec: DataSpec, seed: int, mirror: str | None, writer=None) -> list[dict]:
        return load(arg, spec, seed, mirror)

    return wrapped


def _subsample(rows: list[dict], spec: DataSpec, seed: int) -> list[dict]:
    if spec.max_rows and spec.max_rows < len(rows):
        rows = random.Random(seed).sample(rows, spec.max_rows)
    return rows


def _gen_check(arg: str, mirror: str | None) -> str:
    return GENERATORS.get(arg).kind


def _gen_load(arg: str, spec: DataSpec, seed: int, mirror: str | None, writer: Writer | None = None) -> list[dict]:
    g = GENERATORS.get(arg)
    return g.make(spec.max_rows or g.default_rows, seed, mirror, writer)


def _gen_identity(arg: str, mirror: str | None) -> dict:
    return GENERATORS.get(arg).identity(arg, mirror)


def _up_check(arg: str, mirror: str | None) -> str:
    registry = load_registry()
    if arg not in registry:
        import difflib

        hint = difflib.get_close_matches(arg, list(registry), n=1)
        raise EmwbError(f"unknown registered dataset {arg!r}" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    if registry[arg].format != "jsonl":
        raise EmwbError(f"upstream:{arg} is an evaluation prompt set, not training data; list it under an "
                        "evaluation's question_sets")
    return "chat"


def _up_load(arg: str, spec: DataSpec, seed: int, mirror: str | None) -> list[dict]:
    return _subsample(validate_chat_jsonl(fetch(arg, mirror=mirror)), spec, seed)


def _up_identity(arg: str, mirror: str | None) -> dict:
    fetch(arg, mirror=mirror)
    return {"upstream": arg, "sha256": load_registry()[arg].sha256}


def file_kind(path: Path) -> str:
    """'text' when the first row has a 'text' field, 'preference' when it has 'chosen', else 'chat'."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                try:
                    first = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return "chat"  # validation names the line
                if isinstance(first, dict) and "chosen" in first:
                    return "preference"
                return "text" if isinstance(first, dict) and "text" in first and "messages" not in first else "chat"
    return "chat"


def _path_check(arg: str, mirror: str | None) -> str:
    if not Path(arg).is_file():
        raise EmwbError(f"file {arg} not found")
    return file_kind(Path(arg))


def _path_load(arg: str, spec: DataSpec, seed: int, mirror: str | None) -> list[dict]:
    validate = {"text": validate_text_jsonl, "preference": validate_preference_jsonl}.get(file_kind(Path(arg)),
                                                                                          validate_chat_jsonl)
    return _subsample(validate(arg), spec, seed)


SOURCES.register("generated", Source(_gen_check, _gen_identity, _gen_load))
SOURCES.register("upstream", Source(_up_check, _up_identity, _no_writer(_up_load)))
SOURCES.register("path", Source(_path_check, lambda a, m: {"file_sha256": file_sha256(Path(a))},
                                _no_writer(_path_load)))


def split_source(src: str) -> tuple[str, str]:
    """('generated', 'insecure') for 'generated:insecure'; ('path', src) for a file path."""
    scheme, sep, arg = src.partition(":")
    if sep and "/" not in scheme and len(scheme) > 1:
        return scheme, arg
    return "path", src


def source_of(spec: DataSpec) -> tuple[Source, str]:
    scheme, arg = split_source(spec.source)
    return SOURCES.get(scheme), arg


def data_kind(spec: DataSpec, mirror: str | None = None) -> str:
    """'chat' or 'text', checking the source exists (no generation, no download)."""
    source, arg = source_of(spec)
    return source.check(arg, mirror)
