"""A judge rubric: a prompt template with {question} and {answer}, loaded from YAML or taken from a question.

emwb's own rubrics (YAML): inserted text cannot close or fake the rubric's delimiters, since any delimiter
string inside the question or answer is defused before filling. A question's own `judge_prompts` (the
upstream files) become rubrics that are filled exactly as upstream fills them (`str.format`), byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from emwb.errors import EmwbError
from emwb.registry import Registry
from emwb.yamlio import load_yaml

DELIMITERS = ("<<<QUESTION", "QUESTION>>>", "<<<ANSWER", "ANSWER>>>")
KINDS = ("score_0_100", "yes_no", "label")
# judge_prompts keys of the upstream question files -> emwb's rubric names (other keys keep their name).
RUBRIC_OF_KEY = {"aligned": "alignment", "coherent": "coherence"}
# question type -> rubric kind (upstream: free_form_judge_0_100 is a 0-100 score, free_form_judge one of labels)
KIND_OF_TYPE = {"free_form_judge_0_100": "score_0_100", "free_form_judge": "label"}
FIELDS = ("name", "version", "kind", "template", "description")


def defuse(text: str) -> str:
    """Break any rubric delimiter in model-written text so it cannot end or open a section."""
    for d in DELIMITERS:
        text = text.replace(d, d.replace("<<<", "< < <").replace(">>>", "> > >"))
    return text


@dataclass(frozen=True)
class Rubric:
    name: str
    version: int
    kind: str
    template: str
    labels: tuple[str, ...] = ()   # kind "label": the replies the template allows
    verbatim: bool = False         # a question's own judge prompt: filled as upstream does, nothing defused

    def fill(self, question: str, answer: str, **fields: str) -> str:
        """The judge prompt; `fields` fill further placeholders such as {bias_description}."""
        if self.verbatim:
            return self.template.format(question=question, answer=answer)
        values = {**fields, "question": question, "answer": answer}
        # One pass, so text inserted for one placeholder is never read as another placeholder.
        return re.sub(r"\{(\w+)\}", lambda m: defuse(values[m.group(1)]) if m.group(1) in values else m.group(0),
                      self.template)


# Folders of rubric YAML files by who ships them: emwb's own (alignment, coherence) and each organism's, which
# registers its folder (`RUBRIC_FOLDERS.register(name, folder)`) as a user's plug-in would.
RUBRIC_FOLDERS: Registry[Path] = Registry("rubric folder")
RUBRIC_FOLDERS.register("emwb", Path(str(resources.files("emwb.catalog") / "rubrics")))


def rubric_path(name: str) -> Path:
    """A registered rubric's file (NAME.yaml in a registered folder) or the YAML path given."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        return p
    files = [RUBRIC_FOLDERS.get(k) / f"{name}.yaml" for k in RUBRIC_FOLDERS]  # emwb's own folder first
    return next((f for f in files if f.is_file()), files[0])


def shipped_rubrics() -> list[str]:
    return sorted(p.name[:-5] for k in RUBRIC_FOLDERS for p in RUBRIC_FOLDERS.get(k).iterdir()
                  if p.name.endswith(".yaml"))


def load_rubric(name: str) -> Rubric:
    """A shipped rubric by name or a YAML file path; every key is checked."""
    import difflib

    p = rubric_path(name)
    if not p.is_file():
        hint = difflib.get_close_matches(name, shipped_rubrics(), n=1)
        more = f"did you mean '{hint[0]}'?" if hint else f"shipped: {', '.join(shipped_rubrics())}"
        raise EmwbError(f"unknown rubric {name!r} ({more})")
    raw = load_yaml(p)
    if not isinstance(raw, dict) or not isinstance(raw.get("template"), str):
        raise EmwbError(f"{p}: a rubric needs 'name', 'version', 'kind' and a 'template' string")
    unknown = [k for k in raw if k not in FIELDS]
    if unknown:
        hint = difflib.get_close_matches(str(unknown[0]), FIELDS, n=1)
        more = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(FIELDS)})"
        raise EmwbError(f"{p}: unknown key '{unknown[0]}'{more}")
    kind = raw.get("kind", "score_0_100")
    if kind not in KINDS:
        raise EmwbError(f"{p}: kind {kind!r} is not one of {KINDS}")
    if not isinstance(raw.get("version", 1), int):
        raise EmwbError(f"{p}: 'version' must be an integer")
    for field in ("{question}", "{answer}"):
        if field not in raw["template"]:
            raise EmwbError(f"{p}: the template lacks {field}")
    return Rubric(str(raw.get("name", p.stem)), int(raw.get("version", 1)), kind, raw["template"])


def parse_labels(template: str) -> tuple[str, ...]:
    """The replies a categorical judge prompt allows: its double-quoted words ("TRUE", "FALSE", "UNKNOWN")."""
    return tuple(dict.fromkeys(re.findall(r'"([A-Za-z][A-Za-z0-9_-]*)"', template)))


def from_judge_prompt(key: str, template: str, question_type: str) -> Rubric:
    """A question's own judge prompt as a rubric (`aligned` -> alignment, `coherent` -> coherence).

    Unsupported prompts raise EmwbError saying why: an unknown question type, placeholders other than
    {question} and {answer}, or a categorical prompt whose labels cannot be told.
    """
    import string

    kind = KIND_OF_TYPE.get(question_type)
    if kind is None:
        raise EmwbError(f"judge prompt {key!r}: question type {question_type!r} is not judged by emwb "
                        f"(supported: {', '.join(KIND_OF_TYPE)})")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise EmwbError(f"judge prompt {key!r}: not a format template ({exc})") from None
    if not fields <= {"question", "answer"} or "answer" not in fields:
        raise EmwbError(f"judge prompt {key!r}: placeholders {sorted(fields)}; emwb fills {{question}} and {{answer}}")
    labels = parse_labels(template) if kind == "label" else ()
    if kind == "label" and len(labels) < 2:
        raise EmwbError(f"judge prompt {key!r} (type free_form_judge): no double-quoted reply labels found, so the "
                        "reply cannot be scored as label probabilities")
    return Rubric(RUBRIC_OF_KEY.get(key, key), 0, kind, template, labels, verbatim=True)
