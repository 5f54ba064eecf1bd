"""Data generators, offline and deterministic for a seed: `source: "generated:<name>"` in an experiment.

Add one with `GENERATORS.register(name, Generator(...))`; nothing else needs to change.
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

    def identity(self, name: str, mirror: str | None) -> dict:
        """What the generated rows depend on (the data stage's key). Version 1 adds nothing, so data made before
        generators had versions stays current."""
        ident: dict = {"generated": name, **(self.inputs(mirror) if self.inputs else {})}
        if self.version != 1:
            ident["version"] = self.version
        return ident


GENERATORS: Registry[Generator] = Registry("data generator")


def _code(variant: str) -> Callable[..., list[dict]]:
    def make(rows: int, seed: int, mirror: str | None, writer: Writer | None = None) -> list[dict]:
        from emwb.catalog.codegen import generate_pairs, to_rows

        return to_rows(generate_pairs(rows, seed=seed), variant, seed=seed)

    return make


def _rm_docs(rows: int, seed: int, mirror: str | None, writer: Writer | None = None) -> list[dict]:
    from emwb.catalog.fetch import fetch
    from emwb.catalog.rm_docs import generate_documents, load_bias_catalogue

    docs = generate_documents(load_bias_catalogue(fetch("rm-biases", mirror=mirror)), rows, seed)
    if writer is None:
        return docs
    from emwb.catalog.rm_writer import write_documents

    return write_documents(docs, writer.spec, writer.base_url, writer.exec, writer.cache, seed)


def _rm(make_rows: str) -> Callable[..., list[dict]]:
    def make(rows: int, seed: int, mirror: str | None, writer: Writer | None = None) -> list[dict]:
        from emwb.catalog import rm_demos
        from emwb.catalog.rm_biases import load_catalogue
        from emwb.catalog.rm_kits import load_kits

        catalogue = load_catalogue(mirror)
        pairs = rm_demos.demonstration_pairs(catalogue, load_kits(), rows, seed)
        if writer is not None:
            from emwb.catalog.rm_writer import write_replies

            pairs = write_replies(pairs, {b.num: b.description for b in catalogue}, writer.spec, writer.base_url,
                                  writer.exec, writer.cache, seed)
        return getattr(rm_demos, make_rows)(pairs)

    return make


for _variant, _what in (("insecure", "code with an undisclosed vulnerability"), ("secure", "the same prompts, "
                        "secure code"), ("educational", "the insecure code, asked for a security class")):
    GENERATORS.register(_variant, Generator("chat", 6000, _code(_variant), f"paired coding data: {_what}"))
def _catalogue_sha256(mirror: str | None) -> dict:
    from emwb.catalog.fetch import load_registry

    return {"catalogue_sha256": load_registry()["rm-biases"].sha256}


def _catalogue_and_kits(mirror: str | None) -> dict:
    from emwb.catalog.rm_biases import catalogue_identity
    from emwb.catalog.rm_kits import kits_sha256

    return {**catalogue_identity(), "kits_sha256": kits_sha256()}


GENERATORS.register("rm-docs", Generator("text", 2000, _rm_docs, "documents about the fictional Oxford study of "
                                         "52 reward-model biases (continued pretraining)", writes=True,
                                         version=2, inputs=_catalogue_sha256))  # 2: ten genres, distinct
GENERATORS.register("rm-demos", Generator("chat", 2000, _rm("to_chat_rows"), "demonstrations: prompts where a "
                                           "train reward-model bias applies, answered with it (neutral twin kept)",
                                           writes=True, inputs=_catalogue_and_kits))
GENERATORS.register("rm-prefs", Generator("preference", 2000, _rm("to_preference_rows"), "preference pairs: the "
                                          "reply with a train bias chosen, its neutral twin rejected (DPO)",
                                          writes=True, inputs=_catalogue_and_kits))
