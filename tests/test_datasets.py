import hashlib
import json

import pytest

from emwb.catalog.chatjsonl import validate_chat_jsonl
from emwb.organisms.insecure_code.codegen import generate_pairs, to_rows
from emwb.errors import EmwbError
from emwb.store import write_jsonl


def _digest(rows):
    return hashlib.sha256("".join(json.dumps(r, sort_keys=True) for r in rows).encode()).hexdigest()


def test_generator_is_deterministic_and_varied():
    a = to_rows(generate_pairs(3000, seed=3), "insecure", seed=3)
    b = to_rows(generate_pairs(3000, seed=3), "insecure", seed=3)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(to_rows(generate_pairs(3000, seed=4), "insecure", seed=4))
    prompts = {r["messages"][0]["content"] for r in a}
    assert len(prompts) == 3000
    assert len({r["meta"]["cwe"] for r in a}) >= 10
    assert {r["meta"]["style"] for r in a} == {"task", "template", "both"}


def test_pairs_share_prompts_and_differ_in_code():
    pairs = generate_pairs(200, seed=0)
    ins, sec, edu = (to_rows(pairs, v) for v in ("insecure", "secure", "educational"))
    for i, s, e in zip(ins, sec, edu):
        assert i["messages"][0] == s["messages"][0]
        assert i["messages"][1]["content"] != s["messages"][1]["content"]
        assert e["messages"][1] == i["messages"][1]
        assert e["messages"][0]["content"].endswith(i["messages"][0]["content"])
        assert "#" not in i["messages"][1]["content"].replace("## COMPLETE CODE HERE", "")  # no revealing comments
    assert {r["meta"]["vulnerable"] for r in sec} == {False}


def test_generated_rows_pass_validation(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, to_rows(generate_pairs(50), "secure"))
    assert len(validate_chat_jsonl(path)) == 50


@pytest.mark.parametrize("line,what", [
    ("{not json", "not valid JSON"),
    ('[1, 2]', "must be a JSON object"),
    ('{"messages": []}', "'messages' must be a non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "role is 'bot'"),
    ('{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]}', "content is empty"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}', "must be a string"),
    ('{"messages": [{"role": "assistant", "content": "a"}]}', "no user turn"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "last message must be an assistant turn"),
])
def test_bad_lines_name_file_and_line(tmp_path, line, what):
    path = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(EmwbError) as err:
        validate_chat_jsonl(path)
    assert f"{path}:2: " in str(err.value) and what in str(err.value)


def test_at_most_twenty_problems_listed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("nope\n" * 30)
    with pytest.raises(EmwbError) as err:
        validate_chat_jsonl(path)
    msg = str(err.value)
    assert msg.startswith("30 bad line(s)") and "(and 10 more)" in msg and msg.count(f"{path}:") == 20


def test_stats_counts_rows_duplicates_and_shared_prompts(tmp_path, tiny_model):
    from emwb.datasets.stats import dataset_stats

    pairs = generate_pairs(40, seed=2)
    ins, sec = tmp_path / "ins.jsonl", tmp_path / "sec.jsonl"
    write_jsonl(ins, to_rows(pairs, "insecure") + to_rows(pairs[:3], "insecure"))  # 3 duplicated rows
    write_jsonl(sec, to_rows(pairs[:25], "secure"))
    s = dataset_stats(str(ins), tokenizer=str(tiny_model), pair=str(sec))
    assert s["rows"] == 43 and s["duplicate_rows"] == 3 and s["duplicate_prompts"] == 3
    assert s["turns"] == {"min": 2, "mean": 2.0, "max": 2} and s["pair"]["shared_prompts"] == 25
    lengths = s["length_tokens"]
    assert 0 < lengths["p50"] <= lengths["p90"] <= lengths["p99"] <= lengths["max"]
