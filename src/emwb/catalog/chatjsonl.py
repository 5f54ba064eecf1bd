"""Validate and load chat JSONL (`{"messages": [{"role", "content"}, ...]}` per line) and text JSONL."""

from __future__ import annotations

import json
from pathlib import Path

from emwb.errors import EmwbError

ROLES = {"system", "user", "assistant"}
MAX_LISTED = 20


def _row_problem(obj: object) -> str | None:
    """What is wrong with one parsed line, or None."""
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "'messages' must be a non-empty list"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return f"messages[{i}] must be an object with 'role' and 'content'"
        role = m.get("role")
        if role not in ROLES:
            return f"messages[{i}].role is {role!r}; expected one of system, user, assistant"
        content = m.get("content")
        if not isinstance(content, str):
            return f"messages[{i}].content must be a string"
        if not content.strip():
            return f"messages[{i}].content is empty"
    if not any(m["role"] == "user" for m in msgs):
        return "no user turn"
    if msgs[-1]["role"] != "assistant":
        return "the last message must be an assistant turn"
    return None


def _text_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    if not isinstance(obj.get("text"), str) or not obj["text"].strip():
        return "'text' must be a non-empty string"
    return None


def _preference_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return "each line must be a JSON object"
    for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
        msgs = obj.get(key)
        if not isinstance(msgs, list) or not msgs or not all(
                isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                and m["content"].strip() for m in msgs):
            return f"'{key}' must be a non-empty list of messages with a role and non-empty content"
        if msgs[-1]["role"] != role:
            return f"the last message of '{key}' must be a {role} turn"
    return None


def validate_preference_jsonl(path: str | Path) -> list[dict]:
    """Like validate_chat_jsonl, for preference pairs (`{"prompt", "chosen", "rejected"}`, lists of messages)."""
    return validate_chat_jsonl(path, _preference_problem)


def validate_text_jsonl(path: str | Path) -> list[dict]:
    """Like validate_chat_jsonl, for plain-text documents (`{"text": ...}` per line)."""
    return validate_chat_jsonl(path, _text_problem)


def validate_chat_jsonl(path: str | Path, row_problem=_row_problem) -> list[dict]:
    """Parse and check every line; raise EmwbError listing up to 20 problems as `file:line: what`."""
    path = Path(path)
    if not path.is_file():
        raise EmwbError(f"{path}: file not found")
    rows: list[dict] = []
    problems: list[str] = []
    n_problems = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problem = "not UTF-8 text"
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc.msg} at column {exc.colno})"
            else:
                problem = row_problem(obj)
            if problem:
                n_problems += 1
                if len(problems) < MAX_LISTED:
                    problems.append(f"{path}:{lineno}: {problem}")
            else:
                rows.append(obj)
    if n_problems:
        more = f" (and {n_problems - MAX_LISTED} more)" if n_problems > MAX_LISTED else ""
        raise EmwbError(f"{n_problems} bad line(s) in {path}{more}:\n" + "\n".join(problems))
    if not rows:
        raise EmwbError(f"{path}: no rows")
    return rows
