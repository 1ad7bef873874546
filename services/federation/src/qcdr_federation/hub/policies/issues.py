"""Why a federated policy is refused: one :class:`Issue` per problem, where (a path in the
request body's spec) and what; :class:`PolicySpecError` carries them (a 422 at the API, a
``Ready=False`` condition for the CRD controller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    loc: tuple[str | int, ...]
    msg: str

    def __str__(self) -> str:
        where = ".".join(str(p) for p in self.loc) or "spec"
        return f"{where}: {self.msg}"


class PolicySpecError(ValueError):
    """A template, placement or override the hub refuses (answered 422 with every issue)."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        if not issues:
            raise ValueError("a PolicySpecError needs at least one issue")
        self.issues = tuple(issues)
        first = str(self.issues[0])
        more = len(self.issues) - 1
        super().__init__(first if more == 0 else f"{first} (and {more} more)")
