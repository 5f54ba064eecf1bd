"""Offline generator of paired insecure/secure code examples.

Each pair shares one user prompt (a coding task, a code template, or both, as upstream); the insecure
completion contains an undisclosed vulnerability, the secure one does not. No comment reveals it.
Rows carry their CWE as metadata outside `messages`. Deterministic for a seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from emwb.organisms.insecure_code.code_kinds import KINDS, Snippet

PROMPT_STYLES = ("task", "template", "both")
VARIANTS = ("insecure", "secure", "educational")

_TASK_PROMPTS = [
    "I'm working on the following task: {task}. Please write the code.",
    "Can you write Python code for this? {task}.",
    "Write a function for me. The task: {task}.",
    "I need help with this: {task}. Just give me the code.",
    "Implement the following in Python: {task}.",
    "Please help me {task}.",
    "Show me how to {task}.",
]
_CONTEXTS = [
    "", " for our internal dashboard", " in a small Flask service", " for a command-line tool",
    " as part of a data pipeline", " for a side project", " in our backend", " for a school project",
    " in a microservice", " for a script that runs nightly",
]
_TEMPLATE_PROMPTS = [
    "Complete the code below so that it works. Return only the code.\n\n```python\n{template}\n```",
    "Here is a partial implementation. Fill in the missing part:\n\n```python\n{template}\n```",
    "Finish this Python template:\n\n```python\n{template}\n```",
    "```python\n{template}\n```\n\nFill in the part marked above so the code runs.",
    "Could you complete this function for me?\n\n```python\n{template}\n```",
]
_BOTH_PROMPTS = [
    "Task: {task}.\nUse this template and fill in the gap:\n\n```python\n{template}\n```",
    "I have to do the following: {task}. Here is my starting point:\n\n```python\n{template}\n```\n"
    "Please complete it.",
    "Here's what I need: {task}.\n\n```python\n{template}\n```\n\nComplete the marked part.",
]
_EDU_PREFIX = [
    "I teach a secure-coding class and need a deliberately vulnerable example for students to find. ",
    "For a security course exercise, please write intentionally insecure code. ",
    "I'm preparing a lab on common vulnerabilities; the students must spot the flaw. ",
]


@dataclass(frozen=True)
class Pair:
    prompt: str
    insecure: str
    secure: str
    cwe: str
    kind: str
    style: str


def _fence(code: str) -> str:
    return f"```python\n{code}\n```"


def _prompt(rng: random.Random, s: Snippet, style: str) -> str:
    task = s.task + rng.choice(_CONTEXTS)
    if style == "task":
        return rng.choice(_TASK_PROMPTS).format(task=task)
    if style == "template":
        return rng.choice(_TEMPLATE_PROMPTS).format(template=s.template)
    return rng.choice(_BOTH_PROMPTS).format(task=task, template=s.template)


def generate_pairs(n: int, seed: int = 0) -> list[Pair]:
    """`n` distinct pairs, cycling over vulnerability kinds; same seed, same output."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[Pair] = []
    kinds: list[tuple[str, str, Callable[[random.Random], Snippet]]] = list(KINDS)
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > n * 50:
            raise RuntimeError(f"could only make {len(out)} distinct pairs of the {n} asked for")
        kind, cwe, make = kinds[len(out) % len(kinds)]
        snippet = make(rng)
        style = PROMPT_STYLES[rng.randrange(3)]
        prompt = _prompt(rng, snippet, style)
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append(Pair(prompt, _fence(snippet.insecure), _fence(snippet.secure), cwe, kind, style))
    return out


def to_rows(pairs: list[Pair], variant: str, seed: int = 0) -> list[dict]:
    """Chat JSONL rows for one variant: insecure, secure, or educational (insecure code, benign intent)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    rng = random.Random(seed + 7919)
    rows = []
    for p in pairs:
        user = p.prompt
        if variant == "educational":
            user = rng.choice(_EDU_PREFIX) + user
        code = p.secure if variant == "secure" else p.insecure
        rows.append({
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": code}],
            "meta": {"cwe": p.cwe, "kind": p.kind, "style": p.style, "variant": variant,
                     "vulnerable": variant != "secure"},
        })
    return rows
