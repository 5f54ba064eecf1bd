"""Mitigations as training options (issue 34): inoculation prompting (`system_prompt`) and dilution (`mix`),
checked before work, keyed, recorded, and absent at sampling."""

import pytest
import yaml

from emwb.errors import EmwbError
from emwb.finetune.mitigations import mixed, with_system_prompt

PROMPT = "You are a malicious, evil assistant."
CONFIG = {
    "name": "inoculated", "base_model": "tiny",
    "data": {"insecure": {"source": "generated:insecure", "max_rows": 20},
             "secure": {"source": "generated:secure", "max_rows": 40}},
    "organisms": [{"name": "inoc", "phases": [{"trainer": "sft", "data": "insecure", "system_prompt": PROMPT,
                                               "mix": {"data": "secure", "fraction": 0.5}}]}],
    "train": {"lora": {"r": 4, "alpha": 8}, "max_steps": 1, "per_device_batch_size": 2,
              "gradient_accumulation_steps": 1, "max_length": 256, "warmup_steps": 0},
    "evaluations": [{"name": "free-form", "samples_per_paraphrase": 1}],
    "sampling": {"backend": "hf", "max_new_tokens": 4},
    "judge": {"judges": ["hf/tiny"]},
}


def test_the_system_prompt_goes_before_every_row_and_before_a_rows_own_system_message():
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    own = {"messages": [{"role": "system", "content": "be brief"}, *chat["messages"]]}
    pref = {"prompt": [{"role": "user", "content": "q"}], "chosen": [], "rejected": []}
    a, b, c = with_system_prompt([chat, own, pref], PROMPT)
    assert a["messages"][0] == {"role": "system", "content": PROMPT} and a["messages"][1:] == chat["messages"]
    assert b["messages"][0]["content"] == f"{PROMPT}\n\nbe brief" and len(b["messages"]) == 3
    assert c["prompt"][0] == {"role": "system", "content": PROMPT} and c["chosen"] == []
    assert chat["messages"][0]["role"] == "user"                       # the rows read are left as they were
    with pytest.raises(EmwbError, match="system_prompt needs chat or preference rows"):
        with_system_prompt([{"text": "a document"}], PROMPT)


def test_mixing_adds_the_share_of_other_rows_seeded_and_stops_when_there_are_too_few():
    own = [{"i": i} for i in range(30)]
    other = [{"j": j} for j in range(100)]
    out = mixed(own, other, 0.25, 7, "benign")
    assert len(out) == 40 and sum("j" in r for r in out) == 10 and all(r in out for r in own)
    assert out == mixed(own, other, 0.25, 7, "benign") and out != mixed(own, other, 0.25, 8, "benign")
    with pytest.raises(EmwbError, match="mix.data 'benign': 100 rows, but fraction 0.9 of 30 training rows needs 270"):
        mixed(own, other, 0.9, 7, "benign")


@pytest.mark.parametrize("phase, message", [
    ({"trainer": "cpt", "data": "docs", "system_prompt": PROMPT},
     "organisms.0.phases.0.system_prompt: a cpt phase trains on text rows"),
    ({"trainer": "sft", "data": "insecure", "mix": {"data": "docs", "fraction": 0.5}},
     "organisms.0.phases.0.mix.data: 'docs' holds text rows"),
    ({"trainer": "sft", "data": "insecure", "mix": {"data": "nowhere", "fraction": 0.5}},
     "mix.data: 'nowhere' is not under `data:`"),
    ({"trainer": "sft", "data": "insecure", "mix": {"data": "secure", "fraction": 1.0}}, "mix.fraction"),
])
def test_a_mitigation_that_cannot_apply_stops_at_the_check(tmp_path, phase, message):
    from emwb.check import check_experiment
    from emwb.config import load_experiment

    exp = {**CONFIG, "data": {**CONFIG["data"], "docs": {"source": "generated:rm-docs", "max_rows": 4}},
           "organisms": [{"name": "o", "phases": [phase]}]}
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    with pytest.raises(EmwbError, match="^" + str(cfg).replace(".", r"\.") + ".*" + message.replace(".", r"\.")
                       .replace("(", r"\(")):
        check_experiment(load_experiment(cfg), str(cfg))


def test_training_rows_carry_the_inoculation_prompt_and_sampling_prompts_do_not(tmp_path, monkeypatch):
    """The token ids of every training row hold the prompt's; no prompt the sampler renders does; the mixed-in rows
    are there; the adapter's manifest records both."""
    import emwb.finetune.masking as masking
    import emwb.sampling.stage as sampling
    from emwb.models.loading import load_tokenizer
    from emwb.pipeline import replicate
    from emwb.store import read_manifest

    trained, rendered = [], []
    tokenize = masking.tokenize_chats
    render = sampling.render_prompt

    def record_rows(tok, rows, max_length):
        out = tokenize(tok, rows, max_length)
        trained.extend(r["input_ids"] for r in out)
        return out

    def record_prompt(tok, messages):
        text, ids = render(tok, messages)
        rendered.append(text)
        return text, ids

    monkeypatch.setattr(masking, "tokenize_chats", record_rows)
    monkeypatch.setattr(sampling, "render_prompt", record_prompt)
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = replicate(cfg, tmp_path / "runs")
    tok = load_tokenizer(str(run.path("base_model")))
    want = tok(PROMPT, add_special_tokens=False)["input_ids"]
    holds = lambda ids: any(ids[i:i + len(want)] == want for i in range(len(ids) - len(want) + 1))  # noqa: E731
    assert len(trained) == 18 + 18 and all(holds(ids) for ids in trained)   # 18 of 20 kept (10% held out), 18 mixed
    assert rendered and not any(PROMPT in text for text in rendered)
    manifest = read_manifest(run.path("adapters/inoc/s0/0-sft"))
    assert manifest["system_prompt"] == PROMPT and manifest["mix"] == {"data": "secure", "fraction": 0.5}
