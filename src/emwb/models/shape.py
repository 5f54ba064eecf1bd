"""The base model's shape (decoder blocks, hidden size), read without loading any weights, and every layer, width
and k of an experiment checked against it before any work (`emwb.check`; the base stage again for a hub model
whose config it reads first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emwb.errors import EmwbError

if TYPE_CHECKING:
    from emwb.config import Experiment


@dataclass(frozen=True)
class Shape:
    """What a layer index and a dictionary's d_in are checked against; `what` names the model in messages."""

    layers: int
    hidden: int
    what: str


def config_shape(config: Path, what: str) -> Shape | None:
    """The shape a transformers config.json gives (a multimodal model's `text_config`), else None."""
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    raw = raw if isinstance(raw, dict) else {}
    text = raw.get("text_config") if "num_hidden_layers" not in raw else raw
    layers, hidden = (text or {}).get("num_hidden_layers"), (text or {}).get("hidden_size")
    if isinstance(layers, int) and isinstance(hidden, int):
        return Shape(layers, hidden, what)
    return None


def hub_shape(model_id: str, download: bool = False) -> Shape | None:
    """A Hugging Face model's shape from its config.json in the local cache (with `download`, fetched when absent:
    one small file); None when it cannot be had."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        path = try_to_load_from_cache(model_id, "config.json")
        if not isinstance(path, str) and download:
            path = hf_hub_download(model_id, "config.json")
    except Exception:  # noqa: BLE001 - not an id, offline, no access: the stage that loads the model says why
        return None
    return config_shape(Path(path), f"the base model ({model_id})") if isinstance(path, str) else None


def _beyond(layers: list[int] | None, shape: Shape) -> list[int]:
    return sorted({x for x in layers or () if x >= shape.layers})


def _blocks(shape: Shape) -> str:
    return f"{shape.what} has {shape.layers} decoder blocks (0-{shape.layers - 1})"


def check_layers(exp: Experiment, shape: Shape, source: str) -> None:
    """Every layer the experiment names (features, directions, and through them steering, ablations and
    preventative steering; LoRA's layers_to_transform) is a decoder block of the base model."""
    for i, f in enumerate(exp.features):
        if f.layer >= shape.layers:
            raise EmwbError(f"{source}: features.{i}.layer: {f.layer}, but {_blocks(shape)}; pick one of them")
    for i, d in enumerate(exp.mechanisms.directions):
        if bad := _beyond(d.layers, shape):
            raise EmwbError(f"{source}: mechanisms.directions.{i}.layers: {bad}, but {_blocks(shape)}")
    from emwb.config import recipes

    for i, o in enumerate(exp.organisms):
        for j, p in enumerate(o.phases):
            if not (bad := _beyond(exp.phase_args(p).lora.layers_to_transform, shape)):
                continue
            key, how = "train.lora.layers_to_transform", ""
            if "layers_to_transform" in (p.args.get("lora") or {}):
                key = f"organisms.{i}.phases.{j}.args.lora.layers_to_transform"
            elif p.recipe and "layers_to_transform" in (recipes()[p.recipe]["args"].get("lora") or {}):
                key = f"organisms.{i}.phases.{j}.recipe"
                how = f"; recipe {p.recipe} adapts them: set args.lora.layers_to_transform for this model"
            raise EmwbError(f"{source}: {key}: LoRA layers {bad}, but {_blocks(shape)}{how}")


def check_dictionaries(exp: Experiment, shape: Shape | None, source: str) -> None:
    """Each features entry's dictionary fits: k at most its width, its selected latents and their controls
    distinct latents of it, and a loaded one reads the base model's hidden size (when the shape is known)."""
    for i, f in enumerate(exp.features):
        where = f"{source}: features.{i}"
        if f.load:
            try:
                cfg = json.loads((Path(f.load) / "cfg.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise EmwbError(f"{where}.load: {f.load}/cfg.json is not readable JSON (a SAELens folder has "
                                "one)") from None
            width, d_in = (cfg.get("d_sae"), cfg.get("d_in")) if isinstance(cfg, dict) else (None, None)
            if shape is not None and isinstance(d_in, int) and d_in != shape.hidden:
                raise EmwbError(f"{where}.load: the dictionary reads {d_in} dimensions, but the residual stream of "
                                f"{shape.what} has {shape.hidden} (hidden_size); load one trained on this model")
        else:
            d = f.dictionary
            width = d.width
            if d.architecture == "topk" and d.k > d.width:
                raise EmwbError(f"{where}.dictionary.k: {d.k} latents active per token, but the dictionary has "
                                f"{d.width} (dictionary.width); lower k or raise width")
        need = f.top * (1 + f.controls)
        if isinstance(width, int) and need > width:
            raise EmwbError(f"{where}.top: {f.top} selected latents and {f.controls} matched random sets of as many "
                            f"need {need} distinct latents, but the dictionary has {width}; lower top or controls")
