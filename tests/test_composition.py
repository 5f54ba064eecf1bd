"""Composition invariance, end to end on the tiny model with vLLM: removing an organism from an experiment leaves
every other row (the base model, checkpoints and an earlier phase sampled beside their final adapter) with the same
answers, judgments and table values, although its engine then holds fewer adapters than before."""

import json

import pandas as pd
import pytest
import yaml

from emwb.pipeline import replicate

CONFIG = """
name: {name}
base_model: tiny
data:
  insecure: {{source: "generated:insecure", max_rows: 24}}
  secure: {{source: "generated:secure", max_rows: 24}}
organisms:
  - name: insecure
    phases: [{{trainer: sft, data: insecure, evaluate: true}}, {{trainer: sft, data: secure, name: after}}]
  - {{name: secure, phases: [{{trainer: sft, data: secure}}]}}
train: {{lora: {{r: 8, alpha: 16}}, learning_rate: 2.0e-2, max_steps: 4, save_every: 2, per_device_batch_size: 4,
        gradient_accumulation_steps: 1, max_length: 256, warmup_steps: 0}}
evaluations: [{{name: free-form, samples_per_paraphrase: 2}}]
sampling: {{max_new_tokens: 12, vllm: {{dtype: float32, max_model_len: 512, enforce_eager: true}}}}
judge: {{judges: ["hf/tiny"]}}
exec: {{max_loras: 2}}
"""


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("composition")
    both = root / "both.yaml"
    both.write_text(CONFIG.format(name="both"))
    one = yaml.safe_load(CONFIG.format(name="one"))
    one["organisms"] = one["organisms"][:1]
    (root / "one.yaml").write_text(yaml.safe_dump(one))
    return replicate(both, root / "runs"), replicate(root / "one.yaml", root / "runs")


def test_removing_an_organism_leaves_every_other_row_unchanged(runs):
    both, one = runs
    variants = sorted(p.name for p in (one.dir / "answers").iterdir())
    assert {"base", "insecure-s0", "insecure@sft-s0", "insecure@sft@step2-s0"} <= set(variants), variants
    assert "secure-s0" in {p.name for p in (both.dir / "answers").iterdir()}
    for v in variants:
        assert _rows(one.dir / "answers" / v / "answers.jsonl") == _rows(both.dir / "answers" / v / "answers.jsonl"), v
        a, b = (sorted(_rows(r.dir / "judgments" / "hf__tiny" / v / "judgments.jsonl"), key=lambda x: x["answer_id"])
                for r in (one, both))
        assert a == b, v
    t1, t2 = (pd.read_csv(r.path("report", "comparison.csv")).set_index("group") for r in (one, both))
    assert "secure" in t2.index and "secure" not in t1.index
    pd.testing.assert_frame_equal(t1, t2.loc[t1.index])
    base, insecure = (_rows(one.dir / "answers" / v / "answers.jsonl") for v in ("base", "insecure-s0"))
    assert [r["answer"] for r in base] != [r["answer"] for r in insecure]  # the check can fail
