"""Where a direction's items come from (`mechanisms.directions[].source`): a registry of sources.

A source turns a direction's spec into items the base model reads: (question, answer) pairs, each with its
group (1 positive, 0 negative, NaN neither) and a tag (-1: none). Where a source tags its items (`tag_prefix`),
the directions stage also keeps each tag's own direction (positive minus negative items of that tag, by
`tag_groups`), as
`<tag_prefix><tag>.<layer>` in directions.npz. emwb registers `published` (the judged answers of the published
files, grouped by a rule of direction_groups.yaml); organisms register their own
(`DIRECTION_SOURCES.register(name, DirectionSource(...))`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from emwb.registry import Registry


@dataclass(frozen=True)
class SourceItems:
    items: list[tuple[str, str]]
    groups: np.ndarray              # per item: 1.0 positive, 0.0 negative, NaN neither
    tags: np.ndarray                # per item: an int tag, -1 for none
    counts: dict = field(default_factory=dict)   # recorded in the manifest
    tag_groups: np.ndarray | None = None  # the groups of the per-tag directions (None: `groups`)


@dataclass(frozen=True)
class DirectionSource:
    items: Callable[[object, str | None, int], SourceItems]   # (spec, dataset mirror, data seed)
    description: str
    rule: Callable[[object], dict]    # the spec's group rule ({"min_items": n, "source": ...}); in the key
    rule_name: Callable[[object], str]
    tag_prefix: str | None = None     # keep each tag's own direction under this name


DIRECTION_SOURCES: Registry[DirectionSource] = Registry("direction source")


def _published(d, mirror: str | None, seed: int) -> SourceItems:
    from emwb.catalog.published import load_published, published_names, resolve_files, stratified_subset
    from emwb.models.directions import group_of

    names = resolve_files(d.files) if d.files else published_names()
    df = stratified_subset(load_published(names, mirror), d.per_file, seed)
    groups = group_of(df.rename(columns={"ref_alignment": "alignment", "ref_coherence": "coherence"}), d.rule)
    return SourceItems(list(zip(df["question"], df["answer"])), groups, np.full(len(df), -1), {"files": len(names)})


def _rule(d) -> dict:
    from emwb.models.directions import group_rules

    return group_rules()[d.rule]


DIRECTION_SOURCES.register("published", DirectionSource(
    _published, "the judged answers of the registered published files (GPT-4o scores decide the groups, by "
                "`rule`)", _rule, lambda d: d.rule))
