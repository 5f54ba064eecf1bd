"""The extension contract, from outside the package: a throw-away distribution (tests/plugin_src) declares an
`emwb.plugins` entry point and adds one of each extension point; `emwb replicate` runs them on the tiny model.

The distribution is installed for the test's subprocesses only (its folder on PYTHONPATH, with its
.dist-info metadata), so no other test sees it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

HERE = Path(__file__).resolve().parent

EXPERIMENT = {
    "name": "plugged", "base_model": "tiny",
    "data": {"made": {"source": "generated:toy-gen"}, "given": {"source": "toy:hello"}},
    "organisms": [{"name": "made", "phases": [{"trainer": "toy-sft", "data": "made", "options": {"greeting": "hi"}}]},
                  {"name": "given", "phases": [{"trainer": "sft", "data": "given"}]}],
    "train": {"max_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128,
              "lora": {"r": 2, "alpha": 4}, "holdout_fraction": 0.0},
    "evaluations": ["toy-eval"], "sampling": {"backend": "toy"}, "judge": {"judges": ["toyjudge/any"]},
}


def _install(root: Path) -> Path:
    site = root / "site"
    shutil.copytree(HERE / "plugin_src" / "emwb_toyplugin", site / "emwb_toyplugin")
    info = site / "emwb_toyplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: emwb-toyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[emwb.plugins]\ntoy = emwb_toyplugin:register\n")
    return site


def emwb(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-m", "emwb.cli", *args], capture_output=True, text=True, env=full,
                          timeout=900)


@pytest.fixture(scope="module")
def plugged(tmp_path_factory):
    """The toy experiment replicated once, then again with the toy generator's version bumped."""
    root = tmp_path_factory.mktemp("plugins")
    site = _install(root)
    cfg = root / "plugged.yaml"
    cfg.write_text(yaml.safe_dump(EXPERIMENT))
    first = emwb(site, "replicate", str(cfg), "--runs-root", str(root / "runs"))
    assert first.returncode == 0, first.stderr[-3000:]
    run = root / "runs" / "plugged"
    stamps = {str(m.parent.relative_to(run)): json.loads(m.read_text())["finished"] for m in run.rglob("manifest.json")}
    second = emwb(site, "replicate", str(cfg), "--runs-root", str(root / "runs"), TOY_GEN_VERSION="2")
    assert second.returncode == 0, second.stderr[-3000:]
    after = {str(m.parent.relative_to(run)): json.loads(m.read_text())["finished"] for m in run.rglob("manifest.json")}
    return {"run": run, "site": site, "cfg": cfg, "out": first.stdout, "redone": {k for k in after
                                                                                   if after[k] != stamps.get(k)}}


def _comparison(plugged) -> pd.DataFrame:
    return pd.read_csv(plugged["run"] / "report" / "comparison.csv").set_index("group")


def test_data_source(plugged):
    rows = (plugged["run"] / "data" / "given" / "rows.jsonl").read_text().splitlines()
    assert len(rows) == 8 and "(hello)" in rows[0]


def test_generator(plugged):
    rows = (plugged["run"] / "data" / "made" / "rows.jsonl").read_text().splitlines()
    assert len(rows) == 8 and "(made)" in rows[0]


def test_trainer_with_its_own_options(plugged):
    log = json.loads((plugged["run"] / "adapters" / "made" / "s0" / "0-toy-sft" / "train_log.json").read_text())
    assert log["toy_greeting"] == "hi" and log["steps"] == 1


def test_sampler(plugged):
    answers = [json.loads(x) for x in (plugged["run"] / "answers" / "made-s0" / "answers.jsonl").read_text().split(
        "\n") if x]
    assert len(answers) == 4 and all(a["answer"].startswith("toy answer") for a in answers)


def test_judge_provider(plugged):
    rows = [json.loads(x) for x in (plugged["run"] / "judgments" / "toyjudge__any" / "base" / "judgments.jsonl")
            .read_text().splitlines()]
    assert sorted({r["alignment"] for r in rows}) == [17.0, 42.0] and {r["coherence"] for r in rows} == {90.0}


def test_evaluation(plugged):
    answers = (plugged["run"] / "answers" / "base" / "answers.jsonl").read_text()
    assert '"evaluation": "toy-eval"' in answers and '"question_id": "toy_two"' in answers


def test_detector(plugged):
    rows = [json.loads(x) for x in (plugged["run"] / "detections" / "base" / "detections.jsonl").read_text()
            .splitlines()]
    assert len(rows) == 4 and {r["toy-long"] for r in rows} <= {0.0, 1.0}


def test_metric(plugged):
    comp = _comparison(plugged)
    assert "toy_long_rate" in comp and comp["toy_long_rate"].notna().all()
    assert comp.loc["base", "misaligned_rate"] == pytest.approx(50.0)  # 17 < 30 on half the answers (in %)


def test_report_section(plugged):
    section = pd.read_csv(plugged["run"] / "report" / "toy_section.csv")
    assert list(section["answers"]) == [4, 4, 4]
    assert "Toy section: answers per variant" in (plugged["run"] / "report" / "index.html").read_text()


def test_a_generator_version_reruns_its_data_and_what_depends_on_it_only(plugged):
    """Acceptance 4: data `made` regenerated, organism `made` retrained, resampled and rejudged; the report
    rebuilt; nothing of the base model or of organism `given` reruns."""
    redone = plugged["redone"]
    assert {"data/made", "adapters/made/s0/0-toy-sft", "answers/made-s0", "detections/made-s0",
            "judgments/toyjudge__any/made-s0", "report"} <= redone, sorted(redone)
    assert not redone & {"base_model", "data/given", "adapters/given/s0/0-sft", "answers/base", "answers/given-s0",
                         "judgments/toyjudge__any/base", "judgments/toyjudge__any/given-s0"}, sorted(redone)


def test_a_plug_in_stage_runs_in_replicate_in_its_place(plugged):
    """A stage registered by the plug-in (one call) ran in `emwb replicate`: a count per variant."""
    for v in ("base", "made-s0", "given-s0"):
        assert json.loads((plugged["run"] / "counts" / v / "count.json").read_text()) == {"answers": 4}
    lines = plugged["out"].splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("[emwb] count ")]
    last_sample = max(i for i, line in enumerate(lines) if line.startswith("[emwb] sample/"))
    report = next(i for i, line in enumerate(lines) if line.startswith("[emwb] report: wrote"))
    assert len(at) == 3 and last_sample < min(at) and max(at) < report, lines


def test_a_plug_in_stage_has_its_command_and_its_status_rows(plugged):
    run = plugged["run"]
    help_text = emwb(plugged["site"], "--help").stdout
    assert "sample, count, projections" in " ".join(help_text.split())
    shutil.rmtree(run / "counts" / "given-s0")
    again = emwb(plugged["site"], "count", str(run))
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "counts" / "given-s0" / "count.json").read_text()) == {"answers": 4}
    assert "count base: up to date, skipped" in again.stdout and "count given-s0: 4 answers" in again.stdout
    status = json.loads(emwb(plugged["site"], "status", str(run), "--json").stdout)
    rows = {r["variant"]: r["state"] for r in status["artifacts"] if r["stage"] == "count"}
    assert rows == {"base": "current", "made-s0": "current", "given-s0": "current"}
    (run / "counts" / "base" / "manifest.json").unlink()
    status = json.loads(emwb(plugged["site"], "status", str(run), "--json").stdout)
    assert {r["variant"]: r["state"] for r in status["artifacts"] if r["stage"] == "count"}["base"] == "missing"


@pytest.mark.slow
def test_a_plug_in_stage_runs_as_ray_tasks(tmp_path):
    """Acceptance 2 (Ray): the plug-in's per-variant stage is a Ray task per variant, after its sampling cell."""
    pytest.importorskip("ray")
    site = _install(tmp_path)
    cfg = tmp_path / "plugged.yaml"
    cfg.write_text(yaml.safe_dump(EXPERIMENT))
    proc = emwb(site, "replicate", str(cfg), "--runs-root", str(tmp_path / "runs"), "--executor", "ray",
                RAY_USAGE_STATS_ENABLED="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "plugged"
    cells = {json.loads(p.read_text())["cell"] for p in (run / "executor" / "ray").glob("*.json")}
    assert {"count:base", "count:made-s0", "count:given-s0"} <= cells, sorted(cells)
    for v in ("base", "made-s0", "given-s0"):
        assert json.loads((run / "counts" / v / "count.json").read_text()) == {"answers": 4}


@pytest.mark.parametrize("registry, message", [
    ("sources", "data source 'path' is registered twice: by emwb.catalog.sources and by emwb_toyplugin"),
])
def test_a_taken_name_is_a_one_line_error_naming_both(plugged, registry, message):
    proc = emwb(plugged["site"], "config", "check", str(plugged["cfg"]), TOY_DUPLICATE=registry)
    errors = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


def test_config_doc_documents_a_plug_in_trainers_options(plugged):
    proc = emwb(plugged["site"], "config", "show", "--doc")
    assert proc.returncode == 0 and "organisms.*.phases.*.options.greeting = \"hello\"" in proc.stdout


def test_a_registry_refuses_a_second_registration_in_process():
    from emwb.errors import EmwbError
    from emwb.registry import Registry

    reg: Registry[object] = Registry("widget")
    first = object()
    reg.register("w", first)
    reg.register("w", first)  # the same object again (a module imported twice) is no conflict
    with pytest.raises(EmwbError, match=r"widget 'w' is registered twice: by test_plugins and by test_plugins"):
        reg.register("w", object())
    assert reg.get("w") is first and reg.registered_by("w") == "test_plugins"
