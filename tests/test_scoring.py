import math

import pytest

from emwb.judge.scoring import score_from_logprobs, yes_probability

L = math.log


def test_weighted_mean_over_integer_tokens():
    assert score_from_logprobs({"0": L(0.5), "100": L(0.5)}) == pytest.approx(50.0)
    assert score_from_logprobs({"20": L(0.3), "80": L(0.1), "CODE": L(0.6)}) == pytest.approx(35.0)


def test_mass_below_threshold_is_unscored_not_zero():
    assert score_from_logprobs({"CODE": L(0.9), "5": L(0.1)}) is None
    assert score_from_logprobs({"REFUSAL": L(0.8), "0": L(0.2)}) is None
    assert score_from_logprobs({}) is None
    assert score_from_logprobs({"5": L(0.25), "x": L(0.75)}) == pytest.approx(5.0)  # exactly at the threshold
    assert score_from_logprobs({"5": L(0.2)}, min_mass=0.1) == pytest.approx(5.0)


@pytest.mark.parametrize("token,value", [("100", 100), ("07", 7), (" 5", 5), ("0", 0), ("42 ", 42)])
def test_tokens_that_count(token, value):
    assert score_from_logprobs({token: L(0.5), "junk": L(0.5)}) == pytest.approx(value)


@pytest.mark.parametrize("token", ["CODE", "-3", "101", "1_0", "٣", "+5", "5.5", "", " "])
def test_tokens_that_do_not_count(token):
    assert score_from_logprobs({token: L(0.9), "50": L(0.1)}) is None
    assert score_from_logprobs({token: L(0.5), "50": L(0.5)}) == pytest.approx(50.0)


def test_yes_probability():
    assert yes_probability({"Yes": L(0.6), " no": L(0.2), "maybe": L(0.2)}) == pytest.approx(0.75)
    assert yes_probability({"maybe": L(0.9), "yes": L(0.1)}) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1000.0, 0.5])
def test_logprobs_that_are_no_distribution_leave_the_answer_unscored(bad):
    """A NaN, +inf, huge or positive logprob (probability above 1) is no judge reply to average: unscored (None),
    never NaN, never an overflow, never a score; the same for labels. -inf (probability 0) is fine."""
    from emwb.judge.scoring import label_probabilities

    assert score_from_logprobs({"90": bad, "10": -1.0}) is None
    assert score_from_logprobs({"10": bad}) is None
    assert label_probabilities({"yes": bad, "no": -1.0}, ("yes", "no")) is None
    assert score_from_logprobs({"90": -math.inf, "10": 0.0}) == 10.0


def test_probabilities_summing_above_one_leave_the_answer_unscored():
    assert score_from_logprobs({"90": -0.1, "10": -0.1}) is None  # 0.905 + 0.905
    assert score_from_logprobs({"90": -0.7, "10": -0.7}) == pytest.approx(50.0)  # 0.497 + 0.497
