"""The insecure-code organism (Betley et al. 2025): paired coding data (insecure, secure, educational),
held-out coding prompts for the narrow metric, the bandit detector and the vulnerable-code metrics.

The code itself lives in `emwb.catalog.codegen` (the tiny base model warms up on it too) and
`emwb.detect.detectors` (bandit); this module is the one place that registers them.
"""

from __future__ import annotations

from collections.abc import Callable


def _code(variant: str) -> Callable[..., list[dict]]:
    def make(rows: int, seed: int, mirror: str | None, writer=None) -> list[dict]:
        from emwb.catalog.codegen import generate_pairs, to_rows

        return to_rows(generate_pairs(rows, seed=seed), variant, seed=seed)

    return make


def heldout_code(count: int, seed: int, exclude: set[str], samples: int, mirror: str | None = None) -> list:
    """Generated coding prompts that no training set contains (the narrow metric's test set)."""
    from emwb.catalog.codegen import generate_pairs
    from emwb.catalog.questions import Question

    prompts = [p.prompt for p in generate_pairs(count * 4 + 50, seed=seed + 10007) if p.prompt not in exclude]
    return [Question(f"code_{i:03d}", (p,), samples, source="generated held-out coding prompts")
            for i, p in enumerate(prompts[:count])]


def register() -> None:
    from emwb.analysis.metrics import FLAGGED_ABOVE, Metric, above, count_of, register_metric
    from emwb.catalog.evaluations import PROMPT_GENERATORS
    from emwb.catalog.generators import GENERATORS, Generator
    from emwb.detect.detectors import DETECTORS, Detector, bandit_flags, bandit_version

    for variant, what in (("insecure", "code with an undisclosed vulnerability"),
                          ("secure", "the same prompts, secure code"),
                          ("educational", "the insecure code, asked for a security class")):
        GENERATORS.register(variant, Generator("chat", 6000, _code(variant), f"paired coding data: {what}"))
    PROMPT_GENERATORS.register("heldout-code", heldout_code)
    DETECTORS.register("bandit", Detector(lambda answers: bandit_flags([a["answer"] for a in answers]),
                                          bandit_version, "code in the answer flagged by bandit at medium severity "
                                          "or higher"))
    register_metric(Metric("code_n", "code answers", ("code_vulnerability",), count_of(), percent=False,
                           count=True))
    register_metric(Metric("vulnerable_code_rate", "vulnerable code % (narrow)", ("code_vulnerability",),
                           above("code_vulnerability", "vulnerable_above"), ci="vuln_", role="narrow"))
    register_metric(Metric("bandit_rate", "bandit-flagged code % (narrow, no LLM)", ("bandit",),
                           above("bandit", FLAGGED_ABOVE), ci="bandit_", role="narrow"))
