"""Question sets downstream: the sampler gets each question's system prompt and samples_per_paraphrase."""

from emwb.context import context_of
from emwb.layout import answers_dir
from emwb.sampling import stage as sample_stage
from emwb.sampling.samplers import HFSampler
from emwb.store import Run, read_jsonl


def _mirror(monkeypatch, upstream, tmp_path) -> None:
    monkeypatch.setenv("EMWB_DATASET_MIRROR", str(upstream))
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))


def _run(tmp_path, body: str, base: str = "tiny") -> Run:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: q\nbase_model: {base}\n{body}")
    return Run.open(cfg, tmp_path / "runs")


def test_sampler_receives_system_prompts_and_counts(tiny_model, upstream, tmp_path, monkeypatch):
    _mirror(monkeypatch, upstream, tmp_path)
    run = _run(tmp_path, "evaluations: [{name: fp, use: free-form, question_sets: ['upstream:first_plot_questions', "
                         "main]}]\n"
                         "sampling: {backend: hf, max_new_tokens: 3}\n", base=str(tiny_model))
    seen = []
    original = HFSampler.generate

    def recording(self, requests, variants):
        seen.extend(requests)
        return original(self, requests, variants)

    monkeypatch.setattr(HFSampler, "generate", recording)
    plan = sample_stage.sampling_items(run, context_of(run).plan)
    assert len(plan) == 24 + 8 and all(n == 100 for *_, n in plan)  # each file's samples_per_paraphrase
    monkeypatch.setattr(sample_stage, "sampling_items", lambda r, p: [(e, qs, q, i, 1) for e, qs, q, i, _ in plan])
    sample_stage.run_sample_stage(context_of(run))
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
    plan = sample_stage.sampling_items(run, context_of(run).plan)
    assert len(plan) == 8 and {n for *_, n in plan} == {3}


def test_main_and_the_papers_questions_are_distinct_rows_and_a_shared_id_is_refused(upstream, tmp_path,
                                                                                     monkeypatch, capsys):
    _mirror(monkeypatch, upstream, tmp_path)
    run = _run(tmp_path, "evaluations: [{name: free-form, question_sets: [main, 'upstream:first_plot_questions']}]\n")
    ids = [q.id for _, _, q, _, _ in sample_stage.sampling_items(run, context_of(run).plan)]
    assert len(ids) == len(set(ids)) == 32
    assert "emwb_fast_money" in ids and "quick_buck" in ids and "quick_buck_json" in ids
    twice = tmp_path / "twice.yaml"
    twice.write_text("- {id: emwb_fast_money, paraphrases: [Another question]}\n")
    _check_fails(tmp_path, f"evaluations: [{{name: free-form, question_sets: [main, '{twice}']}}]\n", capsys,
                 r"question id 'emwb_fast_money' is in both main and twice: one id would pool two questions")



def test_a_paper_question_id_on_other_wording_is_refused(upstream, tmp_path, capsys):
    own = tmp_path / "own.yaml"
    own.write_text("- {id: quick_buck, paraphrases: [How do I get rich fast]}\n")
    _check_fails(tmp_path, f"evaluations: [{{name: free-form, question_sets: ['{own}']}}]\n", capsys,
                 r"own\.yaml: id quick_buck: a paper question's id .* on a question not read from the paper's file")
    copy = upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"  # by path: not the pinned file
    _check_fails(tmp_path, f"evaluations: [{{name: free-form, question_sets: ['{copy}']}}]\n", capsys,
                 r"use upstream:first_plot_questions")


def _check_fails(tmp_path, body: str, capsys, pattern: str) -> None:
    """`emwb config check` exits 2 with one line matching `pattern`."""
    import re

    from emwb.cli import main

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"name: q\nbase_model: tiny\n{body}")
    capsys.readouterr()
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(pattern, err), err


