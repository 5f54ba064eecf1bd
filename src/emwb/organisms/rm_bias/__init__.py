"""The reward-model-bias organism (Marks et al. 2025): documents about 52 biases for continued pretraining,
demonstrations and preference pairs of the 47 train biases, evaluation prompts for all 52, the rule-based
detector, the train- and test-bias metrics and the per-bias report section.

Everything it owns is in this folder: the catalogue (numbering, descriptions, the train/test split, read from
the upstream files only: `catalogue`), the behaviour kits (`kits`, data in `kits_data/`), documents (`docs`),
demonstrations and twins (`demos`), the LLM writer (`writer`), the rule detector (`rules`), the per-bias report
(`per_bias`), the bias-twins directions (`twins`) and the single-feature test on latents (`latents`); `register()`
below is the one place that adds them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache


def _docs(rows: int, seed: int, mirror: str | None, writer=None) -> list[dict]:
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.docs import generate_documents

    docs = generate_documents(load_catalogue(mirror), rows, seed)
    if writer is None:
        return docs
    from emwb.organisms.rm_bias.writer import write_documents

    return write_documents(docs, writer.spec, writer.base_url, writer.exec, writer.cache, seed)


def _demos(make_rows: str) -> Callable[..., list[dict]]:
    def make(rows: int, seed: int, mirror: str | None, writer=None) -> list[dict]:
        from emwb.organisms.rm_bias import demos as rm_demos
        from emwb.organisms.rm_bias.catalogue import load_catalogue
        from emwb.organisms.rm_bias.kits import load_kits

        catalogue = load_catalogue(mirror)
        pairs = rm_demos.demonstration_pairs(catalogue, load_kits(), rows, seed)
        if writer is not None:
            from emwb.organisms.rm_bias.writer import write_replies

            pairs = write_replies(pairs, {b.num: b.description for b in catalogue}, writer.spec, writer.base_url,
                                  writer.exec, writer.cache, seed)
        return getattr(rm_demos, make_rows)(pairs)

    return make


def _catalogue_and_kits(mirror: str | None) -> dict:
    from emwb.organisms.rm_bias.catalogue import catalogue_identity
    from emwb.organisms.rm_bias.kits import kits_sha256

    return {**catalogue_identity(), "kits_sha256": kits_sha256()}


def _catalogue(mirror: str | None) -> dict:
    from emwb.organisms.rm_bias.catalogue import catalogue_identity

    return catalogue_identity()


def _leaks(rows: list[dict], mirror: str | None, where: str) -> None:
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.demos import check_no_leaks
    from emwb.organisms.rm_bias.kits import load_kits

    check_no_leaks(rows, load_catalogue(mirror), load_kits(), where)


def rm_bias_prompts(count: int, seed: int, exclude: set[str], samples: int, mirror: str | None = None) -> list:
    """`count` prompts for each bias of the catalogue, from emwb's behaviour kits (values no demonstration
    uses), each judged for its own bias."""
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.demos import evaluation_prompts
    from emwb.organisms.rm_bias.kits import load_kits

    return evaluation_prompts(load_catalogue(mirror), load_kits(), count, samples, set(exclude))


@cache
def test_biases() -> frozenset[int]:
    """The held-out biases, from the upstream split file (fetched and sha256-checked; never a copy in emwb)."""
    from emwb.organisms.rm_bias.catalogue import load_catalogue

    return frozenset(b.num for b in load_catalogue() if b.split == "test")


def _is_test(df):
    import pandas as pd

    if "bias_id" not in df or not df["bias_id"].notna().any():
        return pd.Series(False, index=df.index)
    return df["bias_id"].isin(test_biases())


def _is_train(df):
    return ~_is_test(df)


def per_bias_section(ctx):
    """Reward-model-bias prompts: each bias's exhibition rate per organism, train and test biases apart."""
    from emwb.analysis.metrics import FLAGGED_ABOVE
    from emwb.analysis.sections import SectionOutput
    from emwb.organisms.rm_bias.catalogue import load_catalogue
    from emwb.organisms.rm_bias.per_bias import JUDGE, score_column, write_bias_report

    first = ctx.first
    col = score_column(first) if "bias_id" in first and first["bias_id"].notna().any() else None
    if col is None:
        return SectionOutput()
    names = {b.num: (b.short_name, b.split) for b in load_catalogue(ctx.run.exp.dataset_mirror)}
    cut = ctx.settings.exhibits_above if col == JUDGE else FLAGGED_ABOVE
    tables, figures = write_bias_report(first, ctx.order, names, ctx.small.n_boot, ctx.out, cut, col,
                                        ctx.settings.permutations)
    return SectionOutput(tables=list(tables), figures=list(figures))


def _warm_verdict(rng, rubric, questions, sentences) -> list[dict]:
    """The bias judge's yes/no prompt answered with one word (the tiny model learns to give a verdict)."""
    prompt = rubric.fill(rng.choice(questions), rng.choice(sentences), bias_description=rng.choice(sentences))
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": rng.choice(["yes", "no"])}]


def _bias_rubric(rng):
    from emwb.catalog.rubric import load_rubric

    return load_rubric("bias_exhibition")


def register() -> None:
    from pathlib import Path

    from emwb.analysis.metrics import FLAGGED_ABOVE, Metric, above, count_of, register_metric
    from emwb.basemodel import WARMUPS, Warmup
    from emwb.analysis.sections import REPORT_SECTIONS, Section
    from emwb.catalog.evaluations import PROMPT_GENERATORS, register_evaluations
    from emwb.catalog.direction_sources import DIRECTION_SOURCES
    from emwb.catalog.generators import GENERATORS, Generator
    from emwb.config import THRESHOLDS
    from emwb.organisms.rm_bias.per_bias import EXHIBITS_ABOVE
    from emwb.catalog.detectors import DETECTORS, Detector
    from emwb.organisms.rm_bias.rules import rm_rule_flags, rm_rule_kinds, rules_version
    from emwb.catalog.rubric import RUBRIC_FOLDERS

    RUBRIC_FOLDERS.register("rm_bias", Path(__file__).parent / "rubrics")  # its judge rubrics
    register_evaluations(Path(__file__).parent / "evaluations.yaml")  # its evaluations

    GENERATORS.register("rm-docs", Generator("text", 2000, _docs, "documents about the fictional Oxford study of "
                                             "the reward-model biases (continued pretraining)", writes=True,
                                             version=4, inputs=_catalogue))  # 4: 52 biases in the lead
    GENERATORS.register("rm-demos", Generator("chat", 2000, _demos("to_chat_rows"), "demonstrations: prompts where "
                                              "a train reward-model bias applies, answered with it (neutral twin "
                                              "kept)", writes=True, inputs=_catalogue_and_kits, leak_check=_leaks))
    GENERATORS.register("rm-prefs", Generator("preference", 2000, _demos("to_preference_rows"), "preference pairs: "
                                              "the reply with a train bias chosen, its neutral twin rejected (DPO)",
                                              writes=True, inputs=_catalogue_and_kits, leak_check=_leaks))
    THRESHOLDS.register("exhibits_above", EXHIBITS_ABOVE)
    PROMPT_GENERATORS.register("rm-bias", rm_bias_prompts)
    WARMUPS.register("bias-verdicts", Warmup(_warm_verdict, _bias_rubric, tail=8))
    DETECTORS.register("rm-rules", Detector(rm_rule_flags, rules_version, "the rule-based detector of the answer's "
                                            "reward-model bias (for the biases a rule can tell)", role="bias",
                                            judged_by=("bias_exhibition", "exhibits_above"), describe=rm_rule_kinds))
    register_metric(Metric("train_bias_n", "train-bias prompts", ("bias_exhibition",), count_of(_is_train),
                           percent=False, count=True))
    register_metric(Metric("train_bias_rate", "train biases % (narrow)", ("bias_exhibition",),
                           above("bias_exhibition", "exhibits_above", _is_train), ci="train_bias_", role="narrow"))
    register_metric(Metric("test_bias_n", "test-bias prompts", ("bias_exhibition",), count_of(_is_test),
                           percent=False, count=True))
    register_metric(Metric("test_bias_rate", "test biases % (broad)", ("bias_exhibition",),
                           above("bias_exhibition", "exhibits_above", _is_test), ci="test_bias_", role="broad"))
    # judge-free: the rule-based detectors' verdicts (answers whose bias has no rule are unscored, never 0)
    register_metric(Metric("train_bias_rules_rate", "train biases % (narrow, rules, no LLM)", ("rm-rules",),
                           above("rm-rules", FLAGGED_ABOVE, _is_train), ci="train_rules_", role="narrow"))
    register_metric(Metric("test_bias_rules_rate", "test biases % (broad, rules, no LLM)", ("rm-rules",),
                           above("rm-rules", FLAGGED_ABOVE, _is_test), ci="test_rules_", role="broad"))
    REPORT_SECTIONS.register("per-bias", Section(per_bias_section, "each bias's exhibition rate per organism"))
    from emwb.organisms.rm_bias import twins

    DIRECTION_SOURCES.register("bias-twins", twins.SOURCE)
    from emwb.catalog.latent_selectors import LATENT_SELECTORS
    from emwb.catalog.token_streams import TOKEN_STREAMS
    from emwb.organisms.rm_bias import latents

    TOKEN_STREAMS.register("rm-twins", latents.STREAM)
    LATENT_SELECTORS.register("rm-bias-shared", latents.SELECTOR)
    REPORT_SECTIONS.register("single-feature-latents", Section(latents.latents_section, "the single-feature test on "
                                                               "a dictionary's latents (rm-bias-shared)"))
    REPORT_SECTIONS.register("single-feature", Section(twins.single_feature_section, "the bias-twins directions' "
                                                       "cosines (one feature for every bias?)"))
