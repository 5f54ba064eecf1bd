"""One writer per run directory: a second writer stops at once naming the holder, waits with --wait, and takes
over a lock whose holder was killed."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import yaml

from emwb.errors import EmwbError
from emwb.runlock import read_holder, run_lock

HOLD = ("import sys; from emwb.runlock import run_lock\n"
        "with run_lock(sys.argv[1]):\n"
        "    print('held', flush=True); sys.stdin.readline()\n")


def _holder(run_dir) -> subprocess.Popen:
    """A process that holds `run_dir`'s lock until its stdin gets a line (or it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.wait(timeout=30) == 0


def test_a_second_replicate_stops_at_once_naming_the_holder(tmp_path):
    cfg = tmp_path / "lock.yaml"
    cfg.write_text(yaml.safe_dump({"name": "lock", "base_model": "tiny"}))
    holder = _holder(tmp_path / "runs" / "lock")
    try:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "emwb.cli", "replicate", str(cfg), "--runs-root",
                               str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
        assert time.time() - t0 < 60
        errors = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr
        assert f"pid {holder.pid} on {socket.gethostname()}" in errors[0] and "--wait" in errors[0], errors
        assert not (tmp_path / "runs" / "lock" / "base_model").exists()  # nothing was done
        assert read_holder(tmp_path / "runs" / "lock")["pid"] == holder.pid
    finally:
        _release(holder)
    assert read_holder(tmp_path / "runs" / "lock") == {}  # released: no holder recorded


def test_a_killed_holders_lock_is_taken_over_and_said_so(tmp_path):
    holder = _holder(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert read_holder(tmp_path / "run")["pid"] == holder.pid  # the record outlives its process
    said = []
    with run_lock(tmp_path / "run", log=said.append) as me:
        assert me["pid"] == os.getpid() and read_holder(tmp_path / "run")["pid"] == os.getpid()
    assert len(said) == 1 and "took over" in said[0] and f"pid {holder.pid}" in said[0], said


def test_wait_starts_when_the_holder_finishes(tmp_path):
    holder = _holder(tmp_path / "run")
    with pytest.raises(EmwbError, match=f"in use by pid {holder.pid}"):
        with run_lock(tmp_path / "run"):
            pass
    said = []
    timer = threading.Timer(1.5, _release, [holder])
    timer.start()
    t0 = time.time()
    with run_lock(tmp_path / "run", wait=True, log=said.append):
        waited = time.time() - t0
    timer.join()
    assert waited >= 1.0 and len(said) == 1 and said[0].startswith("waiting for"), (waited, said)


def test_the_lock_file_records_host_pid_and_command(tmp_path):
    with run_lock(tmp_path / "run") as me:
        recorded = json.loads((tmp_path / "run" / ".lock").read_text())
    assert recorded == me and recorded["host"] == socket.gethostname() and recorded["pid"] == os.getpid()
    assert recorded["command"] and recorded["started"]
