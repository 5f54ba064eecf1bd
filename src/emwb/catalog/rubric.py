"""A judge rubric: a prompt template with {question} and {answer}, loaded from YAML.

Inserted text cannot close or fake the rubric's delimiters: any delimiter string inside the question
or answer is defused before filling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

DELIMITERS = ("<<<QUESTION", "QUESTION>>>", "<<<ANSWER", "ANSWER>>>")
KINDS = ("score_0_100", "yes_no")
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

    def fill(self, question: str, answer: str, **fields: str) -> str:
        """The judge prompt; `fields` fill further placeholders such as {bias_description}."""
        values = {**fields, "question": question, "answer": answer}
        # One pass, so text inserted for one placeholder is never read as another placeholder.
        return re.sub(r"\{(\w+)\}", lambda m: defuse(values[m.group(1)]) if m.group(1) in values else m.group(0),
                      self.template)


def rubric_path(name: str) -> Path:
    """A shipped rubric's file (emwb/catalog/rubrics/NAME.yaml) or the YAML path given."""
    p = Path(name)
    if p.suffix not in (".yaml", ".yml"):
        p = Path(str(resources.files("emwb.catalog") / "rubrics" / f"{name}.yaml"))
    return p


def shipped_rubrics() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("emwb.catalog") / "rubrics").iterdir()
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
