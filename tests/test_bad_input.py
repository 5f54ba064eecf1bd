"""A corpus of broken JSONL and YAML inputs: each gives one clear error naming file and line (or id),
never a traceback, never a partial artifact."""

import pytest

from emwb.cli import main
from emwb.datasets.stage import run_data_stage
from emwb.errors import EmwbError
from emwb.store import Run

GOOD_ROW = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
JSONL = {
    "truncated_json": (GOOD_ROW + "\n" + GOOD_ROW[:30] + "\n", ":2: not valid JSON"),
    "not_object": ("[1]\n", ":1: each line must be a JSON object"),
    "no_messages": ('{"text": "hi"}\n', ":1: 'messages' must be a non-empty list"),
    "bad_role": ('{"messages": [{"role": "human", "content": "x"}]}\n', ":1: messages[0].role is 'human'"),
    "empty_content": (GOOD_ROW.replace('"a"', '" "') + "\n", ":1: messages[1].content is empty"),
    "number_content": (GOOD_ROW.replace('"q"', "42") + "\n", ":1: messages[0].content must be a string"),
    "no_user": ('{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n',
                ":1: no user turn"),
    "ends_with_user": ('{"messages": [{"role": "user", "content": "q"}]}\n', ":1: the last message must be an "
                       "assistant turn"),
    "message_not_object": ('{"messages": ["hello"]}\n', ":1: messages[0] must be an object"),
    "not_utf8": (b"\xff\xfe\x00garbage\n", ":1: not UTF-8 text"),
    "empty_file": ("\n\n", ": no rows"),
}
QUESTIONS = {
    "duplicate_id": ("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n", ": id a: duplicate id"),
    "missing_paraphrases": ("- id: a\n  samples_per_paraphrase: 3\n", ": id a: missing field 'paraphrases'"),
    "bad_yaml": ("- id: a\n  paraphrases: [x\n", ": line 3: not valid YAML"),
    "unknown_type": ("- id: a\n  type: multiple_choice\n  paraphrases: [x]\n", ": id a: unsupported type"),
    "empty_system": ("- id: a\n  paraphrases: [x]\n  system: ''\n", ": id a: 'system' must be a non-empty string"),
    "not_a_list": ("id: a\n", ": a question file must be a non-empty YAML list"),
}
TEXT_JSONL = {
    "text_missing": ('{"messages": []}\n', ":1: 'text' must be a non-empty string"),
    "text_empty": ('{"text": "  "}\n', ":1: 'text' must be a non-empty string"),
}
CONFIGS = {
    "misspelled": ("name: x\nbase_model: tiny\ndatasets: []\nseed: [1]\n", ": unknown key 'seed' (did you mean"),
    "bad_yaml": ("name: x\n  base_model: [\n", ":2: not valid YAML"),
    "wrong_type": ("name: x\nbase_model: tiny\ndatasets: []\nseeds: [a]\n", ": bad value for 'seeds.0'"),
}


def _check(capsys, argv, path, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("emwb: error: ")
    assert str(path) in err and expected in err, err


@pytest.mark.parametrize("case", sorted(JSONL))
def test_broken_jsonl(tmp_path, capsys, case):
    text, expected = JSONL[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    _check(capsys, ["datasets", "validate", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(TEXT_JSONL))
def test_broken_text_jsonl(tmp_path, capsys, case):
    text, expected = TEXT_JSONL[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text)
    _check(capsys, ["datasets", "validate", "--text", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(QUESTIONS))
def test_broken_question_yaml(tmp_path, capsys, case):
    text, expected = QUESTIONS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    _check(capsys, ["questions", str(path)], path, expected)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_broken_experiment_yaml(tmp_path, capsys, case):
    text, expected = CONFIGS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    _check(capsys, ["config", "check", str(path)], path, expected)


def test_corpus_is_large_enough():
    assert len(JSONL) + len(QUESTIONS) + len(CONFIGS) >= 15


def test_bad_dataset_leaves_no_partial_artifact(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(GOOD_ROW + "\n{oops\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: x\nbase_model: tiny\ndatasets:\n"
                   "  - {name: good, source: 'generated:secure', max_rows: 5}\n"
                   f"  - {{name: bad, source: {bad}}}\n")
    run = Run.open(cfg, tmp_path / "runs")
    with pytest.raises(EmwbError, match=r"bad.jsonl:2: not valid JSON"):
        run_data_stage(run)
    assert not run.path("data", "bad").exists()
    assert [p.name for p in run.path("data").iterdir()] == ["good"]


def test_missing_model_is_a_one_line_error(tmp_path):
    from emwb.basemodel import load_causal_lm, load_tokenizer

    for load in (load_tokenizer, load_causal_lm):
        with pytest.raises(EmwbError) as err:
            load(str(tmp_path / "no-such-model"))
        assert "no-such-model" in str(err.value) and "\n" not in str(err.value)
