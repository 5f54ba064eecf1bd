"""The training stage under a distributed launch (torchrun; `accelerate launch` sets the same variables):
two CPU processes (gloo DDP) train each phase together and the main process alone writes the artifacts."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emwb.errors import EmwbError

EXP = {"name": "ddp", "base_model": "tiny", "data": {"insecure": {"source": "generated:insecure", "max_rows": 40}},
       "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"},
                                                     {"trainer": "sft", "data": "insecure", "name": "again"}]}],
       "train": {"lora": {"r": 4, "alpha": 8}, "learning_rate": 1e-3, "max_steps": 3, "per_device_batch_size": 2,
                 "gradient_accumulation_steps": 2, "max_length": 256, "warmup_steps": 0},
       "judge": {"judges": ["hf/tiny"]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emwb(*args, cwd):
    return subprocess.run([sys.executable, "-m", "emwb.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_two_processes_train_each_phase_once_and_a_single_process_rerun_is_a_no_op(tmp_path):
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(EXP))
    for stage in (["base", "ddp.yaml", "--runs-root", "runs"], ["data", "runs/ddp"]):
        assert _emwb(*stage, cwd=tmp_path).returncode == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "emwb.cli",
                           "finetune", "runs/ddp"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp" / "adapters" / "insecure" / "s0"
    assert sorted(p.name for p in run.iterdir()) == ["0-sft", "1-again"]  # no scratch folders left
    for phase in ("0-sft", "1-again"):
        log = json.loads((run / phase / "train_log.json").read_text())
        assert log["processes"] == 2 and log["steps"] == 3
        assert (run / phase / "adapter_model.safetensors").is_file()
    assert json.loads((run / "1-again" / "train_log.json").read_text())["continued_from"].endswith("0-sft")
    # the process count is a run setting: one process finds both phases current
    again = _emwb("finetune", "runs/ddp", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("up to date") == 2, again.stdout
    shutil.rmtree(tmp_path / "runs")


def test_accumulation_is_split_across_processes_to_keep_the_global_batch(monkeypatch):
    from emwb.finetune.trainers import accumulation_per_process

    monkeypatch.setenv("WORLD_SIZE", "4")
    assert accumulation_per_process(8) == 2
    with pytest.raises(EmwbError, match="gradient_accumulation_steps 6 is not a multiple of the 4 processes"):
        accumulation_per_process(6)
    monkeypatch.delenv("WORLD_SIZE")
    assert accumulation_per_process(6) == 6
