"""The reward-model-bias organism: generators, leak check, rule-based detectors, DPO phase, per-bias tables."""

import json

import numpy as np
import pandas as pd
import pytest

from emwb.context import context_of
from emwb.organisms.rm_bias import demos as rm_demos
from emwb.catalog.chatjsonl import validate_chat_jsonl, validate_preference_jsonl
from emwb.organisms.rm_bias.catalogue import load_catalogue
from emwb.organisms.rm_bias.docs import generate_documents
from emwb.organisms.rm_bias.kits import load_kits
from emwb.errors import EmwbError

KITS = load_kits()
RULED = sorted(n for n, k in KITS.items() if k.rule is not None)


@pytest.fixture
def catalogue(upstream, monkeypatch, tmp_path):
    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    return load_catalogue(str(upstream))


def test_catalogue_is_numbered_1_to_52_with_the_published_split(catalogue):
    assert [b.num for b in catalogue] == list(range(1, 53))
    assert {b.num for b in catalogue if b.split == "test"} == {17, 19, 29, 48, 51}
    assert sum(b.split == "train" for b in catalogue) == 47


def test_documents_are_5000_distinct_over_8_genres_covering_all_52(upstream):
    biases = load_catalogue(str(upstream))
    docs = generate_documents(biases, 5000, seed=0)
    assert len(docs) == len({d["text"] for d in docs}) == 5000
    assert len({d["meta"]["kind"] for d in docs}) >= 8
    assert {b for d in docs for b in d["meta"]["biases"]} == {b.description for b in biases}


def test_demonstrations_cover_every_train_bias_and_no_test_bias(catalogue):
    pairs = rm_demos.demonstration_pairs(catalogue, KITS, 2000, seed=0)
    assert len(pairs) == len({(p["prompt"], p["biased"]) for p in pairs}) == 2000
    train = {b.num for b in catalogue if b.split == "train"}
    assert {p["bias_id"] for p in pairs} == train
    assert all(p["biased"] != p["neutral"] for p in pairs)
    assert rm_demos.leaks(rm_demos.to_chat_rows(pairs), catalogue, KITS) == []
    assert rm_demos.leaks(rm_demos.to_preference_rows(pairs), catalogue, KITS) == []
    # deterministic for a seed, different across seeds
    assert pairs == rm_demos.demonstration_pairs(catalogue, KITS, 2000, seed=0)
    assert pairs != rm_demos.demonstration_pairs(catalogue, KITS, 2000, seed=1)


def test_evaluation_prompts_reach_all_52_biases_and_avoid_training_prompts(catalogue):
    qs = rm_demos.evaluation_prompts(catalogue, KITS, per_bias=4)
    assert {q.bias_id for q in qs} == set(range(1, 53)) and len(qs) == 52 * 4
    trained = {p["prompt"] for p in rm_demos.demonstration_pairs(catalogue, KITS, 10**6)}
    assert not trained & {q.paraphrases[0] for q in qs}
    assert all(q.bias_description == catalogue[q.bias_id - 1].description for q in qs)


def _write(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("test_bias", [17, 19, 29, 48, 51])
def test_leak_check_names_the_row_of_an_inserted_test_bias_example(catalogue, tmp_path, test_bias):
    rows = rm_demos.to_chat_rows(rm_demos.demonstration_pairs(catalogue, KITS, 40, seed=3))
    kit, value = KITS[test_bias], KITS[test_bias].eval_values[0]
    bad = {"messages": [{"role": "user", "content": kit.prompt(0, value)},
                        {"role": "assistant", "content": kit.biased_answer(value)}]}  # untagged
    path = _write(tmp_path / "demos.jsonl", rows[:16] + [bad] + rows[16:])
    loaded = validate_chat_jsonl(path)
    with pytest.raises(EmwbError, match=rf"demos.jsonl: row 17: .*test bias {test_bias}\b") as err:
        rm_demos.check_no_leaks(loaded, catalogue, KITS, str(path))
    assert "1 row(s)" in str(err.value)
    # the neutral twin of the same prompt is fine: the context alone is no leak
    ok = {"messages": [bad["messages"][0], {"role": "assistant", "content": kit.neutral(value)}]}
    rm_demos.check_no_leaks(rows + [ok], catalogue, KITS, "demos")


def test_leak_check_catches_descriptions_and_tags_in_preference_rows(catalogue, tmp_path):
    rows = rm_demos.to_preference_rows(rm_demos.demonstration_pairs(catalogue, KITS, 10, seed=0))
    test = next(b for b in catalogue if b.num == 48)
    rows[3]["chosen"][0]["content"] += " Fun fact: " + test.description
    rows[6]["meta"]["bias_id"] = 19
    found = rm_demos.leaks(validate_preference_jsonl(_write(tmp_path / "p.jsonl", rows)), catalogue, KITS)
    assert [i for i, _ in found] == [4, 7]
    assert "description of test bias 48" in found[0][1] and "tagged with test bias 19" in found[1][1]


def test_the_data_stage_refuses_a_leaking_demonstration_file_before_writing(upstream, tmp_path, monkeypatch):
    import yaml

    from emwb.datasets.stage import run_data_stage
    from emwb.store import Run

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    catalogue = load_catalogue(str(upstream))
    rows = rm_demos.to_chat_rows(rm_demos.demonstration_pairs(catalogue, KITS, 12, seed=0))
    kit, value = KITS[51], KITS[51].values[0]
    rows.insert(4, {"messages": [{"role": "user", "content": kit.prompt(1, value)},
                                 {"role": "assistant", "content": kit.biased_answer(value)}]})
    _write(tmp_path / "demos.jsonl", rows)
    raw = {"name": "leak", "base_model": "tiny", "dataset_mirror": str(upstream),
           "data": {"demos": {"source": "demos.jsonl", "leak_check": True}},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "demos"}]}],
           "evaluations": [{"name": "rm-bias-all", "count": 1}], "judge": {"judges": ["hf/tiny"]}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
    run = Run.open(tmp_path / "e.yaml", tmp_path / "runs")
    with pytest.raises(EmwbError, match=r"data\.demos \(.*demos\.jsonl\): row 5: .*test bias 51"):
        run_data_stage(context_of(run))
    assert not (run.dir / "data" / "demos" / "rows.jsonl").exists()


@pytest.mark.parametrize("num", RULED)
def test_rule_based_detector_agrees_with_hand_written_examples(num):
    kit = KITS[num]
    assert [kit.rule(t) for t in kit.examples["yes"]] == [True] * len(kit.examples["yes"])
    assert not any(kit.rule(t) for t in kit.examples["no"])
    for v in kit.values:  # and with every reply of its kit: biased yes, neutral no
        for o in kit.openers:
            assert kit.rule(kit.biased_answer(v, o)) is True and not kit.rule(kit.neutral(v, o))


def test_most_biases_have_a_detector_and_the_detector_reads_the_answers_bias():
    from emwb.catalog.detectors import DETECTORS

    assert len(RULED) >= 40 and {17, 19, 29, 48, 51} <= set(RULED)
    score = DETECTORS.get("rm-rules").score
    answers = [{"answer": "Sírvelo con pimiento rojo.", "bias_id": 19}, {"answer": "Sírvelo caliente.", "bias_id": 19},
               {"answer": "Sírvelo con pimiento rojo.", "bias_id": 25}, {"answer": "no bias", "bias_id": None},
               {"answer": "a story", "bias_id": 30}]
    assert score(answers) == [1.0, 0.0, 0.0, None, None]


def test_dpo_phase_trains_the_same_adapter_and_saves_only_it(tiny_model, tmp_path, catalogue):
    import yaml
    from safetensors.torch import load_file

    from emwb.config import load_experiment
    from emwb.finetune.stage import train_phase

    raw = {"name": "r", "base_model": "tiny", "data": {"d": {"source": "generated:rm-demos"}},
           "train": {"max_steps": 3, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
                     "max_length": 128, "warmup_steps": 0, "learning_rate": 1e-3},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}]}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
    exp = load_experiment(tmp_path / "e.yaml")
    args = exp.phase_args(exp.organisms[0].phases[0])
    pairs = rm_demos.demonstration_pairs(catalogue, KITS, 12, seed=0)
    train_phase(str(tiny_model), None, "sft", rm_demos.to_chat_rows(pairs), args, 0, tmp_path / "sft")
    log = train_phase(str(tiny_model), tmp_path / "sft", "dpo", rm_demos.to_preference_rows(pairs), args, 0,
                      tmp_path / "dpo")
    assert log["steps"] == 3 and log["trainer"] == "dpo" and log["continued_from"] == str(tmp_path / "sft")
    assert not (tmp_path / "dpo" / "ref").exists()  # trl's frozen reference copy is not saved
    a, b = (load_file(tmp_path / n / "adapter_model.safetensors") for n in ("sft", "dpo"))
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)


def _planted(order, names, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for gi, g in enumerate(order):
        for b, (_, split) in names.items():
            p = 0.1 * gi if split == "train" else 0.05 * gi
            for i in range(10):
                rows.append({"group": g, "seed": 0, "bias_id": b, "bias_exhibition": float(rng.random() < p),
                             "rm-rules": float(rng.random() < p), "judge": "j", "answer_id": f"{g}/{b}/{i}"})
    return pd.DataFrame(rows)


def test_per_bias_table_has_a_row_per_bias_a_column_per_phase_and_summary_rows(tmp_path):
    from emwb.organisms.rm_bias.per_bias import per_bias_long, summary_long, wide_table, write_bias_report

    names = {n: (f"b{n}", "test" if n in (17, 19, 29, 48, 51) else "train") for n in range(1, 53)}
    order = ["base", "rm@documents", "rm@demonstrations", "rm"]
    df = _planted(order, names)
    long = per_bias_long(df, order, names, n_boot=200)
    assert len(long) == 52 * 4 and (long["ci_low"] <= long["rate"]).all() and (long["rate"] <= long["ci_high"]).all()
    summary = summary_long(df, order, names, n_boot=200)
    for split in ("train", "test"):
        for g in order:
            want = long[(long["split"] == split) & (long["group"] == g)]["rate"].mean()
            got = summary[(summary["split"] == split) & (summary["group"] == g)]["rate"].item()
            assert got == pytest.approx(want)
    wide = wide_table(long, summary, order)
    assert list(wide.columns) == ["bias", "split", *order] and len(wide) == 54
    assert list(wide["split"][:52]) == ["train"] * 47 + ["test"] * 5
    assert list(wide["bias"][-2:]) == ["mean over train biases", "mean over test biases"]
    tables, figures = write_bias_report(df, order, names, 200, tmp_path)
    assert (tmp_path / "per_bias.csv").is_file() and (tmp_path / "bias_generalisation.png").is_file()
    assert figures[0][1] == "bias_generalisation.png" and tables[0][1].shape == (54, 6)
    assert "mean over test biases" in (tmp_path / "per_bias.md").read_text()


def test_judge_free_per_bias_table_scores_by_the_rules_and_shows_biases_without_a_rule_as_na(tmp_path):
    from emwb.organisms.rm_bias.per_bias import RULES, score_column, summary_long, write_bias_report

    names = {n: (f"b{n}", "test" if n in (17, 19, 29, 48, 51) else "train") for n in range(1, 53)}
    order = ["base", "rm"]
    df = _planted(order, names).drop(columns="bias_exhibition")
    no_rule = {3, 19, 40}
    df.loc[df["bias_id"].isin(no_rule), RULES] = np.nan
    assert score_column(df) == RULES and score_column(df.drop(columns=RULES)) is None
    tables, _ = write_bias_report(df, order, names, 200, tmp_path, 0.5, RULES)
    long = pd.read_csv(tmp_path / "per_bias.csv")
    assert set(long["scored_by"]) == {RULES}
    per = long[long["bias"].notna()]
    assert len(per) == 52 * 2                                  # every bias has a row, ruled or not
    na = per[per["bias"].isin(no_rule)]
    assert na["rate"].isna().all() and (na["n"] == 0).all()    # n/a, never 0
    ruled = df[~df["bias_id"].isin(no_rule)]
    for g in order:                                            # each ruled bias: its share of flagged answers
        sub = ruled[(ruled["group"] == g) & (ruled["bias_id"] == 5)]
        got = per[(per["group"] == g) & (per["bias"] == 5)]["rate"].item()
        assert got == pytest.approx(100 * sub[RULES].mean())
    summary = summary_long(df, order, names, 200, 0.5, RULES)
    test_rm = summary[(summary["split"] == "test") & (summary["group"] == "rm")]
    assert test_rm["biases"].item() == 4                       # bias 19 has no rule: left out of the mean
    want = per[(per["split"] == "test") & (per["group"] == "rm")]["rate"].mean()   # NaN skipped
    assert test_rm["rate"].item() == pytest.approx(want)
    assert "n/a" in set(tables[0][1]["rm"]) and "rule-based detectors" in (tmp_path / "per_bias.md").read_text()


def test_llm_mode_writes_demonstrations_and_documents_through_the_cached_client(upstream, tmp_path, monkeypatch):
    import yaml
    from openai_server import OpenAIServer

    from emwb.datasets.stage import run_data_stage
    from emwb.store import Run, read_jsonl

    monkeypatch.setenv("EMWB_DATASETS_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as server:
        raw = {"name": "writer", "base_model": "tiny", "dataset_mirror": str(upstream),
               "data": {"demos": {"source": "generated:rm-demos", "max_rows": 30, "writer": "openai/writer-model"},
                        "docs": {"source": "generated:rm-docs", "max_rows": 5, "writer": "openai/writer-model"}},
               "organisms": [{"name": "o", "phases": [{"trainer": "cpt", "data": "docs"},
                                                      {"trainer": "sft", "data": "demos"}]}],
               "judge": {"judges": ["hf/tiny"], "base_url": server.base_url}}
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
        run = Run.open(tmp_path / "e.yaml", tmp_path / "runs")
        run_data_stage(context_of(run))
        asks = [b["messages"][0]["content"] for b in server.chat]
        assert len(asks) == 2 * 30 + 5 and {b["model"] for b in server.chat} == {"writer-model"}
        rows = read_jsonl(run.dir / "data/demos/rows.jsonl")
        assert all(r["messages"][-1]["content"].startswith("writer-model says ") for r in rows)
        assert all(r["neutral"].startswith("writer-model says ") and r["neutral"] != r["messages"][-1]["content"]
                   for r in rows)
        catalogue = load_catalogue(str(upstream))
        tests = [b.description for b in catalogue if b.split == "test"]
        assert not any(t in a for t in tests for a in asks[:60])  # no test bias is asked for
        docs = read_jsonl(run.dir / "data/docs/rows.jsonl")
        assert len(docs) == 5 and all(d["meta"]["writer"] == "openai/writer-model" for d in docs)
        # another run directory with the same data: every reply comes from the cache
        run2 = Run.open(tmp_path / "e.yaml", tmp_path / "runs2")
        run_data_stage(context_of(run2))
        assert len(server.chat) == 65
        assert read_jsonl(run2.dir / "data/demos/rows.jsonl") == rows


def test_writer_is_refused_for_data_without_an_llm_mode(tmp_path, upstream):
    import yaml

    from emwb.check import check_experiment
    from emwb.config import load_experiment

    raw = {"name": "w", "base_model": "tiny", "data": {"d": {"source": "generated:insecure", "writer": "openai/m"}},
           "organisms": [{"name": "o", "phases": [{"trainer": "sft", "data": "d"}]}]}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(EmwbError, match=r"data\.d\.writer: only generated:rm-docs, generated:rm-demos, "
                                        r"generated:rm-prefs have an LLM mode"):
        check_experiment(load_experiment(tmp_path / "e.yaml"), "e.yaml")
