"""Stage `data`: materialise each dataset under `data:` as `data/<name>/rows.jsonl` (chat or text rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emwb.catalog.sources import data_kind, source_of, split_source
from emwb.config import DataSpec
from emwb.layout import data_dir
from emwb.stages import Produced
from emwb.store import Artifact, log, write_jsonl

if TYPE_CHECKING:
    from emwb.context import StageContext


def leak_checks(spec: DataSpec) -> list:
    """The leak checks a dataset gets: its generator's, unless `leak_check: false`; with `leak_check: true`, every
    registered generator's."""
    from emwb.catalog.generators import GENERATORS

    if spec.leak_check is False:
        return []
    if spec.leak_check:
        return list(dict.fromkeys(g.leak_check for g in GENERATORS.values() if g.leak_check))
    scheme, arg = split_source(spec.source)
    own = GENERATORS.get(arg).leak_check if scheme == "generated" and arg in GENERATORS else None
    return [own] if own else []


def run_data_stage(ctx: StageContext) -> dict[str, str]:
    """Write every dataset; return {data name: stage key}."""
    run, force = ctx.run, ctx.force
    keys = {}
    mirror = run.exp.dataset_mirror
    for name, spec in run.exp.data.items():
        source, arg = source_of(spec)
        cfg = {"spec": spec.model_dump(mode="json"), "data_seed": run.exp.data_seed, **source.identity(arg, mirror)}
        art = Artifact(data_dir(run, name), "data", cfg, {})
        keys[name] = art.key
        if art.skip(force, f"data/{name}"):
            continue
        writer = None
        if spec.writer:
            from emwb.catalog.fetch import store_dir
            from emwb.catalog.generators import Writer

            writer = Writer(spec.writer, run.exp.judge.base_url, run.exp.exec, store_dir() / "writer_cache.sqlite")
        rows = source.load(arg, spec, run.exp.data_seed, mirror, writer)
        kind = data_kind(spec, mirror)
        for check in leak_checks(spec):
            check(rows, mirror, f"data.{name} ({spec.source})")
        with art.write() as (tmp, extra):
            write_jsonl(tmp / "rows.jsonl", rows)
            extra.update(rows=len(rows), kind=kind)
        log(f"data/{name}: wrote {len(rows)} {kind} rows")
    return keys


def produced(ctx: StageContext) -> list[Produced]:
    return [Produced(name, data_dir(ctx.run, name)) for name in ctx.exp.data]
