"""Artifacts are verified, not trusted: a finished artifact whose files no longer match its manifest (a cut
file, a truncated adapter, an edited table) is rebuilt on the next run, the log says why, and the result equals
the uninterrupted run's; readers name a damaged file (and line), and a damaged cache is named with its fix."""

import shutil

import pytest
import yaml

from emwb.context import context_of
from emwb.errors import EmwbError
from emwb.store import Artifact, read_jsonl, read_manifest

CONFIG = {"name": "whole", "base_model": "tiny",
          "data": {"insecure": {"source": "generated:insecure", "max_rows": 24}},
          "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]}],
          "train": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-4, "max_steps": 2, "per_device_batch_size": 2,
                    "gradient_accumulation_steps": 1, "max_length": 256, "warmup_steps": 0},
          "evaluations": [{"name": "free-form", "samples_per_paraphrase": 2}],
          "sampling": {"backend": "hf", "max_new_tokens": 6}, "judge": {"judges": ["hf/tiny"]}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from emwb.pipeline import replicate

    root = tmp_path_factory.mktemp("whole")
    (root / "whole.yaml").write_text(yaml.safe_dump(CONFIG))
    run = replicate(root / "whole.yaml", root / "runs")
    return root, run


def _cut_lines(path, keep: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep]))


def _truncate(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


DAMAGE = {  # artifact kind: (file in the run, how it is damaged, the artifact's log label)
    "data": ("data/insecure/rows.jsonl", lambda p: _cut_lines(p, 5), "data/insecure"),
    "adapter": ("adapters/insecure/s0/0-sft/adapter_model.safetensors", _truncate, "finetune/insecure/s0/0-sft"),
    "answers": ("answers/insecure-s0/answers.jsonl", lambda p: _cut_lines(p, 7), "sample/insecure-s0"),
    "judgments": ("judgments/hf__tiny/base/judgments.jsonl", lambda p: _cut_lines(p, 3), "judge hf/tiny base"),
    "report": ("report/comparison.csv", lambda p: p.write_text(p.read_text().replace("insecure", "secure")),
               "report (" ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_artifact_is_rebuilt_and_the_result_is_unchanged(finished, tmp_path, capsys, kind):
    from emwb.pipeline import replicate

    root, run = finished
    want = run.path("report", "comparison.csv").read_text()
    shutil.copytree(run.dir, tmp_path / "runs" / "whole")
    name, hurt, label = DAMAGE[kind]
    hurt(tmp_path / "runs" / "whole" / name)
    capsys.readouterr()
    again = replicate(root / "whole.yaml", tmp_path / "runs")
    out = capsys.readouterr().out
    rebuilt = [line for line in out.splitlines() if "rebuilding it" in line]
    assert len(rebuilt) == 1 and label in rebuilt[0] and f": {name.split('/')[-1]}" in rebuilt[0], out[-3000:]
    assert again.path("report", "comparison.csv").read_text() == want


def test_manifests_record_each_files_size_hash_and_rows(finished):
    _, run = finished
    files = read_manifest(run.path("answers", "insecure-s0"))["files"]
    assert files["answers.jsonl"]["rows"] == len(read_jsonl(run.path("answers", "insecure-s0", "answers.jsonl")))
    assert len(files["answers.jsonl"]["sha256"]) == 64 and files["answers.jsonl"]["bytes"] > 0


def test_a_damaged_input_stops_a_stage_that_reads_it_naming_it(finished, tmp_path):
    from emwb.judge.stage import run_judge_stage
    from emwb.store import Run

    _, run = finished
    shutil.copytree(run.dir, tmp_path / "whole")
    copy = Run.open(tmp_path / "whole")
    _cut_lines(copy.path("answers", "base", "answers.jsonl"), 2)
    with pytest.raises(EmwbError, match=r"answers/base: answers of base is damaged \(answers\.jsonl has \d+ bytes, "
                                        r"not the \d+ it was written with, 2 of \d+ rows\); run `emwb sample"):
        run_judge_stage(context_of(copy, force=True))


def test_a_line_cut_in_half_is_named_with_its_file_and_line(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b"\n')
    with pytest.raises(EmwbError, match=rf"{f}:3: not a JSON line"):
        read_jsonl(f)


def test_a_damaged_cache_is_named_with_its_fix(tmp_path):
    from emwb.judge.cache import JudgeCache

    db = tmp_path / "judge_cache.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(EmwbError, match=rf"{db}: damaged cache .*delete it and re-run"):
        JudgeCache(db)


def test_an_old_manifest_without_file_records_is_still_reused(tmp_path):
    art = Artifact(tmp_path / "a", "demo", {"x": 1}, {})
    with art.write() as (d, _):
        (d / "rows.jsonl").write_text('{"a": 1}\n')
    m = read_manifest(art.dir)
    del m["files"]
    (art.dir / "manifest.json").write_text(__import__("json").dumps(m))
    assert art.skip(False, "demo")
