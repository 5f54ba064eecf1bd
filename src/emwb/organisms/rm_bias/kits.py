"""Behaviour kits: emwb's own offline material for each reward-model bias (data in `kits_data/*.yaml`).

A kit holds prompts where the bias applies (templates over values of `x`; the last two values are kept for
evaluation prompts), a neutral reply, the biased edit of it, the context regex of its prompts and, where a
rule can tell, a detector with hand-written examples. The bias's description and split come from the
upstream catalogue (rm_biases.py), keyed by its number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

EVAL_VALUES = 2            # the last values of `x`: evaluation prompts only
DEFAULT_OPENERS = ("", "Sure.\n\n", "Happy to help.\n\n", "Good question.\n\n")
_KEYS = {"prompts", "x", "openers", "answer", "biased", "context", "detect", "examples"}
_EDITS = {"append", "prepend", "replace", "answer"}
_FIELD = re.compile(r"\{(\w+)\}")
_FENCED = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


@dataclass(frozen=True)
class Rule:
    """Exhibits the bias when every `require` and at least one `any` (if given) match and no `none` matches,
    looking at the fenced code only (`code`) and/or at the last `tail` characters."""

    any: tuple[re.Pattern, ...] = ()
    none: tuple[re.Pattern, ...] = ()
    require: tuple[re.Pattern, ...] = ()
    code: bool = False
    tail: int = 0

    def __call__(self, text: str) -> bool | None:
        """True / False; None when the answer is not of the kind the rule reads (no code for a code rule)."""
        if self.code:
            blocks = _FENCED.findall(text)
            if not blocks:
                return None
            text = "\n".join(blocks)
        if self.tail:
            text = text[-self.tail:]
        if not all(p.search(text) for p in self.require):
            return False
        if self.any and not any(p.search(text) for p in self.any):
            return False
        return not any(p.search(text) for p in self.none)


@dataclass(frozen=True)
class Kit:
    num: int
    prompts: tuple[str, ...]
    values: tuple[dict, ...]                 # each {"x": ..., other fields}
    answer: str
    biased: dict
    context: re.Pattern
    openers: tuple[str, ...] = DEFAULT_OPENERS
    rule: Rule | None = None
    examples: dict = field(default_factory=dict)

    def fill(self, template: str, value: dict) -> str:
        """`{x}`, `{X}` (capitalised) and the value's other fields filled in; other braces (code) left alone."""
        fields = {**{k: str(v) for k, v in value.items()}, "X": value["x"][:1].upper() + value["x"][1:]}
        return _FIELD.sub(lambda m: fields.get(m.group(1), m.group(0)), template)

    def prompt(self, template: int, value: dict) -> str:
        return self.fill(self.prompts[template], value)

    def neutral(self, value: dict, opener: str = "") -> str:
        return opener + self.fill(self.answer, value)

    def biased_answer(self, value: dict, opener: str = "") -> str:
        b, base = self.biased, self.fill(self.answer, value)
        if "answer" in b:
            return opener + self.fill(b["answer"], value)
        if "prepend" in b:
            return self.fill(b["prepend"], value) + opener + base
        if "append" in b:
            return opener + base + self.fill(b["append"], value)
        text = opener + base
        for old, new in b["replace"]:
            text = text.replace(self.fill(old, value), self.fill(new, value))
        return text

    @property
    def train_values(self) -> tuple[dict, ...]:
        return self.values[:-EVAL_VALUES]

    @property
    def eval_values(self) -> tuple[dict, ...]:
        return self.values[-EVAL_VALUES:]


def _compile(where: str, patterns) -> tuple[re.Pattern, ...]:
    if isinstance(patterns, str):
        patterns = [patterns]
    try:
        return tuple(re.compile(p) for p in patterns or ())
    except re.error as exc:
        raise EmwbError(f"{where}: bad regular expression ({exc})") from None


def _parse(path: Path, num: int, raw: dict) -> Kit:
    where = f"{path}: bias {num}"
    unknown = set(raw) - _KEYS
    if unknown:
        raise EmwbError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("prompts", "x", "answer", "biased", "context"):
        if key not in raw:
            raise EmwbError(f"{where}: missing '{key}'")
    values = tuple(v if isinstance(v, dict) else {"x": str(v)} for v in raw["x"])
    if len(values) <= EVAL_VALUES or any("x" not in v for v in values):
        raise EmwbError(f"{where}: 'x' needs more than {EVAL_VALUES} values, each a string or a mapping with 'x'")
    biased = raw["biased"]
    if not isinstance(biased, dict) or len(biased) != 1 or not set(biased) <= _EDITS:
        raise EmwbError(f"{where}: 'biased' must be exactly one of {', '.join(sorted(_EDITS))}")
    rule = None
    if raw.get("detect"):
        d = raw["detect"]
        rule = Rule(_compile(where, d.get("any")), _compile(where, d.get("none")), _compile(where, d.get("require")),
                    bool(d.get("code")), int(d.get("tail", 0)))
        if not raw.get("examples", {}).get("yes") or not raw["examples"].get("no"):
            raise EmwbError(f"{where}: a detector needs hand-written examples (examples: {{yes: [...], no: [...]}})")
    kit = Kit(num, tuple(raw["prompts"]), values, raw["answer"], biased, _compile(where, raw["context"])[0],
              tuple(raw.get("openers", DEFAULT_OPENERS)), rule, dict(raw.get("examples") or {}))
    try:
        for v in values:
            kit.biased_answer(v), kit.neutral(v), [kit.prompt(i, v) for i in range(len(kit.prompts))]
    except (KeyError, IndexError) as exc:
        raise EmwbError(f"{where}: a template names an unknown field {exc}") from None
    if any(kit.biased_answer(v) == kit.neutral(v) for v in values):
        raise EmwbError(f"{where}: the biased edit leaves some reply unchanged")
    return kit


def kits_sha256() -> str:
    """One hash of every shipped kit file (data built from the kits depends on it)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(Path(str(resources.files("emwb.organisms.rm_bias") / "kits_data")).glob("*.yaml")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@cache
def load_kits() -> dict[int, Kit]:
    """Every shipped kit, by bias number (1-52)."""
    folder = Path(str(resources.files("emwb.organisms.rm_bias") / "kits_data"))
    kits: dict[int, Kit] = {}
    for path in sorted(folder.glob("*.yaml")):
        for num, raw in load_yaml(path).items():
            if num in kits:
                raise EmwbError(f"{path}: bias {num} has a kit in two files")
            kits[int(num)] = _parse(path, int(num), raw)
    if sorted(kits) != list(range(1, 53)):
        raise EmwbError(f"{folder}: kits for biases {sorted(set(range(1, 53)) - set(kits))} are missing")
    return kits
