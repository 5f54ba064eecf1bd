"""Rule-based detectors: judge-free scores of answers (1.0 = the behaviour is there, 0.0 = not, None = not
applicable, e.g. no code in the answer). Registered by name; an evaluation lists the detectors it wants.

Add one with `DETECTORS.register(name, Detector(...))`; its `score` gets every answer at once (rows with
`answer` and the question's `bias_id`, when its evaluation set has one). The organisms register their own
(`emwb.organisms.<name>`).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from emwb.registry import Registry


@dataclass(frozen=True)
class Detector:
    score: Callable[[list[dict]], list[float | None]]
    version: Callable[[], str]   # part of the detections' key: a new tool version re-runs the detector
    description: str
    role: str = "narrow"
    judged_by: tuple[str, str] | None = None  # (rubric, analysis threshold): the judge verdict it is compared with
    describe: Callable[[list[dict]], list[str]] | None = None  # per answer, the kind of rule that reads it (the
    # labelling sheet groups precision and recall by it: `emwb labels`)


DETECTORS: Registry[Detector] = Registry("detector")

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
_CODE_NODES = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
               ast.With, ast.For, ast.While, ast.If, ast.Try)


def extract_code(text: str) -> str | None:
    """The Python code in an answer: its fenced blocks joined, else the whole text if it parses as code
    with at least one statement (an import, a def, an assignment, ...); None when there is no code."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if blocks:
        return "\n\n".join(blocks)
    try:
        with warnings.catch_warnings():  # answers' odd escape sequences are not our warnings
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    return text if any(isinstance(n, _CODE_NODES) for n in tree.body) else None
