"""A typed registry: extensions register themselves by dropping one module into a package.

Duplicate names fail at import time, so two files can never silently shadow each other.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Generic, TypeVar

T = TypeVar("T")


class DuplicateRegistrationError(ValueError):
    """Two extensions claimed the same name."""


class Registry(Generic[T]):
    """Named items of one kind, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}

    def add(self, name: str, item: T, origin: str = "") -> T:
        if name in self._items:
            raise DuplicateRegistrationError(
                f"{self.kind} {name!r} registered twice ({self._origin[name]} and {origin})"
            )
        self._items[name] = item
        self._origin[name] = origin
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@registry.register("name")``."""

        def decorate(item: T) -> T:
            return self.add(name, item, getattr(item, "__module__", ""))

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r} (known: {known})") from None

    def origin(self, name: str) -> str:
        return self._origin[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[T]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def import_submodules(package: ModuleType) -> list[ModuleType]:
    """Import every module of ``package`` (not recursively) so that each registers itself."""
    modules = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return modules
