"""A strict name → object registry: exact names, duplicates raise, unknown names list the known ones."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from edgevlm.errors import EdgeVLMError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise EdgeVLMError(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
