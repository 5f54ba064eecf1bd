"""The `mechanisms:` block: directions read from items, and the steered and ablated variants built from them.

Steered and ablated variants are rows like any other (sampled, judged, with CIs); they are sampled with
transformers (vLLM cannot edit the residual stream), so an experiment with any needs `sampling.backend: hf`,
and its unedited variants are sampled the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from emwb.config.base import F, Float, Int, Layer, Strict


class DirectionSpec(Strict):
    """A mean-difference direction per layer, read by the run's base model."""

    name: str = F(..., "how steering and ablations name it (letters, digits, - and _)", pattern=r"^[A-Za-z0-9_-]+$")
    source: str = F("published", "a registered direction source (`emwb config show --doc` lists them): published "
                                 "= the judged answers of the registered published files, grouped by `rule`")
    rule: str = F("em", "the group rule (emwb/catalog/direction_groups.yaml): em = misaligned minus aligned answers")
    layers: list[Layer] = Field(..., min_length=1, description="decoder blocks whose output is read (0 = the first)")
    per_file: Int | None = F(40, "answers per published file, spread over its questions (None: all 400)", ge=1)
    files: list[str] | None = F(None, "published files by label (None: all 25)")
    max_answer_tokens: Int = F(256, "answer tokens read per item", ge=1)
    pooling: Literal["answer_mean", "last_prompt_token"] = F(
        "answer_mean", "an item's vector: its answer's tokens averaged, or the last prompt token's (before the answer)")
    subset: Literal["all", "train", "test"] = F("all", "sources whose items have a train/test split: the items of "
                                                      "which split define the direction (each tag's own direction "
                                                      "is kept for every split)")
    per_group: Int = F(4, "sources that read a number of items per tag (see the source): that many", ge=1)
    controls: Int = F(3, "random unit directions per layer drawn (seeded) for the ablations' controls", ge=0)


class SteeringSpec(Strict):
    """A sweep: one steered variant per (layer, alpha), each adding alpha x the layer's mean residual norm x the
    unit direction at that layer."""

    direction: str = F(..., "a direction's name")
    variant: str = F("base", "the variant steered (a variant id: base, insecure-s0, ...)")
    layers: list[Layer] = Field(..., min_length=1, description="layers steered, one at a time")
    alphas: list[Float] = Field(..., min_length=1, description="steering strengths (include 0 as the control)")


class AblationSpec(Strict):
    """The direction projected out of a variant's residual stream at the layers given, beside `controls` random
    unit directions ablated the same way."""

    direction: str = F(..., "a direction's name")
    variant: str = F(..., "the variant ablated (a variant id: insecure-s0, ...)")
    layers: list[Layer] | None = F(None, "layers ablated at once (None: every layer the direction has)")
    controls: Int = F(3, "random directions ablated as controls (at most the direction's `controls`)", ge=0)


class Mechanisms(Strict):
    directions: list[DirectionSpec] = Field(default_factory=list, description="directions the run computes")
    steering: list[SteeringSpec] = Field(default_factory=list, description="steering sweeps (variants)")
    ablations: list[AblationSpec] = Field(default_factory=list, description="ablations with controls (variants)")
    read_by: list[str] = Field(default_factory=list, description="variants (ids: rm-s0, ...) whose own models also "
                                                                 "read every direction's items, after training (the "
                                                                 "projections stage): each direction as that model "
                                                                 "holds it, beside the base model's")
