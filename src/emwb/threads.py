"""Thread counts that change floats: one setting (`exec.torch_threads`), applied alike by every executor."""

from __future__ import annotations

import os


def run_threads(ex) -> int:
    """The run's torch thread count: `exec.torch_threads`, else the CPUs this process may use."""
    return ex.torch_threads or len(os.sched_getaffinity(0))


def apply_threads(n: int) -> None:
    """Use `n` torch threads here and in engines started from here (vLLM on CPU keeps torch's thread count only
    when OMP_NUM_THREADS is set, and Ray sets it to a task's CPU request unless told otherwise)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
