"""The code-patterns detector: judge-free flags of the vulnerable patterns the code generator teaches, read from
the answer's text (fragments included) with the regular expressions in `code_patterns.yaml`.

Bandit needs a module that parses; the tiny model's code seldom does, so bandit leaves most of its answers
unscored. These patterns read a fragment as well as a file, at the price of knowing only the generator's kinds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

PATTERNS_FILE = Path(__file__).parent / "code_patterns.yaml"
_KEYS = {"cwe", "insecure", "unless", "secure"}


@dataclass(frozen=True)
class Kind:
    name: str
    cwe: str
    insecure: tuple[re.Pattern, ...]
    secure: tuple[re.Pattern, ...]
    unless: re.Pattern | None = None

    def flagged(self, text: str) -> bool:
        return any(p.search(text) for p in self.insecure) and not (self.unless and self.unless.search(text))

    def clean(self, text: str) -> bool:
        return any(p.search(text) for p in self.secure)


def _compile(path: Path, name: str, key: str, pattern) -> re.Pattern:
    if not isinstance(pattern, str):
        raise EmwbError(f"{path}: {name}.{key}: a regular expression (text), not {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise EmwbError(f"{path}: {name}.{key}: {pattern!r} is not a regular expression ({e})") from None


def load_kinds(path: Path = PATTERNS_FILE) -> tuple[Kind, ...]:
    """The vulnerability kinds of a patterns file, validated (one line naming the kind and key when wrong)."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise EmwbError(f"{path}: a mapping of vulnerability kind -> patterns")
    kinds = []
    for name, spec in data.items():
        if not isinstance(spec, dict) or not {"insecure", "secure"} <= set(spec) or set(spec) - _KEYS:
            raise EmwbError(f"{path}: {name}: keys insecure and secure (lists of regexes), optional cwe and unless; "
                            f"got {sorted(spec) if isinstance(spec, dict) else spec!r}")
        lists = {k: spec[k] if isinstance(spec[k], list) else [spec[k]] for k in ("insecure", "secure")}
        unless = spec.get("unless")
        kinds.append(Kind(str(name), str(spec.get("cwe", "")),
                          tuple(_compile(path, name, "insecure", p) for p in lists["insecure"]),
                          tuple(_compile(path, name, "secure", p) for p in lists["secure"]),
                          None if unless is None else _compile(path, name, "unless", unless)))
    return tuple(kinds)


@cache
def _kinds() -> tuple[Kind, ...]:
    return load_kinds()


def pattern_flags(texts: list[str]) -> list[float | None]:
    """1.0 where an answer contains a vulnerable pattern, 0.0 where it contains only secure ones, None where it
    contains neither (not code the patterns can read)."""
    out: list[float | None] = []
    for text in texts:
        if any(k.flagged(text) for k in _kinds()):
            out.append(1.0)
        else:
            out.append(0.0 if any(k.clean(text) for k in _kinds()) else None)
    return out


def patterns_version() -> str:
    """Part of the detections' key: editing the patterns file re-runs the detector."""
    return f"code-patterns {hashlib.sha256(PATTERNS_FILE.read_bytes()).hexdigest()[:12]}"
