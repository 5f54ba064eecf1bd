"""A number field takes numbers only (issue 56, item 2): YAML's booleans (true, yes, on), quoted numbers and,
where an int is meant, 2.0 are one-line errors, whether they come from the file or from `--set`, which the error
then names instead of the file. Every number field of the schema is tried, phase `args:` included."""

from pathlib import Path

import pytest

from emwb.cli import main
from emwb.config import load_experiment
from emwb.errors import EmwbError
from emwb.plugins import load_plugins

# Every schema model that has a number field, with every optional number set (a None is no number to try).
FULL = """\
name: t
base_model: tiny
data:
  d: {source: 'generated:insecure', max_rows: 8}
  b: {source: 'generated:secure', max_rows: 8}
organisms:
  - name: o
    phases:
      - trainer: sft
        data: d
        mix: {data: b, fraction: 0.5}
        steer: {direction: em, layers: [1], alpha: 1.0}
        args:
          learning_rate: 0.001
          max_steps: 2
          lora: {r: 2, alpha: 4, dropout: 0.0, layers_to_transform: [1]}
          kl: {weight: 0.0, batch_size: 2}
          openai: {batch_size: 2, learning_rate_multiplier: 1.0, poll_interval_s: 1.0, max_poll_interval_s: 2.0}
  - {name: p, phases: [{trainer: sft, data: d, screen: {direction: em, layers: [1], drop_fraction: 0.1}}]}
  - {name: q, phases: [{trainer: sft, data: d, screen: {direction: em, above: 0.5}}]}
seeds: [0]
train: {kl: {batch_size: 2}, openai: {batch_size: 2, learning_rate_multiplier: 1.0}}
evaluations: [{name: free-form, count: 2, samples_per_paraphrase: 2}]
sampling: {backend: hf}
judge:
  judges: ['openai/a']
  modes: {'openai/a': {scoring: written}}
  prices: {a: {input: 1.0, output: 2.0}}
analysis: {vulnerable_above: 50.0}
published: {source: paper, values: {base: 1.0}}
exec: {parity_tolerance: 0.01, torch_threads: 1}
mechanisms:
  directions: [{name: em, layers: [0, 1], per_file: 4}]
  steering: [{direction: em, variant: base, layers: [1], alphas: [0.0, 1.0]}]
  ablations: [{direction: em, variant: o-s0, layers: [1]}]
features:
  - name: f
    layer: 1
    stream: {source: published, max_items: 4, per_file: 2}
    diff: {stream: {source: published, max_items: 4, per_file: 2}}
"""


def _numbers(value, path=()):
    """(dotted key, value) of every number in a dumped experiment (bools are not numbers)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, (*path, str(i)))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield ".".join(path), value


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, list[tuple[str, object]]]:
    load_plugins()  # the organisms' registered thresholds (analysis.vulnerable_above) are keys too
    path = tmp_path_factory.mktemp("numbers") / "exp.yaml"
    path.write_text(FULL)
    numbers = list(_numbers(load_experiment(path).model_dump(mode="python")))
    return path, numbers


@pytest.mark.parametrize("value, why", [("true", "not the boolean true"), ("'7'", "not the string '7'")])
def test_no_number_field_takes_a_boolean_or_a_string(full, value, why):
    path, numbers = full
    keys = {k for k, _ in numbers}
    for key in ("train.max_steps", "train.learning_rate", "sampling.temperature", "sampling.vllm.max_model_len",
                "organisms.0.phases.0.args.max_steps", "organisms.0.phases.0.args.lora.layers_to_transform.0",
                "organisms.0.phases.0.mix.fraction", "organisms.2.phases.0.screen.above", "seeds.0",
                "features.0.dictionary.k", "features.0.diff.stream.max_items", "mechanisms.steering.0.alphas.1",
                "judge.prices.a.input", "published.values.base", "analysis.vulnerable_above", "exec.torch_threads",
                "evaluations.0.count"):  # the experiment tried reaches every kind of number field
        assert key in keys, key
    assert len(keys) > 100
    took = []
    for key, _ in numbers:
        if key.startswith("judge.modes."):  # a judge string holds a '/': it is not a dotted KEY of --set
            continue
        try:
            load_experiment(path, [f"{key}={value}"])
        except EmwbError as err:
            msg = str(err)
            assert msg.startswith(f"--set {key}={value}: bad value for '") and str(path) not in msg, msg
            assert why in msg and "\n" not in msg, msg
        else:
            took.append(key)
    assert not took, f"{len(took)} number fields took {value}: {took}"


def test_an_int_field_takes_no_float_and_a_float_field_takes_an_int(full):
    path, numbers = full
    ints = [k for k, v in numbers if isinstance(v, int) and not k.startswith("judge.modes.")]
    floats = [k for k, v in numbers if isinstance(v, float) and not k.startswith("judge.modes.")]
    assert "train.max_steps" in ints and "train.learning_rate" in floats
    for key in ints:
        with pytest.raises(EmwbError, match="not 2.0 \\(a whole number is written without a decimal point\\)"):
            load_experiment(path, [f"{key}=2.0"])
    exp = load_experiment(path, ["sampling.temperature=1", "train.learning_rate=3e-4"])
    assert exp.sampling.temperature == 1.0 and exp.train.learning_rate == 3e-4
    path.with_name("e.yaml").write_text("name: t\nbase_model: tiny\ntrain: {learning_rate: 3e-4, weight_decay: 1E-2}\n")
    exp = load_experiment(path.with_name("e.yaml"))  # YAML 1.2 exponents (PyYAML reads 3e-4 as a string)
    assert exp.train.learning_rate == 3e-4 and exp.train.weight_decay == 0.01


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("yaml_text, key", [
    ("train: {learning_rate: yes}\n", "train.learning_rate"),
    ("sampling: {temperature: on}\n", "sampling.temperature"),
    ("exec: {max_retries: off}\n", "exec.max_retries"),
    ("train: {max_steps: true}\n", "train.max_steps"),
    ("train: {learning_rate: '3e-4'}\n", "train.learning_rate"),
    ("organisms:\n  - {name: o, phases: [{trainer: sft, data: d, args: {max_steps: true}}]}\n",
     "organisms.0.phases.0.args.max_steps"),
])
def test_config_check_refuses_a_boolean_in_the_file_naming_the_file(tmp_path, capsys, yaml_text, key):
    base = "name: t\nbase_model: tiny\ndata:\n  d: {source: 'generated:insecure', max_rows: 8}\n"
    organisms = "organisms:\n  - {name: o, phases: [{trainer: sft, data: d}]}\n"
    path = _write(tmp_path, base + (organisms if not yaml_text.startswith("organisms") else "") + yaml_text)
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"emwb: error: {path}: bad value for '{key}'"), lines


def test_set_true_on_max_steps_is_refused_naming_the_override(tmp_path, capsys):
    path = _write(tmp_path, "name: t\nbase_model: tiny\n")
    runs = tmp_path / "runs"
    assert main(["replicate", str(path), "--runs-root", str(runs), "--set", "train.max_steps=true"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["emwb: error: --set train.max_steps=true: bad value for 'train.max_steps': Input should be a "
                     "valid integer, not the boolean true (YAML reads yes, no, on, off, true and false as "
                     "booleans)"], lines
    assert not runs.exists()
