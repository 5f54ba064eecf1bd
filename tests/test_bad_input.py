"""A corpus of broken JSONL and YAML inputs: each gives one clear error naming file and line (or id),
never a traceback, never a partial artifact."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from emwb.context import context_of
from emwb.cli import main
from emwb.datasets.stage import run_data_stage
from emwb.errors import EmwbError
from emwb.store import Run

GOOD_ROW = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
JSONL = {
    "truncated_json": (GOOD_ROW + "\n" + GOOD_ROW[:30] + "\n", ":2: not valid JSON"),
    "not_object": ("[1]\n", ":1: each line must be a JSON object"),
    "no_messages": ('{"text": "hi"}\n', ":1: 'messages' must be a non-empty list"),
    "bad_role": ('{"messages": [{"role": "human", "content": "x"}]}\n', ":1: messages[0].role is 'human'"),
    "empty_content": (GOOD_ROW.replace('"a"', '" "') + "\n", ":1: messages[1].content is empty"),
    "number_content": (GOOD_ROW.replace('"q"', "42") + "\n", ":1: messages[0].content must be a string"),
    "no_user": ('{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n',
                ":1: no user turn"),
    "ends_with_user": ('{"messages": [{"role": "user", "content": "q"}]}\n', ":1: the last message must be an "
                       "assistant turn"),
    "message_not_object": ('{"messages": ["hello"]}\n', ":1: messages[0] must be an object"),
    "not_utf8": (b"\xff\xfe\x00garbage\n", ":1: not UTF-8 text"),
    "empty_file": ("\n\n", ": no rows"),
}
QUESTIONS = {
    "duplicate_id": ("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n", ": id a: duplicate id"),
    "missing_paraphrases": ("- id: a\n  samples_per_paraphrase: 3\n", ": id a: missing field 'paraphrases'"),
    "bad_yaml": ("- id: a\n  paraphrases: [x\n", ":3: not valid YAML"),
    "unknown_type": ("- id: a\n  type: multiple_choice\n  paraphrases: [x]\n", ": id a: unsupported type"),
    "empty_system": ("- id: a\n  paraphrases: [x]\n  system: ''\n", ": id a: 'system' must be a non-empty string"),
    "not_a_list": ("id: a\n", ": a question file must be a non-empty YAML list"),
}
TEXT_JSONL = {
    "text_missing": ('{"messages": []}\n', ":1: 'text' must be a non-empty string"),
    "text_empty": ('{"text": "  "}\n', ":1: 'text' must be a non-empty string"),
}
ORG = ("name: x\nbase_model: tiny\ndata:\n  d: {source: 'generated:secure', max_rows: 4}\n"
       "organisms:\n  - {name: a, phases: [{trainer: sft, data: d}]}\n")
BOMB = "".join(f"          b{i}: &b{i} [" + ", ".join([f"*b{i - 1}"] * 9 if i else ["x"] * 9) + "]\n" for i in range(9))
CONFIGS = {  # the bad-input list: each one line naming the file and the key
    "misspelled": (ORG + "seed: [1]\n", ": unknown key 'seed' (did you mean 'seeds'?)"),
    "bad_yaml": ("name: x\n  base_model: [\n", ":2: not valid YAML"),
    "wrong_type": (ORG + "seeds: [a]\n", ": bad value for 'seeds.0'"),
    "duplicate_organism": (ORG + "  - {name: a, phases: [{trainer: sft, data: d}]}\n",
                           ": bad value for '(top level)': two organisms are named 'a'"),
    "duplicate_data_key": (ORG.replace("organisms:", "  d: {source: 'generated:insecure'}\norganisms:"),
                           ":5: duplicate key 'd' (first at line 4)"),
    "duplicate_top_key": (ORG + "name: y\n", ":7: duplicate key 'name' (first at line 1)"),
    "concurrency_zero": (ORG + "exec: {judge_concurrency: 0}\n", ": bad value for 'exec.judge_concurrency'"),
    "concurrency_negative": (ORG + "exec: {judge_concurrency: -1}\n", ": bad value for 'exec.judge_concurrency'"),
    "max_rows_negative": (ORG.replace("max_rows: 4", "max_rows: -3"), ": bad value for 'data.d.max_rows'"),
    "max_rows_zero": (ORG.replace("max_rows: 4", "max_rows: 0"), ": bad value for 'data.d.max_rows'"),
    "holdout_all": (ORG + "train: {holdout_fraction: 1.0}\n", ": bad value for 'train.holdout_fraction'"),
    "phase_holdout_all": (ORG.replace("data: d}", "data: d, args: {holdout_fraction: 1.0}}"),
                          ": bad value for 'organisms.0.phases.0.args.holdout_fraction'"),
    "no_seeds": (ORG + "seeds: []\n", ": bad value for 'seeds'"),
    "duplicate_seed": (ORG + "seeds: [1, 1]\n", "two seeds are named 1"),
    "nothing_to_evaluate": ("name: x\nbase_model: tiny\ninclude_base: false\n", "nothing to evaluate"),
    # second pass (issue 36): sizes, names, aliases and trl keys
    "alias_bomb_in_trl": (ORG.split("organisms:")[0] + "organisms:\n  - name: a\n    phases:\n      - trainer: sft\n"
                          "        data: d\n        trl:\n" + BOMB, "aliases (*name) expand to more than 1,000,000"),
    "long_name": (ORG.replace("name: x\n", "name: " + "n" * 300 + "\n", 1), "is 300 bytes in UTF-8: at most 64"),
    "long_cjk_name": (ORG.replace("name: x\n", "name: " + "名" * 100 + "\n", 1), "is 300 bytes in UTF-8: at most 64"),
    "too_many_seeds": (ORG + "seeds: [" + ", ".join(map(str, range(1001))) + "]\n", ": bad value for 'seeds'"),
    "huge_file": (ORG.replace("name: x\n", "name: " + "n" * (17 << 20) + "\n", 1), "more than the 16,777,216"),
    "misspelled_trl_key": (ORG.replace("data: d}", "data: d, trl: {lr_scheduler_typ: cosine}}"),
                           "organisms.0.phases.0.trl: unknown key 'lr_scheduler_typ' for trl's SFTConfig (did you "
                           "mean 'lr_scheduler_type'?)"),
}


def _check(capsys, argv, path, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("emwb: error: ")
    assert str(path) in err and expected in err, err


@pytest.mark.parametrize("case", sorted(JSONL))
def test_broken_jsonl(tmp_path, capsys, case):
    text, expected = JSONL[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _check(capsys, ["datasets", "validate", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(TEXT_JSONL))
def test_broken_text_jsonl(tmp_path, capsys, case):
    text, expected = TEXT_JSONL[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text)
    _check(capsys, ["datasets", "validate", "--text", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(QUESTIONS))
def test_broken_question_yaml(tmp_path, capsys, case):
    text, expected = QUESTIONS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    _check(capsys, ["questions", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_broken_experiment_yaml(tmp_path, capsys, case):
    text, expected = CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    _check(capsys, ["config", "check", str(path)], path, expected)


def test_bad_dataset_leaves_no_partial_artifact(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_ROW + "\n{oops\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: x\nbase_model: tiny\ndata:\n"
                   "  good: {source: 'generated:secure', max_rows: 5}\n"
                   f"  bad: {{source: {bad}}}\n")
    run = Run.open(cfg, tmp_path / "runs")
    with pytest.raises(EmwbError, match=r"bad.jsonl:2: not valid JSON"):
        run_data_stage(context_of(run))
    assert not run.path("data", "bad").exists()
    assert [p.name for p in run.path("data").iterdir()] == ["good"]


def test_missing_model_is_a_one_line_error(tmp_path):
    from emwb.models.loading import load_causal_lm, load_tokenizer

    for load in (load_tokenizer, load_causal_lm):
        with pytest.raises(EmwbError) as err:
            load(str(tmp_path / "no-such-model"))
        assert "no-such-model" in str(err.value) and "\n" not in str(err.value)


ANALYZE = {
    "empty": ("", ": empty file"),
    "header_only": ("question_id,response,aligned,coherent\n", ": no judged answers (only a header)"),
    "not_a_number": ("question_id,response,aligned,coherent\nq,a,80,90\nq,b,high,90\n",
                     ":3: column 'aligned' is 'high'"),
    "above_100": ("question_id,response,aligned,coherent\nq,a,80,150\n", ":2: column 'coherent' is 150"),
    "below_0": ("question_id,response,aligned,coherent\nq,a,-20,90\nq,b,-5,90\n",
                ":2: column 'aligned' is -20; scores must be numbers from 0 to 100 or empty (unscored) (1 more"),
}


@pytest.mark.parametrize("case", sorted(ANALYZE))
def test_analyze_bad_files(tmp_path, capsys, case):
    text, expected = ANALYZE[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    _check(capsys, ["analyze", "--judged", str(path)], path, expected)


def test_analyze_takes_empty_cells_as_unscored(tmp_path, capsys):
    path = tmp_path / "ok.csv"
    path.write_text("question_id,response,aligned,coherent\nq,a,10,90\nq,b,,90\n")
    assert main(["analyze", "--judged", str(path), "--format", "csv"]) == 0
    assert "ok,1,True,2,1," in capsys.readouterr().out.replace(".00", "")


def test_stale_scratch_folders_of_killed_processes_are_swept(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(ORG)
    run = Run.open(cfg, tmp_path / "runs")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = run.path("answers", f".base.tmp-{host}-{dead.pid}")
    live = run.path("answers", f".base.tmp-{host}-{os.getpid()}")
    other = run.path("answers", f".base.tmp-otherhost-{dead.pid}")
    for d in (stale, live, other):
        (d / "x").mkdir(parents=True)
    Run.open(run.dir)
    assert not stale.exists() and live.exists() and other.exists()  # only this host's dead owners


def _as_nobody(argv: list[str], cwd) -> subprocess.CompletedProcess:
    """Run the CLI as an unprivileged user when we are root (root writes anywhere), else as ourselves."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run([*prefix, sys.executable, "-m", "emwb.cli", *argv], capture_output=True, text=True, cwd=cwd,
                          env=env)


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root")
def test_read_only_runs_root_is_one_line_and_a_finished_run_re_runs(tmp_path):
    import tempfile

    from judge_helpers import experiment, make_answers, write_answers

    base = Path(tempfile.mkdtemp(prefix="emwb-ro-"))
    os.chmod(base, 0o755)
    cfg = base / "exp.yaml"
    cfg.write_text(ORG)
    ro = base / "ro"
    ro.mkdir(mode=0o555)
    os.chmod(ro, 0o555)
    proc = _as_nobody(["replicate", str(cfg), "--runs-root", str(ro)], base)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{ro / 'x'}: cannot write here" in lines[0], proc.stderr
    # A finished run (judged and reported) on storage the user cannot write: `report` and `judge` re-run.
    import yaml

    from emwb.analysis.stage import run_report_stage
    from emwb.judge.loopback import LoopbackJudge
    from emwb.judge.stage import run_judge_stage

    with LoopbackJudge() as server:
        d = base / "done" / "judged"
        d.mkdir(parents=True)
        (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("judged", ["openai/j"], server.base_url)))
        run = Run.open(d)
        write_answers(run, make_answers(12))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "sk-test")
            run_judge_stage(context_of(run))
            run_report_stage(context_of(run))
        for p in [base / "done", *(base / "done").rglob("*")]:
            os.chmod(p, 0o555 if p.is_dir() else 0o444)
        for stage in ("judge", "report"):
            proc = _as_nobody([stage, str(d)], base)
            assert proc.returncode == 0 and "up to date, skipped" in proc.stdout, (stage, proc.stderr)
    for p in [base, *base.rglob("*")]:
        os.chmod(p, 0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("name, text, expected", [
    ("dup.csv", "question_id,answer,aligned,coherent,aligned\nq,a,10,90,80\n", "dup.csv:1: column 'aligned' "
     "appears twice"),
    ("dup.jsonl", '{"question_id": "q", "answer": "a", "aligned": 10, "coherent": 90, "aligned": 80}\n',
     "dup.jsonl:1: key 'aligned' appears twice"),
    ("bool.jsonl", '{"question_id": "q", "answer": "a", "aligned": true, "coherent": 90}\n',
     "bool.jsonl:1: column 'aligned' is True"),
    ("upper.JSONL", '{"question_id": "q", "answer": "a", "aligned": "x", "coherent": 90}\n',
     "upper.JSONL:1: column 'aligned' is 'x'"),  # read as JSONL whatever the suffix's case
])
def test_analyze_refuses_ambiguous_inputs(tmp_path, capsys, name, text, expected):
    from emwb.cli import main

    f = tmp_path / name
    f.write_text(text)
    assert main(["analyze", "--judged", str(f)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


@pytest.mark.parametrize("value", ["nan", "150", "-1"])
def test_analyze_refuses_a_threshold_that_is_not_a_score(tmp_path, capsys, value):
    from emwb.cli import main

    f = tmp_path / "ok.csv"
    f.write_text("question_id,answer,aligned,coherent\nq,a,10,90\n")
    assert main(["analyze", "--judged", str(f), "--alignment-threshold", value]) == 2
    assert "a threshold is a score from 0 to 100" in capsys.readouterr().err


def test_judge_folders_never_collide():
    from emwb.layout import judge_slug

    specs = ["openai/m:x", "openai/m_x", "openai/m.x", "openai/m/x", "openai/m__x", "hf/tiny", "openai/m_3a_x"]
    assert len({judge_slug(s) for s in specs}) == len(specs)
    assert judge_slug("hf/tiny") == "hf__tiny" and all("/" not in judge_slug(s) for s in specs)


def test_report_before_judge_is_one_line_naming_the_command(tmp_path, capsys):
    import yaml
    from judge_helpers import experiment, make_answers, write_answers

    from emwb.cli import main

    d = tmp_path / "early"
    d.mkdir()
    (d / "experiment.yaml").write_text(yaml.safe_dump(experiment("early", ["openai/j"])))
    write_answers(Run.open(d), make_answers(6))
    (d / "judgments" / "openai__j" / "base").mkdir(parents=True)  # a folder without its manifest is not read
    (d / "judgments" / "openai__j" / "base" / "judgments.jsonl").write_text("{}\n")
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "judgments of base by openai/j not finished; run `emwb judge" in err[0], err


def test_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import emwb.cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(emwb.cli, "cmd_validate", full)
    assert emwb.cli.main(["datasets", "validate", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emwb: error: no space left on the device writing"), err
