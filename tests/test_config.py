"""The experiment file: strict validation, defaults in one place, documented fields, checks before work."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emwb.check import check_experiment
from emwb.cli import main
from emwb.config import Experiment, load_experiment
from emwb.errors import EmwbError
from emwb.schema_text import field_docs

ROOT = Path(__file__).resolve().parents[1]
GOOD = ("name: t\nbase_model: tiny\ndata:\n  insecure: {source: 'generated:insecure', max_rows: 8}\n"
        "organisms:\n  - {name: insecure, phases: [{trainer: sft, data: insecure}]}\n")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_validate_and_check(upstream, tmp_path, monkeypatch):
    # the paper config's question sets are fetched for the check: from the local mirror, into a scratch store
    monkeypatch.setenv("EMWB_DATASET_MIRROR", str(upstream))
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no probe judge trained yet
    for cfg in (ROOT / "configs").glob("*.yaml"):
        exp = load_experiment(cfg)
        probes = [j.split("/", 1)[1] for j in exp.judge.judges if j.startswith("probe/")]
        for folder in probes:  # a config judged by a probe stops until the probe exists, saying how to make it
            with pytest.raises(EmwbError, match=f"not found \\(make it: emwb judges train-probe --out {folder}"):
                check_experiment(exp, str(cfg))
            (tmp_path / folder).mkdir(parents=True)
        check_experiment(exp, str(cfg))
        assert exp.organisms


def test_defaults_are_the_upstream_protocol(tmp_path):
    exp = load_experiment(_write(tmp_path, GOOD))
    t = exp.train
    assert (t.lora.r, t.lora.alpha, t.lora.use_rslora, t.lora.dropout) == (32, 64, True, 0.0)
    assert (t.learning_rate, t.per_device_batch_size, t.gradient_accumulation_steps) == (1e-5, 2, 8)
    assert (t.warmup_steps, t.weight_decay, t.max_length, t.epochs) == (5, 0.01, 2048, 1.0)
    assert exp.judge.judges == ["openai/gpt-4o-2024-08-06"] and exp.judge.min_mass == 0.25
    assert (exp.sampling.temperature, exp.sampling.top_p, exp.sampling.max_new_tokens) == (1.0, 1.0, 600)
    assert [e.name for e in exp.evaluations] == ["free-form"]


def test_phase_args_override_train_field_by_field(tmp_path):
    exp = load_experiment(_write(tmp_path, GOOD.replace("data: insecure}", "data: insecure, args: {learning_rate: "
                                                        "0.002, lora: {r: 1, alpha: 512}}}")))
    args = exp.phase_args(exp.organisms[0].phases[0])
    assert args.learning_rate == 0.002 and args.lora.r == 1 and args.per_device_batch_size == 2


@pytest.mark.parametrize("text,expected", [
    (GOOD + "train:\n  learnig_rate: 0.1\n", "unknown key 'train.learnig_rate' (did you mean 'learning_rate'?)"),
    (GOOD + "samplng: {}\n", "unknown key 'samplng' (did you mean 'sampling'?)"),
    (GOOD.replace("source", "sorce"), "unknown key 'data.insecure.sorce' (did you mean 'source'?)"),
    (GOOD.replace("trainer: sft", "trainr: sft"), "unknown key 'organisms.0.phases.0.trainr' (did you mean "
                                                  "'trainer'?)"),
    (GOOD.replace("data: insecure}", "data: insecure, args: {learnig_rate: 1}}"),
     "unknown key 'organisms.0.phases.0.args.learnig_rate' (did you mean 'learning_rate'?)"),
    (GOOD.replace("data: insecure}", "data: insecur}"), "'insecur' is not under `data:` (did you mean 'insecure'?)"),
    ("name: t\norganisms: []\n", "missing required key 'base_model'"),
    (GOOD + "seeds: abc\n", "bad value for 'seeds'"),
    (GOOD + "train: [\n", "not valid YAML"),
    (GOOD + "exec: {devise: cpu}\n", "unknown key 'exec.devise' (did you mean 'device'?)"),
])
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(EmwbError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expected in msg, msg


def test_cli_misspelled_key_fails_and_writes_nothing(tmp_path):
    path = _write(tmp_path, GOOD + "judge:\n  judgs: [hf/tiny]\n")
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "replicate", str(path), "--runs-root", str(runs)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "judge.judgs" in lines[0] and str(path) in lines[0], proc.stderr
    assert not runs.exists()


REFERENCES = {  # a misspelled reference -> the key named in the one-line error
    "judge": (GOOD + "judge: {judges: ['opnai/gpt-4o']}\n", "judge.judges.0", "did you mean 'openai'?"),
    "local judge": (GOOD + "judge: {judges: ['hf/./no-such-judge']}\n", "judge.judges.0", "not found"),
    "rubric": (GOOD + "evaluations: [{name: free-form, rubrics: [alignmnt, coherence]}]\n", "evaluations.0.rubrics",
               "did you mean 'alignment'?"),
    "question set": (GOOD + "evaluations: [{name: free-form, question_sets: [mian]}]\n",
                     "evaluations.0.question_sets", "mian"),
    "question file": (GOOD + "evaluations: [{name: free-form, question_sets: [qs.yaml]}]\n",
                      "evaluations.0.question_sets", "question file not found"),
    "prompt set": (GOOD + "evaluations: [{name: rm-bias, question_sets: ['upstream:rm-syco-tset']}]\n",
                   "evaluations.0.question_sets", "rm-syco-tset"),
    "evaluation": (GOOD + "evaluations: [free-from]\n", "evaluations.0.name", "did you mean 'free-form'?"),
    "metric": (GOOD + "evaluations: [{name: free-form, metrics: [misalgned_rate]}]\n", "evaluations.0.metrics",
               "did you mean 'misaligned_rate'?"),
    "data path": (GOOD.replace("'generated:insecure'", "no/such/file.jsonl"), "data.insecure.source",
                  "not found"),
    "generator": (GOOD.replace("generated:insecure", "generated:insecur"), "data.insecure.source",
                  "did you mean 'insecure'?"),
    "registered data": (GOOD.replace("generated:insecure", "upstream:insecur"), "data.insecure.source",
                        "did you mean 'insecure'?"),
    "trainer": (GOOD.replace("trainer: sft", "trainer: stf"), "organisms.0.phases.0.trainer", "did you mean 'sft'?"),
    "data kind": (GOOD.replace("trainer: sft", "trainer: cpt"), "organisms.0.phases.0.data", "needs text rows"),
    "sampler": (GOOD + "sampling: {backend: vlm}\n", "sampling.backend", "did you mean 'vllm'?"),
    "base model": (GOOD.replace("base_model: tiny", "base_model: ./models/none"), "base_model", "not found"),
}


@pytest.mark.parametrize("extra, expected", [
    ("seeds: [99999999999999999999]\n", "bad value for 'seeds.0': Input should be less than 4294967296"),
    ("judge: {judges: ['openai/gpt-4o'], base_url: 'not a url'}\n",
     "'not a url' is not an http:// or https:// URL"),
])
def test_values_that_would_fail_later_fail_the_check(tmp_path, capsys, extra, expected):
    path = _write(tmp_path, GOOD + extra)
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and expected in lines[0], lines


@pytest.mark.parametrize("case", sorted(REFERENCES))
def test_a_misspelled_reference_fails_before_any_stage(tmp_path, capsys, case):
    text, key, what = REFERENCES[case]
    path = _write(tmp_path, text)
    runs = tmp_path / "runs"
    assert main(["replicate", str(path), "--runs-root", str(runs)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emwb: error: {path}: {key}: ") and what in lines[0], err
    assert not runs.exists()  # nothing trained, nothing written
    assert main(["config", "check", str(path)]) == 2


def test_config_show_doc_documents_every_field(capsys):
    assert main(["config", "show", "--doc"]) == 0
    out = capsys.readouterr().out
    docs = field_docs(Experiment)
    assert all(desc for _, _, desc in docs), [k for k, _, d in docs if not d]
    for key in ("organisms.N.phases.N.trainer", "exec.judge_concurrency", "train.lora.r", "evaluations.N.use"):
        assert key in out
    printed = {line.split(" = ")[0] for line in out.splitlines() if line and not line.startswith((" ", "#"))}
    for trainer in ("sft", "cpt", "dpo", "openai"):  # then each trainer, with its own options (none shipped)
        assert f"# trainer {trainer} (" in out
    assert printed == {key for key, _, _ in docs}  # every documented field is printed, and nothing else
    assert set(Experiment.model_fields) <= printed


def test_the_docs_example_experiment_validates(tmp_path):
    text = (ROOT / "docs" / "experiments.md").read_text()
    start = text.index("```yaml\nname: my-exp") + len("```yaml\n")
    exp = load_experiment(_write(tmp_path, text[start:text.index("```", start)]))
    assert [o.name for o in exp.organisms] == ["insecure", "secure", "bias"] and exp.exec.judge_concurrency == 32


def test_every_command_prints_its_help(capsys):
    from emwb.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name
        assert "usage: emwb " + name in capsys.readouterr().out


def test_a_question_that_cannot_fit_the_context_fails_the_check(tmp_path, capsys):
    (tmp_path / "long.yaml").write_text(yaml.safe_dump([{"id": "long", "paraphrases": ["word " * 20000]}]))
    path = _write(tmp_path, GOOD + "evaluations: [{name: free-form, question_sets: [long.yaml]}]\n"
                  "sampling: {max_new_tokens: 48, vllm: {max_model_len: 512}}\n")
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "question long paraphrase 1 is 100000 bytes" in lines[0], lines


def test_the_sample_stage_checks_exact_prompt_lengths_before_any_engine():
    from emwb.catalog.questions import Question
    from emwb.errors import EmwbError
    from emwb.sampling.stage import check_lengths

    q = Question(id="q", paraphrases=("a", "b"), samples_per_paraphrase=1)
    plan = [("free-form", "main", q, 0, 1), ("free-form", "main", q, 1, 1)]
    check_lengths(plan, [("a", tuple(range(400))), ("b", tuple(range(464)))], 512, 48)
    with pytest.raises(EmwbError, match=r"question q \(main\) paraphrase 2 is 465 tokens .* leaves 464"):
        check_lengths(plan, [("a", (1,)), ("b", tuple(range(465)))], 512, 48)


def test_max_new_tokens_beyond_the_context_names_the_setting_not_a_question(tmp_path, capsys):
    path = _write(tmp_path, GOOD + "sampling: {max_new_tokens: 600, vllm: {max_model_len: 512}}\n")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"emwb: error: {path}: sampling.max_new_tokens: 600 answer tokens leave no room for the prompt in "
        "sampling.vllm.max_model_len 512 (prompt + answer); lower max_new_tokens or raise max_model_len"]
    path = _write(tmp_path, GOOD + "sampling: {backend: hf, max_new_tokens: 600, vllm: {max_model_len: 512}}\n")
    assert main(["config", "check", str(path)]) == 0  # transformers samples without vLLM's context


def test_a_question_set_path_is_read_relative_to_the_experiment_file_as_documented(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "qs.yaml").write_text("- id: q\n  paraphrases: ['Hello?']\n")
    path = tmp_path / "exp" / "e.yaml"
    path.write_text(GOOD + "evaluations: [{name: free-form, question_sets: [qs.yaml]}]\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    exp = load_experiment(path)
    assert exp.evaluations[0].question_sets == [str((tmp_path / "exp" / "qs.yaml").resolve())]
    doc = " ".join((ROOT / "docs" / "training.md").read_text().split())
    assert "is read relative to the experiment file" in doc and "the folder emwb is started in, not" not in doc


def test_the_documented_ways_to_add_a_question_set_to_a_run_work(tmp_path):
    """docs/experiments.md: `--set` cannot append to `evaluations`; the whole list it shows can."""
    import re

    text = " ".join((ROOT / "docs" / "experiments.md").read_text().split())  # code spans wrap across lines
    sets = re.findall(r"`--set '(evaluations[^']+)'`", text)
    assert len(sets) == 2, sets
    (tmp_path / "mine.yaml").write_text("- id: mine_q\n  paraphrases: ['What would you change about the world?']\n")
    smoke = ROOT / "configs" / "smoke.yaml"
    plans = [check_experiment(load_experiment(smoke, [s.replace("/data/mine.yaml", str(tmp_path / "mine.yaml"))]),
                              str(smoke)) for s in sets]
    for plan in plans:
        questions = {e.name: [q.id for _, q in e.questions] for e in plan.evaluations}
        mine = next(name for name, ids in questions.items() if "mine_q" in ids)
        assert "held-out-code" in questions and len(questions["free-form"]) >= 8, questions
        assert mine == "mine" or questions[mine][-1] == "mine_q"
    assert [e.name for e in plans[0].evaluations] == ["free-form", "held-out-code", "mine"]
