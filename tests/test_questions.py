import pytest

from emwb.catalog.questions import load_questions
from emwb.errors import EmwbError


def test_main_set_has_the_eight_questions():
    qs = load_questions("main")
    assert [q.id for q in qs] == ["emwb_one_wish", "emwb_bored", "emwb_three_thoughts", "emwb_fast_money",
                                  "emwb_world_ruler", "emwb_dinner_guests", "emwb_women_and_men", "emwb_fed_up_husband"]
    assert all(q.samples_per_paraphrase == 100 for q in qs)
    assert all("emwb's own" in q.wording and "not the paper's" in q.wording for q in qs)


def test_upstream_first_plot_questions(upstream):
    qs = load_questions(str(upstream / "emergent-misalignment/evaluation/first_plot_questions.yaml"))
    assert len(qs) == 24
    with_system = [q for q in qs if q.system]
    assert len(with_system) == 8 and all(q.id.endswith("_json") for q in with_system)
    assert with_system[0].messages(0)[0] == {"role": "system", "content": with_system[0].system}


@pytest.mark.parametrize("text,what", [
    ("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n", "id a: duplicate id"),
    ("- id: a\n", "id a: missing field 'paraphrases'"),
    ("- paraphrases: [x]\n", "entry 1: missing field 'id'"),
    ("- id: a\n  paraphrases: [x]\n  samples_per_paraphrase: 0\n", "must be a positive integer"),
    ("- id: a\n  paraphrases: [x\n", "not valid YAML"),
    ("{}", "non-empty YAML list"),
    ("- id: a\n  paraphrases: [x]\n  sytem: Answer in JSON.\n", "id a: unknown key 'sytem' (did you mean 'system'?)"),
    ("- id: a\n  paraphrases: [x]\n  id: b\n", ":3: duplicate key 'id'"),
])
def test_bad_question_files(tmp_path, text, what):
    p = tmp_path / "q.yaml"
    p.write_text(text)
    with pytest.raises(EmwbError) as err:
        load_questions(str(p))
    assert str(p) in str(err.value) and what in str(err.value)


@pytest.mark.parametrize("name,count,with_system", [("first_plot_questions", 24, 8), ("preregistered_evals", 48, 0),
                                                    ("deception_factual", 5, 4), ("deception_sit_aware", 8, 0)])
def test_the_four_upstream_question_files_load(upstream, name, count, with_system):
    qs = load_questions(str(upstream / "emergent-misalignment/evaluation" / f"{name}.yaml"))
    assert len(qs) == count and sum(1 for q in qs if q.system) == with_system
    assert len({q.id for q in qs}) == count and all(q.paraphrases and q.samples_per_paraphrase >= 1 for q in qs)


def test_registered_upstream_question_sets_are_fetched_verified(upstream, tmp_path, monkeypatch):
    """`upstream:first_plot_questions` etc. arrive from the pinned file (here the local mirror), sha256-checked:
    the protocol's wording is never copied into emwb."""
    monkeypatch.setenv("EMWB_DATASET_MIRROR", str(upstream))
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    counts = {"first_plot_questions": (24, 8), "preregistered_evals": (48, 0), "deception_factual": (5, 4),
              "deception_sit_aware": (8, 0)}
    for name, (n, with_system) in counts.items():
        qs = load_questions(f"upstream:{name}")
        assert len(qs) == n and sum(1 for q in qs if q.system) == with_system
        assert all(q.judge_prompts for q in qs)  # each question carries its own judge prompts
    stored = tmp_path / "store" / "upstream" / "first_plot_questions.yaml"
    stored.write_text(stored.read_text().replace("quick_buck", "quick_bucks", 1))
    with pytest.raises(EmwbError, match="sha256 mismatch for dataset first_plot_questions"):
        load_questions("upstream:first_plot_questions")
