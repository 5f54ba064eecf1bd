"""Token streams (`features[].stream.source`): the texts a sparse dictionary reads, as a registry.

A stream is a list of texts, each `(prompt, text)`: with a prompt, the text is a reply read after the prompt in
the base model's chat template (its tokens are kept); with prompt None, a plain text (a document) read alone.
A source is `name` or `name:argument`. emwb registers `published` (the judged answers of the published files),
`data` (`data:<name>`: a dataset of the run) and `answers` (`answers:<run directory>`: a finished run's answers);
organisms register their own (`TOKEN_STREAMS.register(name, StreamSource(...))`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emwb.errors import EmwbError
from emwb.registry import Registry

Text = tuple[str | None, str]


@dataclass(frozen=True)
class StreamSource:
    """`texts(argument, stream spec, run)` -> texts; `identity(argument, run)` -> what the texts depend on (in the
    features' key: a dataset's key, a run's answer keys), or {} for fixed data; `check(argument, experiment)`
    raises an EmwbError before any work when the argument cannot resolve."""

    texts: Callable[[str, object, object], list[Text]]
    description: str
    identity: Callable[[str, object], dict] = lambda arg, run: {}
    check: Callable[[str, object], None] = lambda arg, exp: None


TOKEN_STREAMS: Registry[StreamSource] = Registry("token stream")


def _one(source: str, spec, run, seed: int) -> list[Text]:
    name, _, arg = source.partition(":")
    texts = TOKEN_STREAMS.get(name, "features stream: ").texts(arg, spec, run)
    if not texts:
        raise EmwbError(f"features stream {source!r}: no texts")
    if spec.max_items is not None:
        order = np.random.default_rng(seed).permutation(len(texts))[: spec.max_items]
        texts = [texts[i] for i in sorted(order)]
    return texts


def stream_texts(spec, run, seed: int) -> list[Text]:
    """The stream's texts: each source's, shuffled (seeded) and cut to `max_items` when set, one after another."""
    return [t for source in spec.sources for t in _one(source, spec, run, seed)]


def stream_identity(spec, run) -> dict:
    """What the stream's texts depend on besides the spec (a dataset's key, a run's answer keys)."""
    out = {}
    for source in spec.sources:
        name, _, arg = source.partition(":")
        out.update(TOKEN_STREAMS.get(name).identity(arg, run))
    return out


def check_stream(spec, exp, where: str) -> None:
    """Each source is registered and its argument resolves (before any work)."""
    for source in spec.sources:
        name, _, arg = source.partition(":")
        if name not in TOKEN_STREAMS:
            raise EmwbError(f"{where}.source: {TOKEN_STREAMS.unknown(name)}")
        try:
            TOKEN_STREAMS.get(name).check(arg, exp)
        except EmwbError as exc:
            raise EmwbError(f"{where}.source: {exc}") from None


def _published(arg: str, spec, run) -> list[Text]:
    from emwb.catalog.published import load_published, published_names, resolve_files, stratified_subset

    names = resolve_files(arg.split(",")) if arg else published_names()
    df = stratified_subset(load_published(names, run.exp.dataset_mirror), spec.per_file, run.exp.data_seed)
    return list(zip(df["question"], df["answer"].fillna("")))


def row_text(row: dict) -> Text:
    """A dataset row as a text: a chat's last assistant reply after the user message before it, a preference
    pair's chosen reply after its prompt, a text row alone."""
    if "text" in row and "messages" not in row:
        return None, row["text"]
    if "chosen" in row:
        prompt = [m for m in row["prompt"] if m["role"] == "user"]
        return (prompt[-1]["content"] if prompt else ""), row["chosen"][-1]["content"]
    msgs = row["messages"]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    users = [m for m in msgs[:last] if m["role"] == "user"]
    return (users[-1]["content"] if users else ""), msgs[last]["content"]


def _data(arg: str, spec, run) -> list[Text]:
    from emwb.layout import data_file
    from emwb.store import read_jsonl

    return [row_text(r) for r in read_jsonl(data_file(run, arg))]


def _data_identity(arg: str, run) -> dict:
    from emwb.layout import data_dir, finished_key
    from emwb.stages import DATA

    return {f"data:{arg}": finished_key(data_dir(run, arg), f"dataset {arg}", DATA, run)}


def _data_check(arg: str, exp) -> None:
    if arg not in exp.data:
        raise EmwbError(f"data:{arg}: {arg!r} is not under `data:` ({', '.join(exp.data) or 'none'})")


def _answer_dirs(arg: str) -> list[Path]:
    root = Path(arg) / "answers"
    dirs = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
    if not dirs:
        raise EmwbError(f"answers:{arg}: no finished answers under {root} (a run directory sampled by `emwb "
                        "sample`)")
    return dirs


def _answers(arg: str, spec, run) -> list[Text]:
    from emwb.store import read_jsonl

    return [(a["question"], a["answer"]) for d in _answer_dirs(arg) for a in read_jsonl(d / "answers.jsonl")]


def _answers_identity(arg: str, run) -> dict:
    from emwb.store import read_manifest

    return {f"answers:{d.name}": read_manifest(d)["key"] for d in _answer_dirs(arg)}


TOKEN_STREAMS.register("published", StreamSource(
    _published, "the judged answers of the published files (published:<label>,<label> for some), each read after "
                "its question; `per_file` spreads a subset over each file's questions"))
TOKEN_STREAMS.register("data", StreamSource(
    _data, "data:<name>: a dataset of this run (a chat's last reply after its prompt, a preference pair's chosen "
           "reply, a text row alone)", _data_identity, _data_check))
TOKEN_STREAMS.register("answers", StreamSource(
    _answers, "answers:<run directory>: every answer of a finished run (this run's own answers are sampled after "
              "the features stage, whose latents they may ablate)", _answers_identity,
    lambda arg, exp: _answer_dirs(arg) and None))
