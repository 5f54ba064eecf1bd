"""Stage `directions`: each direction of the experiment's `mechanisms:` block -> `directions/<name>/`.

The run's base model reads the items (published judged answers: their GPT-4o scores decide the groups); per
layer the mean difference of the groups' answer-mean activations, the layer's mean residual norm (the mean norm of
those activations: the unit in which steering strengths are given), and `controls` random unit directions
(seeded) for the ablations' controls, all in `directions.npz`, with the group counts in the manifest. The reading
is saved in chunks under `.partial/activations/<name>/`, so a killed stage resumes without rereading them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from emwb.catalog.direction_sources import DIRECTION_SOURCES
from emwb.config import DirectionSpec
from emwb.layout import DIRECTIONS_FILE, base_key, base_model_path, directions_dir, partial_dir
from emwb.models.activations import ActivationStore, collect_activations
from emwb.models.directions import mean_difference
from emwb.stages import DIRECTIONS, SAMPLE, Produced
from emwb.store import Artifact, Run, log

if TYPE_CHECKING:
    from emwb.context import StageContext


def _compute(run: Run, d: DirectionSpec, model=None, reader: str = "") -> tuple[dict[str, np.ndarray], dict]:
    """The direction's arrays and counts, its items read by the base model (or by `model`, the variant `reader`)."""
    from emwb.models.loading import resolve_device

    source = DIRECTION_SOURCES.get(d.source)
    got = source.items(d, run.exp.dataset_mirror, run.exp.data_seed)
    items, groups, tags, counts = got.items, got.groups, got.tags, dict(got.counts)
    tag_groups = groups if got.tag_groups is None else got.tag_groups
    store = ActivationStore(partial_dir(run, "activations", d.name, *(["read_by"] if reader else [])))
    acts = collect_activations(base_model_path(run), items, d.layers, run.exp.exec.judge_batch_size,
                               resolve_device(run.exp.exec.device), d.max_answer_tokens, store,
                               desc=f"directions/{d.name}{' read by a variant' if reader else ''}",
                               pooling=d.pooling, model=model, fingerprint=reader)
    rule = source.rule(d)
    diff = mean_difference(acts, groups, int(rule.get("min_items", 10)), f"direction {d.name} ({d.source})")
    rng = np.random.default_rng(run.exp.data_seed)
    arrays = {}
    for li, layer in enumerate(d.layers):
        arrays[f"direction.{layer}"] = diff[li]
        arrays[f"norm.{layer}"] = np.array(np.linalg.norm(acts[:, li], axis=1).mean())
        for k in range(1, d.controls + 1):
            r = rng.normal(size=diff.shape[-1])
            arrays[f"random{k}.{layer}"] = r / np.linalg.norm(r)
        if source.tag_prefix:  # every tag's own direction: its positive items minus its negative ones
            for t in sorted({int(t) for t in tags if t >= 0}):
                pos, neg = (tags == t) & (tag_groups == 1), (tags == t) & (tag_groups == 0)
                arrays[f"{source.tag_prefix}{t}.{layer}"] = acts[pos, li].mean(0) - acts[neg, li].mean(0)
    counts.update(items=len(items), positive=int((groups == 1).sum()), negative=int((groups == 0).sum()),
                  source=d.source, rule=source.rule_name(d), rule_source=rule.get("source", ""))
    return arrays, counts


def run_directions_stage(ctx: StageContext) -> dict[str, str]:
    """Compute every direction that is not current; {name: stage key}."""
    run, force = ctx.run, ctx.force
    keys = {}
    for d in run.exp.mechanisms.directions:
        source = DIRECTION_SOURCES.get(d.source)
        config = {**d.model_dump(mode="json"), "rule_definition": source.rule(d), "seed": run.exp.data_seed}
        art = Artifact(directions_dir(run, d.name), "directions", config, {"base": base_key(run)})
        keys[d.name] = art.key
        if art.skip(force, f"directions/{d.name}"):
            continue
        arrays, counts = _compute(run, d)
        with art.write() as (tmp, extra):
            np.savez(tmp / DIRECTIONS_FILE, **arrays)
            extra.update(counts)
        log(f"directions/{d.name}: {counts['positive']} items in the positive group, {counts['negative']} in the "
            f"negative, layers {d.layers}")
    return keys


def run_projections_stage(ctx: StageContext) -> dict[str, str]:
    """Stage `projections`: every unedited variant's answers read by its own model (each phase, each kept
    checkpoint), projected on each direction's unit vector per layer -> `projections/<name>/projections.csv`
    (mean, bootstrap CI, answers): does the direction appear after the documents, before any demonstration?"""
    import pandas as pd

    from emwb.layout import answers_dir, answers_file, finished_key, model_ref, projections_dir, read_by_file
    from emwb.models.interventions import read_direction
    from emwb.models.loading import load_ref, resolve_device
    from emwb.store import read_jsonl

    run, force = ctx.run, ctx.force
    keys = {}
    plain = [v for v in ctx.plan.variants if v.edit is None]
    readers = [v for v in plain if v.id in run.exp.mechanisms.read_by]
    for d in run.exp.mechanisms.directions:
        folder = directions_dir(run, d.name)
        dkey = finished_key(folder, f"direction {d.name}", DIRECTIONS, run)
        inputs = {"direction": dkey, **{f"answers:{v.id}": finished_key(answers_dir(run, v.id), f"answers of {v.id}",
                                                                        SAMPLE, run) for v in plain}}
        how = {"layers": d.layers, "max": d.max_answer_tokens, "pooling": d.pooling,
               **({"read_by": [v.id for v in readers]} if readers else {})}
        art = Artifact(projections_dir(run, d.name), "projections", how, inputs)
        keys[d.name] = art.key
        if art.skip(force, f"projections/{d.name}"):
            continue
        arrays = read_direction(folder / DIRECTIONS_FILE)
        rows = []
        for v in plain:
            answers = read_jsonl(answers_file(run, v.id))
            model, _ = load_ref(model_ref(run, v), resolve_device(run.exp.exec.device))
            acts = collect_activations(base_model_path(run), [(a["question"], a["answer"]) for a in answers],
                                       d.layers, run.exp.exec.judge_batch_size, max_answer_tokens=d.max_answer_tokens,
                                       model=model, desc=f"projections/{d.name}/{v.id}", pooling=d.pooling)
            for li, layer in enumerate(d.layers):
                u = arrays[f"direction.{layer}"] / np.linalg.norm(arrays[f"direction.{layer}"])
                proj = acts[:, li] @ u
                boot = np.random.default_rng(0).choice(proj, (1000, len(proj))).mean(1) if len(proj) else []
                lo, hi = np.percentile(boot, [2.5, 97.5]) if len(proj) else (np.nan, np.nan)
                rows.append({"direction": d.name, "variant": v.id, "group": v.group, "phase": v.phase,
                             "step": v.step, "layer": layer, "mean_projection": float(proj.mean()) if len(proj)
                             else np.nan, "ci_low": float(lo), "ci_high": float(hi), "answers": len(proj)})
            del model
        read = {}
        for v in readers:  # the direction as each reader's own model holds it
            model, _ = load_ref(model_ref(run, v), resolve_device(run.exp.exec.device))
            read[v.id] = _compute(run, d, model, inputs[f"answers:{v.id}"])[0]  # chunks keyed by the model's key
            del model
        with art.write() as (tmp, extra):
            pd.DataFrame(rows).to_csv(tmp / "projections.csv", index=False)
            for vid, arrays in read.items():
                np.savez(tmp / read_by_file(vid), **arrays)
            extra.update(variants=len(plain), read_by=sorted(read))
        log(f"projections/{d.name}: {len(plain)} variants x {len(d.layers)} layers")
    return keys


def produced_directions(ctx: StageContext) -> list[Produced]:
    """Each direction, with the activation chunks a killed reading saved."""
    from emwb.layout import partial_dir

    out = []
    for d in ctx.exp.mechanisms.directions:
        chunks = len(list(partial_dir(ctx.run, "activations", d.name).glob("*.npy")))
        out.append(Produced(d.name, directions_dir(ctx.run, d.name), f"{chunks} activation chunks saved" if chunks
                            else ""))
    return out


def produced_projections(ctx: StageContext) -> list[Produced]:
    from emwb.layout import projections_dir

    return [Produced(d.name, projections_dir(ctx.run, d.name)) for d in ctx.exp.mechanisms.directions]
