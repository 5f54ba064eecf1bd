"""Question sets downstream: the sampler gets each question's system prompt and samples_per_paraphrase."""

from emwb.sampling import stage as sample_stage
from emwb.sampling.backends import generate_hf
from emwb.store import Run, read_jsonl


def test_sampler_receives_system_prompts_and_counts(tiny_model, upstream, tmp_path, monkeypatch):
    qfile = upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: q\nbase_model: {tiny_model}\ndatasets: []\n"
                   f"sampling: {{backend: hf, question_sets: ['{qfile}', main], max_new_tokens: 3}}\n")
    run = Run.open(cfg, tmp_path / "runs")
    seen = []

    def recording(base, adapters, conversations, counts, cfg, cache):
        seen.append((conversations, counts))
        return generate_hf(base, adapters, conversations, [1] * len(counts), cfg, cache)

    monkeypatch.setitem(sample_stage.BACKENDS, "hf", recording)
    plan = sample_stage.question_plan(run)
    assert len(plan) == 24 + 8 and all(n == 100 for *_, n in plan)  # each file's samples_per_paraphrase
    monkeypatch.setattr(sample_stage, "question_plan", lambda r: [(qs, q, i, 1) for qs, q, i, _ in plan])
    sample_stage.run_sample_stage(run, base_key="b")
    conversations, _ = seen[0]
    with_system = [c for c in conversations if c[0]["role"] == "system"]
    assert len(with_system) == 8 and all("JSON" in c[0]["content"] for c in with_system)
    rows = read_jsonl(run.path("answers", "answers.jsonl"))
    json_rows = [r for r in rows if r["question_id"].endswith("_json")]
    assert len(rows) == 32 and len(json_rows) == 8 and all(r["system"] for r in json_rows)


def test_config_samples_per_paraphrase_overrides_the_file(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: q\nbase_model: tiny\ndatasets: []\nsampling: {samples_per_paraphrase: 3}\n")
    plan = sample_stage.question_plan(Run.open(cfg, tmp_path / "runs"))
    assert len(plan) == 8 and {n for *_, n in plan} == {3}


def test_same_question_id_in_two_sets_stays_apart(upstream, tmp_path):
    qfile = upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: q\nbase_model: tiny\ndatasets: []\nsampling: {{question_sets: [main, '{qfile}']}}\n")
    plan = sample_stage.question_plan(Run.open(cfg, tmp_path / "runs"))
    ids = [q.id for _, q, _, _ in plan]
    assert len(ids) == len(set(ids)) == 32
    assert "main:quick_buck" in ids and "first_plot_questions:quick_buck" in ids and "quick_buck_json" in ids
