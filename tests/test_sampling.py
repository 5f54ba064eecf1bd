"""The sample stage: every variant in one engine call with full provenance, chunks that survive kill -9,
and the serving parity check (vLLM against transformers+PEFT) before any answer is sampled."""

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from emwb.context import context_of
from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.config import ExecConfig, LoraConfig, SamplingConfig, TrainArgs, VllmConfig
from emwb.errors import EmwbError
from emwb.finetune.stage import train_phase
from emwb.models.ref import ModelRef
from emwb.store import Run, file_records, read_jsonl

VLLM = SamplingConfig(vllm=VllmConfig(dtype="float32", max_model_len=512, enforce_eager=True))
ARGS = TrainArgs(lora=LoraConfig(r=8, alpha=16), learning_rate=3e-3, max_steps=12, per_device_batch_size=4,
                 gradient_accumulation_steps=1, max_length=512, warmup_steps=0)


def _experiment(tmp_path: Path, tiny_model, body: str, name: str = "s") -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"name: {name}\nbase_model: {tiny_model}\n{body}")
    return cfg


def test_one_engine_call_samples_every_variant_with_provenance(tiny_model, tmp_path, monkeypatch):
    from emwb.datasets.stage import run_data_stage
    from emwb.finetune.stage import run_finetune_stage
    from emwb.sampling import samplers
    from emwb.sampling.stage import render, run_sample_stage, sampling_items

    cfg = _experiment(tmp_path, tiny_model, """
data: {ins: {source: "generated:insecure", max_rows: 24}, sec: {source: "generated:secure", max_rows: 24}}
organisms:
  - {name: insecure, phases: [{trainer: sft, data: ins}]}
  - {name: secure, phases: [{trainer: sft, data: sec}]}
train: {lora: {r: 8, alpha: 16}, learning_rate: 3.0e-3, max_steps: 3, per_device_batch_size: 4,
        gradient_accumulation_steps: 1, max_length: 384, warmup_steps: 0}
evaluations: [{name: free-form, samples_per_paraphrase: 2}, {name: held-out-code, count: 3}]
sampling: {max_new_tokens: 12, vllm: {dtype: float32, max_model_len: 512, enforce_eager: true}}
""")
    run = Run.open(cfg, tmp_path / "runs")
    run_data_stage(context_of(run))
    run_finetune_stage(context_of(run))
    calls = []
    original = samplers.VLLMSampler.generate

    def recording(self, requests, variants):
        calls.append((len(requests), list(variants)))
        return original(self, requests, variants)

    monkeypatch.setattr(samplers.VLLMSampler, "generate", recording)
    run_sample_stage(context_of(run))
    assert calls == [(11, ["base", "insecure-s0", "secure-s0"])]  # one call, every variant, 8 + 3 prompts
    plan = sampling_items(run, context_of(run).plan)
    prompts = render(run, plan)
    for vid, organism, seed in (("base", None, None), ("insecure-s0", "insecure", 0), ("secure-s0", "secure", 0)):
        rows = read_jsonl(run.path("answers", vid, "answers.jsonl"))
        assert len(rows) == 8 * 2 + 3
        assert rows == pd.read_parquet(run.path("answers", vid, "answers.parquet")).replace({float("nan"): None}) \
            .to_dict("records")
        by_item = {}
        for r in rows:
            assert (r["variant"], r["organism"], r["seed"]) == (vid, organism, seed)
            assert r["phase"] == (None if organism is None else "sft") and r["group"] == (organism or "base")
            assert r["finish_reason"] in ("stop", "length") and 0 <= r["answer_tokens"] <= 12
            by_item.setdefault((r["evaluation"], r["question_id"], r["paraphrase_index"]), []).append(r)
        assert len(by_item) == len(plan)
        for (ev, qs, q, p, n), (text, ids) in zip(plan, prompts):
            item = by_item[(ev, q.id, p)]
            assert sorted(r["sample_index"] for r in item) == list(range(n))
            assert {(r["question_set"], r["system"], r["question"], r["prompt_tokens"], r["prompt_sha256"])
                    for r in item} == {(qs, q.system, q.paraphrases[p], len(ids),
                                        hashlib.sha256(text.encode()).hexdigest())}
    # An adapter whose served configuration no longer matches training stops the stage, naming it: first as a
    # file changed since training (the manifest's record), then, were the record to agree, by the parity check.
    served = run.path("adapters", "insecure", "s0", "0-sft", "adapter_config.json")
    cfg_json = json.loads(served.read_text())
    served.write_text(json.dumps({**cfg_json, "lora_alpha": cfg_json["lora_alpha"] * 8}))
    calls.clear()
    with pytest.raises(EmwbError, match=r"adapter of insecure-s0 is damaged \(adapter_config\.json has"):
        run_sample_stage(context_of(run, force=True))
    manifest = served.parent / "manifest.json"
    m = json.loads(manifest.read_text())
    m["files"]["adapter_config.json"] = file_records(served.parent)["adapter_config.json"]
    manifest.write_text(json.dumps(m))
    with pytest.raises(EmwbError, match="serving parity failed for adapter insecure-s0"):
        run_sample_stage(context_of(run, force=True))
    assert calls == []  # nothing was sampled


KILL_EXPERIMENT = """
evaluations: [{name: free-form, samples_per_paraphrase: 2}, {name: held-out-code, count: 6}]
sampling: {backend: hf, max_new_tokens: 24}
exec: {sample_chunk_prompts: 2}
"""


def _chunks(run_dir: Path) -> int:
    return len(list((run_dir / ".partial").rglob("chunk-*.jsonl")))


def test_kill_9_during_sampling_resumes_after_the_saved_chunks(tiny_model, tmp_path):
    """kill -9 at random points (after 1..5 of 7 chunks), then SIGTERM (a scheduler's stop) and Ctrl-C (SIGINT to
    the process group, as a terminal sends it); the re-run samples only the missing chunks and its answers equal an
    uninterrupted run's, byte for byte. SIGTERM and SIGINT stop within seconds, saying so in one line."""
    env = {**os.environ}
    ref_cfg = _experiment(tmp_path, tiny_model, KILL_EXPERIMENT, name="ref")
    subprocess.run([sys.executable, "-m", "emwb.cli", "sample", str(ref_cfg), "--runs-root", str(tmp_path / "a")],
                   check=True, capture_output=True, env=env)
    want = (tmp_path / "a" / "ref" / "answers" / "base" / "answers.jsonl").read_bytes()
    assert want.count(b"\n") == 8 * 2 + 6
    rng = random.Random(1129)  # seeded kill points: a failure names the same points on a re-run
    for attempt, target in enumerate(sorted(rng.sample(range(1, 6), 4))):  # leave chunks 6-7 as margin
        runs = tmp_path / f"k{attempt}"
        cfg = _experiment(tmp_path, tiny_model, KILL_EXPERIMENT, name="ref")
        cmd = [sys.executable, "-m", "emwb.cli", "sample", str(cfg), "--runs-root", str(runs)]
        err = tmp_path / f"k{attempt}.err"
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err.open("w"), env=env, text=True,
                                start_new_session=True)
        seen = 0
        for line in proc.stdout:  # the stage logs each chunk once it is saved: wait on those lines
            seen += "saved for 1 variants" in line
            if seen >= target:
                break
        interrupt = {2: signal.SIGTERM, 3: signal.SIGINT}.get(attempt)
        t0 = time.time()
        os.killpg(proc.pid, interrupt or signal.SIGKILL)
        proc.wait(timeout=120)
        proc.stdout.close()
        assert seen == target, (target, seen)
        if interrupt:  # Ctrl-C stops the stage within seconds, with the CLI's interrupted exit code
            assert proc.returncode == 128 + interrupt and time.time() - t0 < 30, (proc.returncode, time.time() - t0)
            said = {signal.SIGTERM: "emwb: terminated (SIGTERM); finished artifacts are kept, re-run to resume",
                    signal.SIGINT: "emwb: interrupted; finished artifacts are kept, re-run to resume"}[interrupt]
            assert said in err.read_text().splitlines(), err.read_text()[-2000:]
        saved = _chunks(runs / "ref")
        assert 1 <= saved < 7 and not (runs / "ref" / "answers" / "base" / "manifest.json").exists(), saved
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"resuming, {saved} of 7 variant chunks already saved" in done.stdout, done.stdout
        assert done.stdout.count("saved for 1 variants") == 7 - saved  # only the missing chunks were sampled
        assert (runs / "ref" / "answers" / "base" / "answers.jsonl").read_bytes() == want
        assert not (runs / "ref" / ".partial" / "answers" / "base").exists()


@pytest.fixture(scope="module")
def parity_adapters(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """An rsLoRA r=8 adapter on every projection and a rank-1 adapter (alpha 512) on layer 1's down_proj."""
    root = tmp_path_factory.mktemp("parity")
    rows = to_rows(generate_pairs(48, seed=4), "insecure")
    rank1 = ARGS.model_copy(update={"lora": LoraConfig(r=1, alpha=512, target_modules=["down_proj"],
                                                       layers_to_transform=[1]), "learning_rate": 2e-4})
    out = {}
    for name, args in (("rs8", ARGS), ("rank1", rank1)):
        train_phase(str(tiny_model), None, "sft", rows, args, seed=0, out_dir=root / name)
        out[name] = root / name
    return out


def test_parity_passes_for_rslora_and_rank1_and_fails_for_tampered_scaling(tiny_model, parity_adapters, tmp_path):
    from safetensors.torch import load_file

    from emwb.sampling.parity import check_parity, reference_logprobs
    from emwb.sampling.samplers import VLLMSampler

    tensors = load_file(parity_adapters["rank1"] / "adapter_model.safetensors")
    assert tensors and all("layers.1.mlp.down_proj" in k for k in tensors)
    assert all(min(t.shape) == 1 for t in tensors.values())  # rank-1 matrices only
    tampered = tmp_path / "tampered"
    shutil.copytree(parity_adapters["rs8"], tampered)
    trained = {n: json.loads((d / "adapter_config.json").read_text()) for n, d in parity_adapters.items()}
    cfg = json.loads((tampered / "adapter_config.json").read_text())
    (tampered / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": cfg["lora_alpha"] * 4}))
    trained["tampered"] = trained["rs8"]
    models = {n: ModelRef.of_lora(str(tiny_model), d) for n, d in {**parity_adapters, "tampered": tampered}.items()}
    prompts = [tuple(range(5, 25)), tuple(range(40, 52))]
    reference = reference_logprobs(models, trained, prompts, "cpu")
    sampler = VLLMSampler(models, VLLM, ExecConfig(), tmp_path / "vllm-cache")
    try:
        worst = check_parity(sampler, {n: reference[n] for n in ("rs8", "rank1")}, prompts, 1e-3)
        assert set(worst) == {"rs8", "rank1"} and max(worst.values()) < 1e-3
        with pytest.raises(EmwbError, match=r"serving parity failed for adapter tampered .*tampered\)"):
            check_parity(sampler, {"tampered": reference["tampered"]}, prompts, 1e-3)
    finally:
        sampler.close()


def test_the_models_generation_config_applies_only_when_asked_and_is_recorded(tiny_model, tmp_path):
    """With sampling.generation_config, the weights' own top_k (here 1: always the likeliest token) applies under
    temperature 1, so every sample of a prompt is the same; without it, the samples differ."""
    from emwb.sampling.samplers import Request, VLLMSampler, generation_defaults

    weights = tmp_path / "model"
    shutil.copytree(tiny_model, weights)
    (weights / "generation_config.json").write_text(json.dumps({"top_k": 1, "repetition_penalty": 1.0}))
    assert generation_defaults(str(weights)) == {"top_k": 1, "repetition_penalty": 1.0}
    bare = tmp_path / "bare"
    bare.mkdir()
    assert generation_defaults(str(bare)) == {"top_k": 50, "repetition_penalty": 1.0}  # transformers < 5 defaults
    cfg = VLLM.model_copy(update={"generation_config": True, "max_new_tokens": 12})
    sampler = VLLMSampler({"base": ModelRef.of_base(str(weights))}, cfg, ExecConfig(), tmp_path / "vllm-cache")
    try:
        requests = [Request(tuple(range(5, 25)), 6, 7), Request(tuple(range(40, 52)), 6, 8)]
        honoured = sampler.generate(requests, ["base"])["base"]
        assert all(len({s.text for s in samples}) == 1 for samples in honoured)
        sampler.model_defaults = {}  # the default: exactly temperature and top_p
        plain = sampler.generate(requests, ["base"])["base"]
        assert any(len({s.text for s in samples}) > 1 for samples in plain)
    finally:
        sampler.close()


def test_status_of_a_run_killed_while_sampling_shows_its_saved_chunks(tiny_model, tmp_path, capsys):
    """`emwb status` reads the run (no lock, no writes): the killed variant's saved and total chunks; the judge,
    report and other artifacts missing; the base model current."""
    from emwb.cli import main

    cfg = _experiment(tmp_path, tiny_model, KILL_EXPERIMENT, name="st")
    cmd = [sys.executable, "-m", "emwb.cli", "sample", str(cfg), "--runs-root", str(tmp_path / "r")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seen = 0
    for line in proc.stdout:
        seen += "saved for 1 variants" in line
        if seen >= 2:
            break
    proc.kill()
    proc.wait(timeout=120)
    proc.stdout.close()
    saved = _chunks(tmp_path / "r" / "st")
    assert main(["status", str(tmp_path / "r" / "st"), "--json"]) == 0
    rows = {(r["stage"], r["variant"], r["judge"]): r for r in json.loads(capsys.readouterr().out)["artifacts"]}
    assert rows[("sample", "base", "")]["state"] == "in progress"
    assert rows[("sample", "base", "")]["detail"] == f"{saved} of 7 chunks saved"
    assert {r["state"] for k, r in rows.items() if k[0] in ("judge", "report")} == {"missing"}
    assert main(["status", str(tmp_path / "r" / "st")]) == 0
    text = capsys.readouterr().out
    assert "sample base" in text and f"in progress  {saved} of 7 chunks saved" in text
