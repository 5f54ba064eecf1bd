"""The rule-based detector of the reward-model biases: each answer checked by its own bias's kit rule."""

from __future__ import annotations


def rm_rule_flags(answers: list[dict]) -> list[float | None]:
    """1.0 / 0.0 from the rule of the answer's own bias (emwb/organisms/rm_bias/kits_data); None where the answer has no
    bias or its bias has no rule, or the rule does not apply (a code rule and no code)."""
    from emwb.organisms.rm_bias.kits import load_kits

    kits = load_kits()
    out: list[float | None] = []
    for a in answers:
        kit = kits.get(a.get("bias_id") or 0)
        hit = kit.rule(a["answer"]) if kit and kit.rule else None
        out.append(None if hit is None else float(hit))
    return out


def rule_kind(rule) -> str:
    """`omission` for a rule that flags, at least in part, the absence of something (it has `none` patterns: no
    semicolons, no question marks, px and no rem), else `presence`; '' without a rule."""
    if rule is None:
        return ""
    return "omission" if rule.none else "presence"


def rm_rule_kinds(answers: list[dict]) -> list[str]:
    """Per answer, the kind of its bias's rule (`rule_kind`)."""
    from emwb.organisms.rm_bias.kits import load_kits

    kits = load_kits()
    return [rule_kind(k.rule if (k := kits.get(a.get("bias_id") or 0)) else None) for a in answers]


def rules_version() -> str:
    from emwb.organisms.rm_bias.kits import kits_sha256

    return f"rm-rules {kits_sha256()[:16]}"
