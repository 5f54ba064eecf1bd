"""Registries: the extension points. Each kind of plug-in (data source, data generator, trainer, sampler, judge
provider, detector, evaluation, prompt generator, metric, report section) lives in one registry; adding one is
one `register` call, in emwb or in a plug-in package (`emwb.plugins`). A name can be registered once."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from emwb.errors import EmwbError

T = TypeVar("T")


def _caller() -> str:
    """The module that called `register` (past this module and emwb's own register_* helpers)."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_globals.get("__name__") == __name__ or (
            frame.f_code.co_name.startswith("register_") and frame.f_globals.get("__name__", "").startswith("emwb."))):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "?") if frame is not None else "?"


class Registry(Generic[T]):
    """Named plug-ins of one kind; unknown names are one-line errors with a 'did you mean' hint. Plug-ins
    (`emwb.plugins` entry points) are loaded before the first lookup."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._by: dict[str, str] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """`REG.register("x", obj)`, or as a decorator `@REG.register("x")`; a taken name is an error."""
        if item is not None:
            return self._add(name, item, _caller())
        by = _caller()
        return lambda obj: self._add(name, obj, by)

    def _add(self, name: str, item: T, by: str) -> T:
        if name in self._items and self._items[name] is not item:
            raise EmwbError(f"{self.kind} {name!r} is registered twice: by {self._by[name]} and by {by}; "
                            "rename one")
        self._items[name], self._by[name] = item, by
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)
        self._by.pop(name, None)

    def _all(self) -> dict[str, T]:
        from emwb.plugins import load_plugins

        load_plugins()
        return self._items

    def get(self, name: str, where: str = "") -> T:
        if name not in self._all():
            raise EmwbError(f"{where}{self.unknown(name)}")
        return self._items[name]

    def registered_by(self, name: str) -> str:
        """The module that registered `name`."""
        self._all()
        return self._by[name]

    def unknown(self, name: str) -> str:
        hint = difflib.get_close_matches(name, list(self._all()), n=1)
        more = f"did you mean '{hint[0]}'?" if hint else f"registered: {', '.join(self._items)}"
        return f"unknown {self.kind} {name!r} ({more})"

    def names(self) -> list[str]:
        return list(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all()))

    def values(self) -> list[T]:
        return list(self._all().values())
