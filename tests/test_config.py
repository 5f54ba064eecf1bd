import subprocess
import sys
from pathlib import Path

import pytest

from emwb.config import load_experiment
from emwb.errors import EmwbError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


GOOD = "name: t\nbase_model: tiny\ndatasets:\n  - {name: insecure, source: 'generated:insecure'}\n"


def test_shipped_configs_validate():
    for cfg in (ROOT / "configs").glob("*.yaml"):
        exp = load_experiment(cfg)
        assert exp.datasets


def test_defaults_are_the_upstream_protocol(tmp_path):
    exp = load_experiment(_write(tmp_path, GOOD))
    ft = exp.finetune
    assert (ft.lora.r, ft.lora.alpha, ft.lora.use_rslora, ft.lora.dropout) == (32, 64, True, 0.0)
    assert (ft.learning_rate, ft.per_device_batch_size, ft.gradient_accumulation_steps) == (1e-5, 2, 8)
    assert (ft.warmup_steps, ft.weight_decay, ft.max_length, ft.epochs) == (5, 0.01, 2048, 1.0)
    assert exp.judge.judges == ["openai/gpt-4o-2024-08-06"] and exp.judge.min_mass == 0.25
    assert (exp.sampling.temperature, exp.sampling.top_p, exp.sampling.max_new_tokens) == (1.0, 1.0, 600)


@pytest.mark.parametrize("text,expected", [
    (GOOD + "finetune:\n  learnig_rate: 0.1\n", "unknown key 'finetune.learnig_rate' (did you mean 'learning_rate'?)"),
    (GOOD + "samplng: {}\n", "unknown key 'samplng' (did you mean 'sampling'?)"),
    (GOOD.replace("source", "sorce"), "unknown key 'datasets.0.sorce' (did you mean 'source'?)"),
    ("name: t\ndatasets: []\n", "missing required key 'base_model'"),
    (GOOD + "seeds: abc\n", "bad value for 'seeds'"),
    (GOOD + "finetune: [\n", "not valid YAML"),
])
def test_bad_config_is_one_line_naming_key_and_file(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(EmwbError) as err:
        load_experiment(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and expected in msg


def test_cli_misspelled_key_fails_and_writes_nothing(tmp_path):
    path = _write(tmp_path, GOOD + "judge:\n  judgs: [hf/tiny]\n")
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "emwb.cli", "replicate", str(path), "--runs-root", str(runs)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "judge.judgs" in lines[0] and str(path) in lines[0], proc.stderr
    assert not runs.exists()
