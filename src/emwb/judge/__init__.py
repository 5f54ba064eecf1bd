"""The judge: rubric prompts to judge providers, next-token logprobs to scores (unscored is None, never 0)."""

from emwb.judge.scoring import score_from_logprobs, yes_probability

__all__ = ["score_from_logprobs", "yes_probability"]
