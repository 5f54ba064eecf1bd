"""Stage `data`: materialise each fine-tuning dataset of the experiment as `data/<name>/train.jsonl`."""

from __future__ import annotations

import random
from pathlib import Path

from emwb.config import DatasetSpec
from emwb.datasets.chatjsonl import validate_chat_jsonl, validate_text_jsonl
from emwb.datasets.codegen import VARIANTS, generate_pairs, to_rows
from emwb.datasets.fetch import fetch, file_sha256, load_registry
from emwb.datasets.rm_docs import generate_documents, load_bias_catalogue
from emwb.errors import EmwbError
from emwb.store import Artifact, Run, log, read_manifest, write_jsonl

GENERATED_DEFAULT_ROWS = 6000


def _source_identity(spec: DatasetSpec, mirror: str | None = None) -> dict:
    if spec.source.startswith("generated:"):
        variant = spec.source.split(":", 1)[1]
        if variant not in VARIANTS:
            raise EmwbError(f"dataset {spec.name}: unknown generated variant {variant!r}; expected one of {VARIANTS}")
        return {"generated": variant}
    if spec.source.startswith("upstream:"):
        name = spec.source.split(":", 1)[1]
        entry = load_registry().get(name)
        if entry is not None and entry.format != "jsonl":
            raise EmwbError(f"dataset {spec.name}: {spec.source} is an evaluation prompt set, not chat data; "
                            f"use it under sampling.question_sets")
        fetch(name, mirror=mirror)
        return {"upstream": name, "sha256": entry.sha256}
    path = Path(spec.source)
    if not path.is_file():
        raise EmwbError(f"dataset {spec.name}: source file {path} not found")
    return {"file_sha256": file_sha256(path)}


PRETRAIN_GENERATED = ("rm-docs",)
GENERATED_DOCS_DEFAULT = 2000


def _pretrain_identity(spec: DatasetSpec) -> dict:
    src = spec.pretrain_source
    if src is None:
        return {}
    if src.startswith("generated:"):
        if src.split(":", 1)[1] not in PRETRAIN_GENERATED:
            raise EmwbError(f"dataset {spec.name}: unknown pretrain_source {src!r}; expected a text JSONL file or "
                            f"one of {['generated:' + g for g in PRETRAIN_GENERATED]}")
        return {"pretrain": src, "catalogue_sha256": load_registry()["rm-biases"].sha256}
    if not Path(src).is_file():
        raise EmwbError(f"dataset {spec.name}: pretrain_source file {src} not found")
    return {"pretrain_sha256": file_sha256(Path(src))}


def _load_pretrain(spec: DatasetSpec, seed: int, mirror: str | None) -> list[dict]:
    """Plain-text documents for the continued-pretraining phase."""
    if spec.pretrain_source.startswith("generated:"):
        biases = load_bias_catalogue(fetch("rm-biases", mirror=mirror))
        return generate_documents(biases, spec.pretrain_max_rows or GENERATED_DOCS_DEFAULT, seed)
    rows = validate_text_jsonl(spec.pretrain_source)
    if spec.pretrain_max_rows and spec.pretrain_max_rows < len(rows):
        rows = random.Random(seed).sample(rows, spec.pretrain_max_rows)
    return rows


def _load(spec: DatasetSpec, seed: int, mirror: str | None = None) -> list[dict]:
    if spec.source.startswith("generated:"):
        pairs = generate_pairs(spec.max_rows or GENERATED_DEFAULT_ROWS, seed=seed)
        return to_rows(pairs, spec.source.split(":", 1)[1], seed=seed)
    path = spec.source
    if path.startswith("upstream:"):
        path = str(fetch(path.split(":", 1)[1], mirror=mirror))
    rows = validate_chat_jsonl(path)
    if spec.max_rows and spec.max_rows < len(rows):
        rows = random.Random(seed).sample(rows, spec.max_rows)
    return rows


def dataset_dir(run: Run, name: str) -> Path:
    return run.path("data", name)


def run_data_stage(run: Run, force: bool = False) -> dict[str, str]:
    """Write every dataset; return {dataset name: stage key}."""
    keys = {}
    for spec in run.exp.datasets:
        mirror = run.exp.dataset_mirror
        cfg = {"spec": spec.model_dump(mode="json"), "data_seed": run.exp.data_seed,
               **_source_identity(spec, mirror), **_pretrain_identity(spec)}
        art = Artifact(dataset_dir(run, spec.name), "data", cfg, {})
        keys[spec.name] = art.key
        if art.skip(force, f"data/{spec.name}"):
            continue
        rows = _load(spec, run.exp.data_seed, mirror)
        docs = _load_pretrain(spec, run.exp.data_seed, mirror) if spec.pretrain_source else []
        with art.write() as (tmp, extra):
            write_jsonl(tmp / "train.jsonl", rows)
            extra["rows"] = len(rows)
            if docs:
                write_jsonl(tmp / "pretrain.jsonl", docs)
                extra["pretrain_rows"] = len(docs)
        log(f"data/{spec.name}: wrote {len(rows)} rows" + (f" and {len(docs)} pretraining documents" if docs else ""))
    return keys


def data_keys(run: Run) -> dict[str, str]:
    """Keys of finished dataset artifacts (error if one is missing)."""
    out = {}
    for spec in run.exp.datasets:
        m = read_manifest(dataset_dir(run, spec.name))
        if m is None:
            raise EmwbError(f"{dataset_dir(run, spec.name)}: dataset not prepared; run `emwb data {run.dir}` first")
        out[spec.name] = m["key"]
    return out
