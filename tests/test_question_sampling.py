"""Question sets downstream: the sampler gets each question's system prompt and samples_per_paraphrase."""

from emwb.layout import answers_dir
from emwb.sampling import stage as sample_stage
from emwb.sampling.samplers import HFSampler
from emwb.store import Run, read_jsonl


def _run(tmp_path, body: str, base: str = "tiny") -> Run:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: q\nbase_model: {base}\n{body}")
    return Run.open(cfg, tmp_path / "runs")


def test_sampler_receives_system_prompts_and_counts(tiny_model, upstream, tmp_path, monkeypatch):
    qfile = upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"
    run = _run(tmp_path, f"evaluations: [{{name: fp, use: free-form, question_sets: ['{qfile}', main]}}]\n"
                         "sampling: {backend: hf, max_new_tokens: 3}\n", base=str(tiny_model))
    seen = []
    original = HFSampler.generate

    def recording(self, requests, variants):
        seen.extend(requests)
        return original(self, requests, variants)

    monkeypatch.setattr(HFSampler, "generate", recording)
    plan = sample_stage.sampling_plan(run)
    assert len(plan) == 24 + 8 and all(n == 100 for *_, n in plan)  # each file's samples_per_paraphrase
    monkeypatch.setattr(sample_stage, "sampling_plan", lambda r: [(e, qs, q, i, 1) for e, qs, q, i, _ in plan])
    sample_stage.run_sample_stage(run)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    sent = [tok.decode(list(r.token_ids)) for r in seen]
    with_system = [t for t in sent if t.startswith("<|im_start|>system\n")]
    assert len(sent) == 32 and len(with_system) == 8 and all("JSON" in t for t in with_system)
    rows = read_jsonl(answers_dir(run, "base") / "answers.jsonl")
    json_rows = [r for r in rows if r["question_id"].endswith("_json")]
    assert len(rows) == 32 and len(json_rows) == 8 and all(r["system"] for r in json_rows)
    assert {r["evaluation"] for r in rows} == {"fp"} and {r["variant"] for r in rows} == {"base"}


def test_evaluation_samples_per_paraphrase_overrides_the_file(tmp_path):
    run = _run(tmp_path, "evaluations: [{name: free-form, samples_per_paraphrase: 3}]\n")
    plan = sample_stage.sampling_plan(run)
    assert len(plan) == 8 and {n for *_, n in plan} == {3}


def test_same_question_id_in_two_sets_stays_apart(upstream, tmp_path):
    qfile = upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"
    run = _run(tmp_path, f"evaluations: [{{name: free-form, question_sets: [main, '{qfile}']}}]\n")
    ids = [q.id for _, _, q, _, _ in sample_stage.sampling_plan(run)]
    assert len(ids) == len(set(ids)) == 32
    assert "main:quick_buck" in ids and "first_plot_questions:quick_buck" in ids and "quick_buck_json" in ids
