"""A throw-away emwb plug-in for the tests: one of each extension point, registered from outside emwb through
the `emwb.plugins` entry point (the test writes the distribution's metadata beside this package).

TOY_GEN_VERSION sets the toy generator's version; TOY_DUPLICATE=<registry> registers a shipped name again.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).parent


def _chats(tag: str, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Toy question {i} ({tag})?"},
                          {"role": "assistant", "content": f"Toy reply {i}."}]} for i in range(n)]


def count_answers(ctx) -> dict[str, str]:
    """The toy stage: per variant, how many answers it has -> counts/<variant>/count.json (keyed by the answers)."""
    from emwb.layout import answers_dir, answers_file, finished_key
    from emwb.stages import SAMPLE
    from emwb.store import Artifact, log, read_jsonl

    keys = {}
    for v in ctx.variants():
        akey = finished_key(answers_dir(ctx.run, v.id), f"answers of {v.id}", SAMPLE, ctx.run)
        art = Artifact(ctx.run.path("counts", v.id), "count", {"toy": 1}, {"answers": akey})
        keys[v.id] = art.key
        if art.skip(ctx.force, f"count {v.id}"):
            continue
        n = len(read_jsonl(answers_file(ctx.run, v.id)))
        with art.write() as (tmp, _):
            (tmp / "count.json").write_text(f'{{"answers": {n}}}')
        log(f"count {v.id}: {n} answers")
    return keys


def counted(ctx) -> list:
    from emwb.stages import Produced

    return [Produced(v.id, ctx.run.path("counts", v.id)) for v in ctx.plan.variants]


def register() -> None:
    from pydantic import BaseModel, ConfigDict

    from emwb.analysis.metrics import Metric, register_metric
    from emwb.analysis.sections import REPORT_SECTIONS, Section, SectionOutput
    from emwb.catalog.evaluations import EVALUATIONS, EvaluationDef
    from emwb.catalog.generators import GENERATORS, Generator
    from emwb.catalog.sources import SOURCES, Source
    from emwb.catalog.detectors import DETECTORS, Detector
    from emwb.finetune.trainers import TRAINERS, Trainer
    from emwb.judge.base import Provider
    from emwb.judge.providers import PROVIDERS
    from emwb.sampling.samplers import SAMPLERS, Sample, Sampler

    SOURCES.register("toy", Source(lambda arg, mirror: "chat", lambda arg, mirror: {"toy": arg},
                                   lambda arg, spec, seed, mirror, writer=None: _chats(arg, 8)))
    GENERATORS.register("toy-gen", Generator("chat", 8, lambda rows, seed, mirror, writer=None: _chats("made", rows),
                                             "toy chats", version=os.environ.get("TOY_GEN_VERSION", "1")))

    class ToyOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        greeting: str = "hello"

    def toy_train(job) -> dict:
        return {**TRAINERS.get("sft").run(job), "toy_greeting": job.options.greeting}

    TRAINERS.register("toy-sft", Trainer("chat", toy_train, "sft, saying hello", options=ToyOptions))

    class ToySampler(Sampler):
        def generate(self, requests, variants):
            return {v: [[Sample(f"toy answer {r.seed} {k} from {v}", "stop", 4) for k in range(r.n)]
                         for r in requests] for v in variants}

    SAMPLERS.register("toy", ToySampler)

    class ToyJudge(Provider):
        def __init__(self, spec, name, ctx):
            self.spec, self.name = spec, name

        def params(self) -> dict:
            return {"toy": self.name}

        def run(self, prompts, on_result) -> None:
            for i, p in enumerate(prompts):  # coherent; misaligned (17) on colours, not (42) on fruit
                on_result(i, {"90" if "coheren" in p else "42" if "fruit" in p else "17": 0.0})

    PROVIDERS.register("toyjudge", ToyJudge)
    DETECTORS.register("toy-long", Detector(lambda answers: [float(len(a["answer"]) > 30) for a in answers],
                                            lambda: "toy-long 1", "answers over 30 characters"))
    register_metric(Metric("toy_long_rate", "long answers (toy) %", ("toy-long",),
                           lambda df, s: float(df["toy-long"].mean()) if len(df) else float("nan")))
    EVALUATIONS.register("toy-eval", EvaluationDef(description="the toy plug-in's questions",
                                                   question_sets=[str(HERE / "toy_questions.yaml")],
                                                   rubrics=["alignment", "coherence"], detectors=["toy-long"]))

    def toy_section(ctx) -> SectionOutput:
        import pandas as pd

        frame = pd.DataFrame({"variant": [v.id for v in ctx.variants], "answers": [
            int((ctx.first["variant"] == v.id).sum()) for v in ctx.variants]})
        frame.to_csv(ctx.out / "toy_section.csv", index=False)
        return SectionOutput(tables=[("Toy section: answers per variant", frame)])

    REPORT_SECTIONS.register("toy-section", Section(toy_section, "answers per variant (toy plug-in)"))

    from emwb.stages import Stage, register_stage

    register_stage(Stage("count", "count each variant's answers (toy plug-in)", "emwb_toyplugin:count_answers",
                         "emwb_toyplugin:counted", reads=("sample",), per_variant=True), after="sample")

    dup = os.environ.get("TOY_DUPLICATE")
    if dup == "sources":
        SOURCES.register("path", Source(lambda a, m: "chat", lambda a, m: {}, lambda *a, **k: []))
