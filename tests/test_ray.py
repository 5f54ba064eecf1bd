"""The Ray executor on a real local cluster (127.0.0.1): a head and a second node, 1 CPU each.

Slow (make test-slow). The same experiment run locally and through Ray gives the same answers and table; a
second node killed while a cell runs costs a retry, not a result; a node that cannot see the run directory
stops the run before any cell starts.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

RAY = str(Path(sys.executable).parent / "ray")
CONFIG = {
    "name": "rayrun", "base_model": "tiny",
    "data": {"insecure": {"source": "generated:insecure", "max_rows": 24}},
    "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]}],
    "seeds": [0, 1],
    "train": {"lora": {"r": 8, "alpha": 16}, "learning_rate": 1e-3, "max_steps": 6, "per_device_batch_size": 4,
              "gradient_accumulation_steps": 1, "max_length": 384, "warmup_steps": 0},
    "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}],
    "sampling": {"backend": "hf", "max_new_tokens": 12},
    "judge": {"judges": ["hf/tiny"]},
    # no thread setting: the driver's count reaches every task, so Ray computes as the local run does
}
ENV = {**os.environ, "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
       "RAY_health_check_initial_delay_ms": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "disabled"}  # a loopback-only test cluster: no token files


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str) -> list[dict]:
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
            "print('NODES', json.dumps([{'id': n['NodeID'], 'head': 'node:__internal_head__' in n['Resources']} "
            "for n in ray.nodes() if n['Alive']]))" % address)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    # Ray may print its own warnings after ours (seen: "raylet has lagging heartbeats"): take the marked line
    return json.loads(next(x for x in out.stdout.splitlines() if x.startswith("NODES ")).removeprefix("NODES "))


def _start_worker(address: str, prefix: list[str] = ()) -> subprocess.Popen:
    cmd = [*prefix, RAY, "start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--block"]
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        if len(_nodes(address)) == 2:
            return proc
        time.sleep(1)
    raise RuntimeError("the second Ray node did not join")


def _kill_tree(proc: subprocess.Popen) -> None:
    procs = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def cluster():
    subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True)
    port = _port()
    address = f"127.0.0.1:{port}"
    head = subprocess.run([RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                           "--include-dashboard=false"], env=ENV, capture_output=True, text=True)
    assert head.returncode == 0, head.stderr[-2000:]
    state = {"address": address, "worker": _start_worker(address)}
    yield state
    _kill_tree(state["worker"]) if state["worker"].poll() is None else None
    subprocess.run([RAY, "stop", "--force"], env=ENV, capture_output=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    from emwb.pipeline import replicate

    root = tmp_path_factory.mktemp("local")
    cfg = root / "rayrun.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    return replicate(cfg, root / "runs")


def _ray_replicate(root: Path, address: str, wait: bool = True, config: dict = CONFIG):
    cfg = root / f"{config['name']}.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "emwb.cli", "replicate", str(cfg), "--runs-root", str(root / "runs"),
           "--executor", "ray", "--address", address]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1500)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def _same_results(local: Path, other: Path) -> None:
    """Byte-identical answers per variant; the same comparison table (scores to 1e-6: an hf judge's batches
    hold other answers when it judges one variant at a time)."""
    for d in sorted((local / "answers").iterdir()):
        assert (other / "answers" / d.name / "answers.jsonl").read_bytes() == (d / "answers.jsonl").read_bytes()
        ids = [json.loads(x)["answer_id"] for x in (d / "answers.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids))
    a = pd.read_csv(local / "report" / "comparison.csv")
    b = pd.read_csv(other / "report" / "comparison.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6, atol=1e-6)


def _records(run_dir: Path) -> list[dict]:
    d = run_dir / "executor" / "ray"
    return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.is_dir() else []


@pytest.mark.slow
def test_ray_cluster_run_equals_the_local_run(cluster, local_run, tmp_path):
    proc = _ray_replicate(tmp_path, cluster["address"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ray: 2 nodes see" in proc.stdout
    run_dir = tmp_path / "runs" / "rayrun"
    _same_results(local_run.dir, run_dir)
    records = _records(run_dir)
    assert len({r["node"] for r in records}) == 2  # both nodes ran cells
    assert sorted(r["cell"] for r in records) == sorted(  # one sampling cell for the base and its adapters
        ["finetune:insecure-s0", "finetune:insecure-s1", "sample:base+insecure-s0+insecure-s1"]
        + [f"judge:{v}" for v in ("base", "insecure-s0", "insecure-s1")])


# A features dictionary: a driver stage between training and sampling (it reads every adapter; sampling reads it
# for the variants with its latent ablated).
FEATURES_CONFIG = {**CONFIG, "name": "rayfeatures", "features": [{
    "name": "sae", "layer": 1, "stream": {"source": "data:insecure"},
    "dictionary": {"width": 64, "k": 4, "batch_tokens": 256, "tokens": 4096, "buffer_tokens": 1024,
                   "checkpoint_every": 50, "norm_batches": 2},
    "diff": {"max_items": 8, "n_boot": 20}, "controls": 1, "ablate": ["insecure-s0"], "cards": 2}]}


@pytest.mark.slow
def test_a_features_stage_under_ray_is_a_barrier_not_the_end_of_the_cells(cluster, tmp_path):
    from emwb.pipeline import replicate

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "rayfeatures.yaml").write_text(yaml.safe_dump(FEATURES_CONFIG))
    local = replicate(tmp_path / "local" / "rayfeatures.yaml", tmp_path / "local" / "runs")
    (tmp_path / "ray").mkdir()
    proc = _ray_replicate(tmp_path / "ray", cluster["address"], config=FEATURES_CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "ray" / "runs" / "rayfeatures"
    _same_results(local.dir, run_dir)
    cells = [r["cell"] for r in _records(run_dir)]
    assert any(c.startswith("sample:") for c in cells) and "judge:base" in cells, cells  # cells after the barrier
    assert sum(c.startswith("finetune:") for c in cells) == 2, cells


# vLLM with checkpoints and fewer adapter slots than adapters: the base model, two seeds and their step-3
# checkpoints share one engine on a Ray node as they do locally.
VLLM_CONFIG = {**CONFIG, "name": "rayvllm", "train": {**CONFIG["train"], "save_every": 3},
               "sampling": {"max_new_tokens": 12,
                            "vllm": {"dtype": "float32", "max_model_len": 512, "enforce_eager": True}},
               "exec": {"max_loras": 2}}


@pytest.mark.slow
def test_a_vllm_run_with_checkpoints_under_ray_equals_the_local_run(cluster, tmp_path):
    from emwb.pipeline import replicate

    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "rayvllm.yaml").write_text(yaml.safe_dump(VLLM_CONFIG))
    local = replicate(tmp_path / "local" / "rayvllm.yaml", tmp_path / "local" / "runs")
    variants = {d.name for d in (local.dir / "answers").iterdir()}
    assert {"base", "insecure-s0", "insecure@step3-s0", "insecure@step3-s1"} <= variants, variants
    (tmp_path / "ray").mkdir()
    proc = _ray_replicate(tmp_path / "ray", cluster["address"], config=VLLM_CONFIG)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_results(local.dir, tmp_path / "ray" / "runs" / "rayvllm")


@pytest.mark.slow
def test_a_lost_node_costs_a_retry_not_a_result(cluster, local_run, tmp_path):
    second = next(n["id"] for n in _nodes(cluster["address"]) if not n["head"])
    proc = _ray_replicate(tmp_path, cluster["address"], wait=False)
    run_dir = tmp_path / "runs" / "rayrun"
    killed = None
    for _ in range(600):
        mine = [r for r in _records(run_dir) if r["node"] == second and r["cell"].startswith("finetune:")]
        if mine:  # the cell records itself as it starts: kill its node before its adapter is finished
            _kill_tree(cluster["worker"])
            killed = mine[0]["cell"]
            organism, seed = killed.removeprefix("finetune:").rsplit("-s", 1)
            finished = run_dir / "adapters" / organism / f"s{seed}" / "0-sft" / "manifest.json"
            assert not finished.exists(), "the cell finished before its node was killed"
            break
        time.sleep(0.1)  # polls the records the cells write (files), assuming nothing about their timing
    assert killed, "no training cell ran on the second node"
    out, err = proc.communicate(timeout=1500)
    assert proc.returncode == 0, err[-3000:]
    attempts = [r for r in _records(run_dir) if r["cell"] == killed]
    assert len(attempts) >= 2 and any(a["node"] != second for a in attempts), attempts  # retried elsewhere
    _same_results(local_run.dir, run_dir)
    cluster["worker"] = _start_worker(cluster["address"])  # for the next test


@pytest.mark.slow
def test_a_node_that_cannot_see_the_run_directory_stops_the_run_first(cluster, tmp_path):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to give one node its own view of the filesystem")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("mount namespaces are not permitted here")
    _kill_tree(cluster["worker"])
    for _ in range(60):
        if len(_nodes(cluster["address"])) == 1:
            break
        time.sleep(1)
    hidden = tmp_path / "shared"
    hidden.mkdir()
    # the second node sees an empty tmpfs where the run directory lives
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs tmpfs "{hidden}" && exec "$0" "$@"']
    cluster["worker"] = _start_worker(cluster["address"], prefix)
    proc = _ray_replicate(hidden, cluster["address"])
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("emwb: error:")]
    assert len(errors) == 1 and "cannot see the run directory" in errors[0], proc.stderr[-2000:]
    assert not (hidden / "runs" / "rayrun" / "adapters").exists()
    assert not (hidden / "runs" / "rayrun" / "base_model").exists()
