"""The environments are pinned: every requirement names one version, and the GPU one can run the paper's
optimizer (bitsandbytes) and trl's Liger kernels."""

import re
from pathlib import Path

import pytest

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"


@pytest.mark.parametrize("name", ["cpu.txt", "gpu.txt"])
def test_every_requirement_is_pinned_to_one_version(name):
    lines = [x.strip() for x in (REQUIREMENTS / name).read_text().splitlines()]
    reqs = [x for x in lines if x and not x.startswith("#")]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+-]*", r) for r in reqs), reqs


def test_the_gpu_environment_has_the_8bit_optimizer_and_the_same_training_stack_as_cpu():
    pins = {}
    for name in ("cpu.txt", "gpu.txt"):
        text = (REQUIREMENTS / name).read_text()
        pins[name] = dict(x.split("==") for x in text.splitlines() if "==" in x and not x.startswith("#"))
    gpu, cpu = pins["gpu.txt"], pins["cpu.txt"]
    assert {"bitsandbytes", "liger-kernel", "vllm", "torch"} <= set(gpu)
    for package in ("transformers", "trl", "peft", "datasets", "accelerate"):
        assert gpu[package] == cpu[package], package
