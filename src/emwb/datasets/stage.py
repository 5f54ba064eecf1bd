"""Stage `data`: materialise each dataset under `data:` as `data/<name>/rows.jsonl` (chat or text rows)."""

from __future__ import annotations

from emwb.catalog.sources import data_kind, source_of
from emwb.layout import data_dir
from emwb.store import Artifact, Run, log, write_jsonl

LEAK_CHECKED = ("generated:rm-demos", "generated:rm-prefs")  # checked unless `leak_check: false`


def run_data_stage(run: Run, force: bool = False) -> dict[str, str]:
    """Write every dataset; return {data name: stage key}."""
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
        if spec.leak_check or (spec.leak_check is None and spec.source in LEAK_CHECKED):
            from emwb.catalog.rm_biases import load_catalogue
            from emwb.catalog.rm_demos import check_no_leaks
            from emwb.catalog.rm_kits import load_kits

            check_no_leaks(rows, load_catalogue(mirror), load_kits(), f"data.{name} ({spec.source})")
        with art.write() as (tmp, extra):
            write_jsonl(tmp / "rows.jsonl", rows)
            extra.update(rows=len(rows), kind=kind)
        log(f"data/{name}: wrote {len(rows)} {kind} rows")
    return keys
