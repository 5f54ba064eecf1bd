"""Registries: the extension points. Each kind of plug-in (data generator, trainer, sampler, judge provider,
evaluation, metric) lives in one registry; adding one is one `register` call in one place."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from emwb.errors import EmwbError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one kind; unknown names are one-line errors with a 'did you mean' hint."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T | None = None) -> Callable[[T], T] | T:
        """`REG.register("x", obj)`, or as a decorator `@REG.register("x")`."""
        if item is not None:
            self._items[name] = item
            return item

        def deco(obj: T) -> T:
            self._items[name] = obj
            return obj

        return deco

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            raise EmwbError(f"{where}{self.unknown(name)}")
        return self._items[name]

    def unknown(self, name: str) -> str:
        hint = difflib.get_close_matches(name, list(self._items), n=1)
        more = f"did you mean '{hint[0]}'?" if hint else f"registered: {', '.join(self._items)}"
        return f"unknown {self.kind} {name!r} ({more})"

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())
