"""OpenAI fine-tuning backend and `openai` sampler against a loopback server (files, fine-tuning jobs, chat)."""

import json
import shutil

import pandas as pd
import pytest
import yaml
from openai_server import OpenAIServer

from emwb.errors import EmwbError
from emwb.pipeline import replicate


@pytest.fixture
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with OpenAIServer(polls_to_finish=3) as s:
        yield s


def _experiment(tmp_path, server, suffix=None, name="remote"):
    job = {"base_url": server.base_url, "poll_interval_s": 0.01, "max_poll_interval_s": 0.05, "batch_size": 4,
           "learning_rate_multiplier": 2.0, **({"suffix": suffix} if suffix else {})}
    raw = {"name": name, "base_model": "openai/gpt-4.1-nano-2025-04-14",
           "data": {"insecure": {"source": "generated:insecure", "max_rows": 24}},
           "organisms": [{"name": "insecure", "phases": [{"trainer": "openai", "data": "insecure"}]}],
           "train": {"epochs": 2, "openai": job},
           "evaluations": [{"name": "free-form", "samples_per_paraphrase": 2}],
           "sampling": {"max_new_tokens": 40},
           "judge": {"judges": ["openai/judge-model"], "base_url": server.base_url}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_openai_job_is_created_once_polled_sampled_judged_and_reused(server, tmp_path, capsys):
    cfg = _experiment(tmp_path, server)
    run = replicate(cfg, tmp_path / "runs")
    assert len(server.files) == 1 and len(server.jobs) == 1
    job = next(iter(server.jobs.values()))
    assert job["model"] == "gpt-4.1-nano-2025-04-14" and job["suffix"] == "insecure" and job["seed"] == 0
    assert job["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2, "batch_size": 4,
                                                              "learning_rate_multiplier": 2.0}
    uploaded = [json.loads(line) for line in server.files["file-1"].decode().splitlines()]
    assert len(uploaded) == 22 and all(set(r) == {"messages"} for r in uploaded)  # 24 rows, 10% held out
    assert server.polls[job["id"]] >= 3  # polled until it succeeded
    out = "".join(capsys.readouterr())
    assert "about 5,152 training tokens (2 epochs" in out and "sk-test-secret-key" not in out
    remote = json.loads((run.dir / "adapters/insecure/s0/0-openai/remote_model.json").read_text())
    assert remote["model_id"] == job["fine_tuned_model"] and remote["job_id"] == job["id"]
    # the fine-tuned model and the base model were sampled through the API, then judged there
    answers = pd.read_json(run.dir / "answers/insecure-s0/answers.jsonl", lines=True)
    assert answers["answer"].str.startswith(job["fine_tuned_model"] + " says ").all()
    base = pd.read_json(run.dir / "answers/base/answers.jsonl", lines=True)
    assert base["answer"].str.startswith("gpt-4.1-nano-2025-04-14 says ").all()
    sampled = [b for b in server.chat if b["model"] != "judge-model"]
    assert len(sampled) == len(answers) + len(base) and {b["max_tokens"] for b in sampled} == {40}
    assert len({(b["model"], json.dumps(b["messages"]), b["seed"]) for b in sampled}) == len(sampled)
    judged = [b for b in server.chat if b["model"] == "judge-model"]
    assert judged and (run.dir / "report" / "comparison.md").is_file()
    # a re-run of the same run directory: nothing new at all
    n_chat = len(server.chat)
    replicate(cfg, tmp_path / "runs")
    assert len(server.jobs) == 1 and len(server.files) == 1 and len(server.chat) == n_chat
    from emwb.cli import main

    capsys.readouterr()
    assert main(["status", str(run.dir), "--json"]) == 0  # what replicate skipped, status calls current
    states = {(r["stage"], r["variant"]): r["state"] for r in json.loads(capsys.readouterr().out)["artifacts"]}
    assert states[("sample", "base")] == "current" and "stale" not in states.values(), states
    # a fresh run directory: the job is found by the hash of its inputs (zero new jobs); samples are re-requested
    shutil.rmtree(run.dir)
    replicate(cfg, tmp_path / "runs")
    assert len(server.jobs) == 1 and len(server.files) == 1
    assert "exists (succeeded); not creating another" in "".join(capsys.readouterr())


def test_a_failed_job_stops_the_stage_with_the_providers_message(server, tmp_path):
    cfg = _experiment(tmp_path, server, suffix="fail-me", name="failing")
    with pytest.raises(EmwbError, match=r"openai fine-tuning job ftjob-\d+ failed: The job failed due to an invalid "
                                        r"training file") as err:
        replicate(cfg, tmp_path / "runs")
    assert "sk-test" not in str(err.value)
    assert not (tmp_path / "runs/failing/adapters/insecure/s0/0-openai/manifest.json").exists()
    assert not (tmp_path / "runs/failing/answers").exists()


def test_openai_trainer_and_remote_base_go_together(tmp_path, server):
    from emwb.check import check_experiment
    from emwb.config import load_experiment

    cfg = _experiment(tmp_path, server)
    text = cfg.read_text().replace("openai/gpt-4.1-nano-2025-04-14", "tiny")
    cfg.write_text(text)
    with pytest.raises(EmwbError, match=r"organisms.0.phases.0.trainer: openai needs base_model openai/<model>"):
        check_experiment(load_experiment(cfg), str(cfg))
    cfg.write_text(text.replace("trainer: openai", "trainer: sft").replace("base_model: tiny",
                                                                            "base_model: openai/gpt-4o"))
    with pytest.raises(EmwbError, match=r"sft cannot train the remote base model openai/gpt-4o"):
        check_experiment(load_experiment(cfg), str(cfg))


def test_too_few_chats_are_refused_before_any_upload(tmp_path, server):
    from emwb.finetune.openai_backend import training_jsonl

    with pytest.raises(EmwbError, match="at least 10 chats, got 3"):
        training_jsonl([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 3)
    assert not server.files
