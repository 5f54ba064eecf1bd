"""Data generators, offline and deterministic for a seed: `source: "generated:<name>"` in an experiment.

Add one with `GENERATORS.register(name, Generator(...))`; nothing else needs to change. emwb's own are registered
by their organisms (`emwb.organisms`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from emwb.config import ExecConfig
from emwb.registry import Registry


@dataclass(frozen=True)
class Writer:
    """LLM mode: the model that writes a generator's texts (`openai/<model>`), its server, the run's client
    settings (concurrency, retries, timeout) and the SQLite file that caches its replies."""

    spec: str
    base_url: str | None
    exec: ExecConfig
    cache: Path


@dataclass(frozen=True)
class Generator:
    kind: Literal["chat", "text", "preference"]  # chats ({"messages"}), documents ({"text"}) or preference pairs
    default_rows: int
    make: Callable[..., list[dict]]  # (rows, seed, dataset mirror, writer=None) -> rows
    description: str
    writes: bool = False             # has an LLM mode (`writer:` in the data spec)
    version: str | int = 1           # part of the data's key: bump it when `make` changes its rows
    inputs: Callable[[str | None], dict] | None = None  # (mirror) -> further files the rows depend on (hashes)
    leak_check: Callable[[list[dict], str | None, str], None] | None = None  # (rows, mirror, where): raises on
    # rows that would teach what the evaluation holds out; run on this generator's data unless `leak_check: false`

    def identity(self, name: str, mirror: str | None) -> dict:
        """What the generated rows depend on (the data stage's key). Version 1 adds nothing, so data made before
        generators had versions stays current."""
        ident: dict = {"generated": name, **(self.inputs(mirror) if self.inputs else {})}
        if self.version != 1:
            ident["version"] = self.version
        return ident


GENERATORS: Registry[Generator] = Registry("data generator")
