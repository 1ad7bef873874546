"""How violation messages name containers, volumes and values (one style for every check)."""

from __future__ import annotations

from collections.abc import Iterable


def quoted(items: Iterable[object]) -> str:
    """``"a", "b"`` (in the given order)."""
    return ", ".join(f'"{item}"' for item in items)


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


def containers(names: list[str]) -> str:
    """``container "a"`` or ``containers "a", "b"``."""
    return f"{plural(len(names), 'container', 'containers')} {quoted(names)}"


def setters(pod: bool, names: list[str]) -> str:
    """Who set a field: ``pod``, ``container "a"``, ``pod and containers "a", "b"``."""
    parts = ["pod"] if pod else []
    if names:
        parts.append(containers(names))
    return " and ".join(parts)


def sorted_unique(values: Iterable[str]) -> list[str]:
    return sorted(set(values))
