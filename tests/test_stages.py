"""The table of stages (emwb.stages): the one list every walker reads, and the context stages are handed."""

import re
from pathlib import Path

import pytest

from emwb.errors import EmwbError
from emwb.stages import Stage, register_stage, stage, table

SRC = Path(__file__).resolve().parents[1] / "src" / "emwb"
BUILTIN = ["base", "data", "directions", "finetune", "features", "sample", "projections", "detect", "judge", "report"]


def _texts() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text() for p in SRC.rglob("*.py")}


def test_the_table_in_order():
    assert [s.name for s in table()] == BUILTIN


def test_the_stage_list_is_written_once():
    """Acceptance 3: each stage's entry point is named only by its own module and the table; no other module
    calls a stage function (replicate, the CLI, status and Ray walk the table)."""
    for s in table():
        module, _, function = s.entry.partition(":")
        own = module.removeprefix("emwb.").replace(".", "/") + ".py"
        where = {name for name, text in _texts().items() if re.search(rf"\b{function}\b", text)}
        assert where == {own, "stages.py"}, (s.name, where)


def test_only_the_plan_builder_resolves_the_plan():
    """Acceptance 3: `git grep -n "plan_of\\|_plan" src/emwb` finds only emwb/plan.py."""
    assert {name for name, text in _texts().items() if re.search(r"plan_of|_plan", text)} == {"plan.py"}


def test_every_reads_names_an_earlier_stage():
    names = [s.name for s in table()]
    for i, s in enumerate(table()):
        assert set(s.reads) <= set(names[:i]), s.name


def test_a_misplaced_or_taken_stage_is_one_line():
    with pytest.raises(EmwbError, match="stage 'early' .* reads sample, which would not run before it"):
        register_stage(Stage("early", "x", "m:f", "m:g", reads=("sample",)), before="finetune")
    with pytest.raises(EmwbError, match="stage 'judge' is registered twice: by emwb.stages and by test_stages"):
        register_stage(Stage("judge", "x", "m:f", "m:g"))
    with pytest.raises(EmwbError, match="no stage 'nowhere' to place it by"):
        register_stage(Stage("lost", "x", "m:f", "m:g"), after="nowhere")
    with pytest.raises(EmwbError, match="unknown stage 'sampel'"):
        stage("sampel")
    assert [s.name for s in table()] == BUILTIN  # nothing was added


def test_a_run_directory_opened_as_a_context_carries_its_plan(tmp_path):
    import yaml

    from emwb.context import context_of
    from emwb.pipeline import open_context
    from emwb.store import PLAN_FILE, Run

    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"name": "ctx", "base_model": "tiny", "data": {"d": {"source": "generated:insecure"}},
                                   "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}],
                                   "seeds": [0, 1], "judge": {"judges": ["hf/tiny"]}}))
    ctx = open_context(cfg, tmp_path / "runs")
    assert [v.id for v in ctx.variants()] == ["base", "o-s0", "o-s1"]
    assert [v.id for v in ctx.narrowed({"o-s1"}).variants()] == ["o-s1"]
    assert (ctx.dir / PLAN_FILE).is_file() and context_of(Run.open(ctx.dir)).plan == ctx.plan
    assert stage("finetune").groups(ctx) == [("o-s0", ["o-s0"]), ("o-s1", ["o-s1"])]
    assert stage("sample").groups(ctx) == [("base+o-s0+o-s1", ["base", "o-s0", "o-s1"])]
    assert stage("judge").groups(ctx.narrowed({"base"})) == [("base", ["base"])]
