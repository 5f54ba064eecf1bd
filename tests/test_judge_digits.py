"""A judge whose tokenizer splits numbers into digits (Qwen2.5, SmolLM2, ...): its first token holds only the "8" of
"85", so first-token scoring put every score in 0..9 without a warning (issue 56, item 1). Local judges are now
scored by the digits method; an OpenAI-compatible one is refused, before any judging request, with one line."""

import math

import pytest
from judge_helpers import make_run

from emwb.judge.loopback import LoopbackJudge, reply_logprobs
from emwb.judge.numbers import PROBE, missing_number, probe_verdict, whole_numbers
from emwb.judge.scoring import score_from_logprobs
from emwb.layout import judgments_dir
from emwb.store import read_manifest

VARIANTS = ("base", "insecure-s0", "secure-s0")


def digit_reply(prompt: str, model: str, k: int) -> list[tuple[str, float]]:
    """The loopback judge's reply as a judge whose tokenizer splits numbers gives it: each number token becomes its
    first digit (the probe's "100" becomes "1")."""
    out: dict[str, float] = {}
    for t, lp in reply_logprobs(prompt, model, k):
        t = t[0] if t.isdigit() else t
        out[t] = math.log(math.exp(out[t]) + math.exp(lp)) if t in out else lp
    return sorted(out.items(), key=lambda kv: -kv[1])


def test_whole_numbers_is_the_digits_joint_probability():
    lp = math.log
    first = {"8": lp(0.5), "1": lp(0.3), "5": lp(0.1), "Sure": lp(0.05)}
    after = {"8": {"5": lp(0.6), "0": lp(0.2)},  # "8" then no digit: 0.2
             "1": {"0": lp(0.9)}, "10": {"0": lp(0.5)},  # "10" then no digit: 0.5
             "5": {}}  # "5" alone: a one-digit 5
    got = {k: math.exp(v) for k, v in whole_numbers(first, after).items()}
    want = {"Sure": 0.05, "8": 0.5 * 0.2, "85": 0.5 * 0.6, "80": 0.5 * 0.2, "1": 0.3 * 0.1, "10": 0.3 * 0.9 * 0.5,
            "100": 0.3 * 0.9 * 0.5, "5": 0.1}
    assert got == pytest.approx(want)
    assert score_from_logprobs(whole_numbers(first, after)) == pytest.approx(
        sum(int(k) * p for k, p in want.items() if k.isdigit()) / sum(p for k, p in want.items() if k.isdigit()))
    # what the first token alone says of the same reply: scores 0-9 (what emwb printed before)
    assert score_from_logprobs(first) < 10


def test_the_probe_and_the_tokenizer_tell_digits_from_whole_numbers():
    assert probe_verdict({"100": -0.1, "1": -3.0}) == "whole"
    assert probe_verdict({"1": -0.1, "Sure": -3.0}) == "digits"
    assert probe_verdict({"Sure": -0.1}) == "unknown"
    assert missing_number([*map(str, range(101)), "Sure"]) is None
    assert missing_number([" 0", *"123456789", "<|im_end|>"]) == "no token of its vocabulary is '10'"


def _digit_tokenizer_model(folder):
    """A random tiny Qwen2 whose byte-level BPE tokenizer splits numbers into digits (as Qwen2.5's does)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from emwb.models.tiny import CHAT_TEMPLATE, SPECIAL

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    texts = ["Rate the answer from 0 to 100.", "Question number 3? Answer text 17."] * 20 + [str(i) for i in range(101)]
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = Qwen2ForCausalLM(cfg)  # near uniform: the ten digits carry about 10/400 of the first token's mass
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return fast, model.eval()


def _brute_force(model, ids: list[int], digit: dict[str, int]) -> dict[str, float]:
    """P(n) for n in 0..100 by the digits method's definition, each from full forwards of prompt + digits (no
    cache, no batching): the reference the provider's one cached step is held to."""
    import functools

    import torch

    @functools.cache
    def dist(prefix: str):
        x = torch.tensor([ids + [digit[c] for c in prefix]])
        with torch.no_grad():
            return torch.softmax(model(input_ids=x).logits[0, -1].double(), dim=-1)

    def p(prefix: str, d: str) -> float:
        return float(dist(prefix)[digit[d]])

    def end(prefix: str) -> float:
        return 1.0 - sum(float(dist(prefix)[digit[d]]) for d in "0123456789")

    out = {str(n): p("", str(n)) * end(str(n)) for n in range(10)}
    for n in range(11, 100):
        s = str(n)
        out[s] = p("", s[0]) * p(s[0], s[1])
    out["10"] = p("", "1") * p("1", "0") * end("10")
    out["100"] = p("", "1") * p("1", "0") * p("10", "0")
    return out


@pytest.fixture
def one_thread():
    """One torch thread: a 32-wide model's matmuls are too small to share, and spinning threads on a busy 2-core
    machine made this test 100 times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_an_hf_judge_that_splits_digits_is_scored_from_their_joint_probability(tmp_path, one_thread):
    from emwb.config import ExecConfig, JudgeConfig
    from emwb.judge.base import JudgeContext
    from emwb.judge.providers import make_provider

    folder = tmp_path / "digit-judge"
    tok, model = _digit_tokenizer_model(folder)
    ctx = JudgeContext(JudgeConfig(), ExecConfig(device="cpu", judge_batch_size=4), str(folder), tmp_path)
    provider = make_provider(f"hf/{folder}", ctx)
    assert provider.split() == "no token of its vocabulary is '10'" and provider.params()["numbers"] == "digits"
    # short prompts (the method does not read them), two of one length: batched together over the cache
    prompts = ["Rate answer 17 from 0 to 100.", "Rate answer 18 from 0 to 100.", "Rate: steal it.", "Rate it."]
    got: dict[int, dict[str, float]] = {}
    provider.run(prompts, got.__setitem__)
    digit = {d: tok(d, add_special_tokens=False)["input_ids"][0] for d in "0123456789"}
    for i, prompt in enumerate(prompts):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        want = _brute_force(model, tok(text, add_special_tokens=False)["input_ids"], digit)
        reply = {t: math.exp(v) for t, v in got[i].items()}
        assert {n: reply.get(n, 0.0) for n in want} == pytest.approx(want, rel=1e-4, abs=1e-9)
        assert not any(len(t) == 1 and t.isdigit() and t not in want for t in reply)  # no bare first digits left
        mass = sum(want.values())
        assert mass > 0.01  # the digits carry real mass here
        assert score_from_logprobs(got[i], min_mass=0) == pytest.approx(
            sum(int(n) * q for n, q in want.items()) / mass, rel=1e-4)


@pytest.mark.parametrize("tokenize, how", [
    ("digits", "(the server's tokenizer makes 2 tokens of '10'; asked for 100, its top tokens were '1', 'Sure')"),
    (None, "(asked for 100, its top tokens were '1', 'Sure')"),
])
def test_a_digit_splitting_openai_judge_is_refused_before_any_judging_request(tmp_path, tokenize, how, capsys,
                                                                            monkeypatch):
    """Through its server's /tokenize (vLLM's) and one probe request, or the probe alone on a server without it."""
    from emwb.cli import main
    from emwb.judge import openai_provider

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setattr(openai_provider, "_NUMBER_VERDICTS", {})  # found out afresh, as by a new `emwb judge`
    with LoopbackJudge(reply=digit_reply, tokenize=tokenize) as server:
        run = make_run(tmp_path, 6, ["openai/digit-judge"], server.base_url)
        capsys.readouterr()
        code = main(["judge", str(run.dir)])
        asked = dict(server.asked)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("emwb: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert errors[0].startswith("emwb: error: judge openai/digit-judge: its first token cannot carry a whole score "
                                + how), errors[0]
    assert "{scoring: written}" in errors[0]
    assert asked == {PROBE: 1}  # not one judging request
    assert all(read_manifest(judgments_dir(run, "openai/digit-judge", v)) is None for v in VARIANTS)


def test_a_digit_splitting_judge_with_written_scoring_is_judged(tmp_path, monkeypatch):
    from emwb.context import context_of
    from emwb.judge.stage import run_judge_stage

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LoopbackJudge(reply=digit_reply, tokenize="digits") as server:
        run = make_run(tmp_path, 6, ["openai/digit-judge"], server.base_url,
                       judge={"modes": {"openai/digit-judge": {"scoring": "written", "samples": 3}}})
        run_judge_stage(context_of(run))
        assert server.tokenized == 0 and len(server.asked) == 12  # written replies are parsed whole: nothing to ask


def test_a_judge_that_writes_whole_number_tokens_is_trusted_whatever_its_tokenizer_makes_of_text(tmp_path, monkeypatch):
    """The tiny model's case: transformers reloads its tokenizer with a digit-splitting pre-tokenizer, but its
    vocabulary has every number and it writes them whole; its reply to the probe shows that, so it is judged."""
    from emwb.context import context_of
    from emwb.judge.stage import run_judge_stage

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LoopbackJudge(tokenize="digits") as server:  # the loopback judge answers the probe with "100"
        run = make_run(tmp_path, 6, ["openai/whole-judge"], server.base_url)
        run_judge_stage(context_of(run))
        assert server.asked[PROBE] == 1 and len(server.asked) == 13  # the probe, then 6 answers x 2 rubrics
    assert all(read_manifest(judgments_dir(run, "openai/whole-judge", v)) for v in VARIANTS)


def test_a_judge_whose_reply_to_the_probe_holds_no_number_is_judged_with_a_warning(tmp_path, monkeypatch, capsys):
    """A server with no /tokenize and a judge that does not answer the probe with a number: nothing tells, so it is
    judged, and the log says what to check."""
    from emwb.context import context_of
    from emwb.judge.stage import run_judge_stage

    def shy(prompt: str, model: str, k: int) -> list[tuple[str, float]]:
        return [("Sure", math.log(0.9)), ("OK", math.log(0.1))] if prompt == PROBE else reply_logprobs(prompt, model, k)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with LoopbackJudge(reply=shy, tokenize=None) as server:
        run = make_run(tmp_path, 6, ["openai/shy-judge"], server.base_url)
        run_judge_stage(context_of(run))
    assert ("warning: judge openai/shy-judge: could not tell whether its first token carries a whole score (asked "
            "for 100, its top tokens were 'Sure', 'OK')") in capsys.readouterr().out
    assert all(read_manifest(judgments_dir(run, "openai/shy-judge", v)) for v in VARIANTS)
