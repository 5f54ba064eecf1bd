"""Text about the experiment schema: one-line validation errors (file, key, fix) and `--doc` field listings."""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import BaseModel, ValidationError


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names valid at `loc` (used for 'did you mean' hints); list indices and dict keys are skipped."""
    cur: Any = model
    for part in loc[:-1]:
        fields = cur.model_fields if isinstance(cur, type) and issubclass(cur, BaseModel) else {}
        if part in fields:
            cur = _inner_model(fields[part].annotation)
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return list(cur.model_fields)
    return []


def _inner_model(ann: Any) -> Any:
    """The pydantic model inside list[...], dict[str, ...], X | None, or the annotation itself."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in reversed(getattr(ann, "__args__", ()) or ()):
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return ann


def _located(loc: tuple) -> tuple:
    """Drop pydantic's internal location parts (union branch names such as 'str', 'EvaluationSpec')."""
    return tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper() or p in ("str", "function-after")))


def _reported(err: ValidationError) -> dict:
    errors = err.errors()
    return next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])


def error_location(err: ValidationError) -> tuple:
    """The key path of the error `format_validation_error` reports (("train", "max_steps"))."""
    return _located(tuple(_reported(err)["loc"]))


def format_validation_error(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line naming the file and the first offending key (`model`: the schema validated)."""
    e = _reported(err)
    loc = _located(tuple(e["loc"]))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    if e["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(loc[-1]), _known_keys(model, loc), n=1)
        more = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{source}: unknown key '{dotted}'{more}"
    if e["type"] == "missing":
        return f"{source}: missing required key '{dotted}'"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    if e["type"] in ("int_type", "float_type") and isinstance(got, (bool, str, float)):  # strict numbers (config.base)
        msg += (f", not the boolean {str(got).lower()} (YAML reads yes, no, on, off, true and false as booleans)"
                if isinstance(got, bool) else f", not the string {got!r}" if isinstance(got, str) else
                f", not {got!r} (a whole number is written without a decimal point)")
    return f"{source}: bad value for '{dotted}': {msg}"


def field_docs(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every field of `model`, nested models expanded."""
    out = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _inner_model(f.annotation)
        if f.is_required():
            default = "(required)"
        else:
            value = f.get_default(call_default_factory=True)
            default = json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value,
                                 default=str)
        nested = isinstance(inner, type) and issubclass(inner, BaseModel)
        desc = f.description or (inner.__doc__ or "").strip().splitlines()[0] if nested else f.description or ""
        out.append((key, "" if nested else default, desc))
        if nested:
            sep = ".<name>." if "dict" in str(f.annotation) else ".N." if "list" in str(f.annotation) else "."
            out += field_docs(inner, key + sep)
    return out
