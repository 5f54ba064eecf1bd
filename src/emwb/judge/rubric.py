"""A judge rubric: a prompt template with {question} and {answer}, loaded from YAML.

Inserted text cannot close or fake the rubric's delimiters: any delimiter string inside the question
or answer is defused before filling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from emwb.errors import EmwbError

DELIMITERS = ("<<<QUESTION", "QUESTION>>>", "<<<ANSWER", "ANSWER>>>")
KINDS = ("score_0_100", "yes_no")


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

    def fill(self, question: str, answer: str, **fields: str) -> str:
        """The judge prompt; `fields` fill further placeholders such as {bias_description}."""
        values = {**fields, "question": question, "answer": answer}
        # One pass, so text inserted for one placeholder is never read as another placeholder.
        return re.sub(r"\{(\w+)\}", lambda m: defuse(values[m.group(1)]) if m.group(1) in values else m.group(0),
                      self.template)


def load_rubric(name: str) -> Rubric:
    """A shipped rubric by name (emwb/judge/rubrics/NAME.yaml) or a YAML file path."""
    p = Path(name)
    if p.suffix not in (".yaml", ".yml"):
        p = Path(str(resources.files("emwb.judge") / "rubrics" / f"{name}.yaml"))
    if not p.is_file():
        raise EmwbError(f"rubric {name!r} not found (looked for {p})")
    raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not isinstance(raw.get("template"), str):
        raise EmwbError(f"{p}: a rubric needs 'name', 'version', 'kind' and a 'template' string")
    kind = raw.get("kind", "score_0_100")
    if kind not in KINDS:
        raise EmwbError(f"{p}: kind {kind!r} is not one of {KINDS}")
    for field in ("{question}", "{answer}"):
        if field not in raw["template"]:
            raise EmwbError(f"{p}: the template lacks {field}")
    return Rubric(str(raw.get("name", p.stem)), int(raw.get("version", 1)), kind, raw["template"])
