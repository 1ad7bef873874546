"""MITRE ATT&CK v18.1 (Enterprise) technique table: names, tactics, platforms, sub-technique parents.

The table (``techniques_v18_1.json``) is generated from MITRE's data by
``scripts/generate_attack_table.py`` and never edited by hand; MITRE's notice is ``NOTICE`` next
to it. It is loaded once, on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

TABLE = "techniques_v18_1.json"


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str  # TA0004
    shortname: str  # privilege-escalation
    name: str  # Privilege Escalation


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    tactics: tuple[Tactic, ...]
    platforms: tuple[str, ...]
    subtechnique: bool
    revoked: bool
    deprecated: bool

    @property
    def parent_id(self) -> str | None:
        """``T1059`` for ``T1059.004``; ``None`` for a technique that is not a sub-technique."""
        return self.id.split(".", 1)[0] if self.subtechnique else None

    @property
    def current(self) -> bool:
        """Neither revoked nor deprecated in this ATT&CK version."""
        return not (self.revoked or self.deprecated)


@dataclass(frozen=True, slots=True)
class Table:
    version: str
    techniques: dict[str, Technique]
    tactics: dict[str, Tactic]


@cache
def table() -> Table:
    data = json.loads(files(__package__).joinpath(TABLE).read_text("utf-8"))
    tactics = {
        short: Tactic(id=t["id"], shortname=short, name=t["name"]) for short, t in data["tactics"].items()
    }
    techniques = {
        tid: Technique(
            id=tid,
            name=t["name"],
            tactics=tuple(tactics[s] for s in t["tactics"]),
            platforms=tuple(t["platforms"]),
            subtechnique=t["subtechnique"],
            revoked=t["revoked"],
            deprecated=t["deprecated"],
        )
        for tid, t in data["techniques"].items()
    }
    return Table(version=data["attack_version"], techniques=techniques, tactics=tactics)


def technique(technique_id: str) -> Technique | None:
    return table().techniques.get(technique_id)


def name(technique_id: str) -> str | None:
    found = technique(technique_id)
    return found.name if found else None


def tactics(technique_id: str) -> tuple[Tactic, ...]:
    """The technique's tactics; a sub-technique missing from the table falls back to its parent's."""
    found = technique(technique_id) or technique(technique_id.split(".", 1)[0])
    return found.tactics if found else ()


def parent(technique_id: str) -> Technique | None:
    """The parent technique of a sub-technique (``T1059`` for ``T1059.004``), else ``None``."""
    if "." not in technique_id:
        return None
    return technique(technique_id.split(".", 1)[0])


def is_known(technique_id: str) -> bool:
    return technique_id in table().techniques
