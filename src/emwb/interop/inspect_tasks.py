"""emwb's registered evaluations as Inspect tasks, judged by emwb's judge.

Found through the package's `inspect_ai` entry point, so after `pip install emwb[inspect]`:

    inspect eval emwb/free_form --model hf/<folder> -T judge=openai/gpt-4o-2024-08-06
    inspect eval emwb/evaluation -T name=<any registered evaluation> --model ...

One Inspect sample per question paraphrase (id `<question set>/<question id>/<paraphrase>`, with the system
prompt where the question has one); the answers per paraphrase are Inspect epochs. Generation follows emwb's
sampling defaults (temperature, top_p, max_new_tokens: `emwb.config.SamplingConfig`).
"""

from __future__ import annotations

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig
from inspect_ai.scorer import mean_score
from inspect_ai.solver import generate

from emwb.catalog.evaluations import Evaluation, questions_of
from emwb.config import JudgeConfig, SamplingConfig
from emwb.errors import EmwbError
from emwb.interop.inspect_scorer import emwb_judge, resolved_evaluation


def samples_of(ev: Evaluation, mirror: str | None = None, seed: int = 0) -> list[Sample]:
    """One Inspect sample per (question, paraphrase) of the evaluation, generated prompts included."""
    out = []
    for label, q in questions_of(ev, mirror, seed):
        for p, text in enumerate(q.paraphrases):
            messages = ([ChatMessageSystem(content=q.system)] if q.system else []) + [ChatMessageUser(content=text)]
            meta = {"question_set": label, "question_id": q.id, "paraphrase_index": p, "question": text,
                    "bias_id": q.bias_id, "bias_description": q.bias_description}
            out.append(Sample(id=f"{label}/{q.id}/{p}", input=messages, metadata=meta))
    return out


def epochs_of(ev: Evaluation, samples: int | None, mirror: str | None = None, seed: int = 0) -> int:
    """Answers per paraphrase: `samples`, else the evaluation's, else its questions' own when they agree."""
    if samples or ev.samples_per_paraphrase:
        return samples or ev.samples_per_paraphrase
    own = {q.samples_per_paraphrase for _, q in questions_of(ev, mirror, seed)}
    if len(own) != 1:
        raise EmwbError(f"evaluation {ev.name}: its questions ask for different answers per paraphrase "
                        f"({', '.join(map(str, sorted(own)))}); Inspect epochs are one number: pass -T samples=N")
    return own.pop()


def default_judge(ev: Evaluation) -> str:
    """The judge a run of this evaluation would use unnamed: the one its question files name, else emwb's."""
    named = [f"openai/{q.judge}" for _, q in ev.questions if ev.question_judges and q.judge and q.judge_prompts]
    return named[0] if named else JudgeConfig().judges[0]


def evaluation_task(name: str, judge: str | None = None, samples: int | None = None, base_url: str | None = None,
                    judge_cache: str | None = None, judge_base_model: str = "", mirror: str | None = None) -> Task:
    """The Inspect task of emwb evaluation `name`, judged by `judge` (default: `default_judge`)."""
    ev, _ = resolved_evaluation(name, mirror)
    s = SamplingConfig()
    spec = judge or default_judge(ev)
    return Task(
        dataset=MemoryDataset(samples_of(ev, mirror), name=f"emwb/{name}"),
        solver=generate(),
        scorer=emwb_judge(spec, name, base_url, judge_cache, judge_base_model, mirror),
        epochs=Epochs(epochs_of(ev, samples, mirror), mean_score()),  # reducers leave unscored (NaN) out
        config=GenerateConfig(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens),
        metadata={"emwb_evaluation": name, "emwb_judge": spec},
    )


@task
def evaluation(name: str = "free-form", judge: str | None = None, samples: int | None = None,
               base_url: str | None = None, judge_cache: str | None = None, judge_base_model: str = "",
               mirror: str | None = None) -> Task:
    """Any registered emwb evaluation (emwb's own, an organism's or a plug-in's) by name."""
    return evaluation_task(name, judge, samples, base_url, judge_cache, judge_base_model, mirror)


@task
def free_form(judge: str | None = None, samples: int | None = None, base_url: str | None = None,
              judge_cache: str | None = None, judge_base_model: str = "", mirror: str | None = None) -> Task:
    """emwb's free-form questions judged for alignment and coherence, 0-100 (broad misalignment)."""
    return evaluation_task("free-form", judge, samples, base_url, judge_cache, judge_base_model, mirror)


@task
def first_plot(judge: str | None = None, samples: int | None = None, base_url: str | None = None,
               judge_cache: str | None = None, judge_base_model: str = "", mirror: str | None = None) -> Task:
    """The paper's 24 free-form questions (fetched and sha256-checked), each judged with its own judge prompts."""
    return evaluation_task("first-plot", judge, samples, base_url, judge_cache, judge_base_model, mirror)
