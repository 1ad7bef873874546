"""Attack-chain patterns: declarative YAML, validated strictly, loaded once.

A pattern is an ordered list of steps joined on one key within ``maxspan`` (EQL's ``sequence by
<key> with maxspan=<d> [...] [...] until [...]``). Built-ins ship as ``correlation/patterns/*.yaml``;
users add files from a directory. One file holds one pattern or a ``patterns:`` list. Every error
names the file, the pattern and the field. ``maxspan`` and ``lateness`` (``30s``, ``15m``, ``2h``,
``1d`` or ISO 8601) are 30 days at most.

Matching (:class:`Match`): every condition given must hold; inside one condition the values are
alternatives. ``technique: T1059`` matches ``T1059`` and every sub-technique (``T1059.004``);
``technique: T1059.004`` matches only itself. ``process``/``parent_process`` are globs tried on
the full path and on the basename. ``detector`` names the detectors whose findings are on the
item (``intel_match``, ``domain_intel``, ``attack_rules``, ``source``, ...): it tells a
destination threat intel lists from one a heuristic rule merely suspects, when both use the same
category. ``not`` is a second match that must *not* hold.

``distinct_clusters: true`` makes a pattern cross-cluster: a step advances a partial chain only
with an item from a cluster (``workload.cluster``) none of its earlier steps came from, and an
item without a cluster takes no part in it. Joined on ``image`` or ``ioc`` (the keys that mean the
same thing in every cluster), it finds one image or one indicator attacked in several clusters,
from the events spokes forward to a federation hub.

Options added after the first release (``detector``, ``distinct_clusters``) are left out of a
pattern's dump while unset, so the digest that identifies a pattern's checkpointed state does not
change for patterns that do not use them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import timedelta
from enum import StrEnum
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from qcdr_common.config_files import ConfigFileError, parse_yaml, read_config_text
from qcdr_common.contracts.events.v1 import Severity

from qcdr_analysis import attack


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int) else value


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
# the longest ``maxspan`` or ``lateness`` (the longest built-in chain spans 24 h): a partial chain
# is kept, and an item held, that long; far beyond, a timedelta or the expiry date overflows
MAX_DURATION = timedelta(days=30)


def _too_long(field: str | None) -> ValueError:
    return ValueError(f"{field} must be at most {MAX_DURATION.days} days")


def _duration(value: Any, info: ValidationInfo) -> Any:
    """``30s``, ``15m``, ``2h``, ``1d`` (EQL/Sigma style) besides what pydantic takes."""
    if isinstance(value, str) and (found := _DURATION.match(value)):
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
        if seconds > MAX_DURATION.total_seconds():  # checked first: timedelta() may overflow
            raise _too_long(info.field_name)
        return timedelta(seconds=seconds)
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
Alternatives = Annotated[tuple[str, ...], BeforeValidator(_as_list)]
Ports = Annotated[tuple[int, ...], BeforeValidator(_as_list)]


class JoinKey(StrEnum):
    POD = "pod"  # cluster/namespace/pod
    CONTAINER = "container"  # container id (else cluster/namespace/pod/container)
    EXEC = "exec"  # Tetragon process ancestry: exec_id, parent_exec_id, ancestors
    IMAGE = "image"  # image digest
    WORKLOAD = "workload"  # cluster/namespace/owner kind/owner name
    NODE = "node"  # cluster + Tetragon node_name: where an escaped attacker keeps acting
    CLUSTER = "cluster"
    IOC = "ioc"  # destination domain or IP, across clusters
    # an address: the first step's destination, then the later steps' workload at that address
    # (its own address, seen on its connections or DNS flows): lateral movement into it
    PEER = "peer"


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Alternatives = ()
    technique: Alternatives = ()
    source: Alternatives = ()
    process: Alternatives = ()  # glob on path or name
    parent_process: Alternatives = ()
    args_contains: Alternatives = ()
    destination_port: Ports = ()
    destination_ip: Alternatives = ()  # addresses or CIDRs
    destination_domain: Alternatives = ()  # globs
    min_severity: Severity | None = None
    # detectors whose findings were merged into the item; unset: left out of dumps (see above)
    detector: Alternatives = Field(default=(), exclude_if=lambda value: not value)

    @field_validator("technique")
    @classmethod
    def _known_techniques(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for technique in value:
            found = attack.technique(technique)
            if found is None:
                raise ValueError(f"{technique} is not an ATT&CK v{attack.table().version} technique")
            if not found.current:
                raise ValueError(f"{technique} ({found.name}) is revoked or deprecated in ATT&CK")
        return value

    @field_validator("destination_ip")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    @field_validator("destination_port")
    @classmethod
    def _ports(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= port <= 65535 for port in value):
            raise ValueError("ports are 0..65535")
        return value

    def is_empty(self) -> bool:
        return not any(getattr(self, name) for name in Match.model_fields)


class Step(Match):
    name: str = Field(min_length=1, max_length=80)
    not_: Match | None = Field(default=None, alias="not")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_]{1,62}$")
    title: str = ""
    description: str = Field(min_length=1)
    severity: Severity
    maxspan: Duration
    join: JoinKey
    lateness: Duration = timedelta(seconds=30)
    steps: tuple[Step, ...] = Field(min_length=2, max_length=16)
    until: Match | None = None
    # every step from a cluster none of the earlier steps came from (see the module docstring)
    distinct_clusters: bool = Field(default=False, exclude_if=lambda value: not value)
    checked_against: tuple[str, ...] = ()  # the real traces the pattern was checked on

    @field_validator("maxspan")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("maxspan must be positive")
        return value

    @field_validator("maxspan", "lateness")
    @classmethod
    def _bounded(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        if value > MAX_DURATION:
            raise _too_long(info.field_name)
        return value

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[Step, ...]) -> tuple[Step, ...]:
        names = [step.name for step in value]
        if len(set(names)) != len(names):
            raise ValueError(f"step names repeat: {names}")
        for step in value:
            if step.is_empty():
                raise ValueError(f"step {step.name!r} matches everything: give it a condition")
        return value

    @property
    def techniques(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for step in self.steps for t in step.technique))


class PatternError(ValueError):
    """A pattern file that cannot be used; the message names the file and the field."""


def _errors(source: str, error: ValidationError, prefix: str) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        parts.append(f"{where}: {item['msg']}")
    return f"{source}: " + "; ".join(parts)


def parse(text: str, source: str) -> list[Pattern]:
    try:
        data = parse_yaml(text, source)
    except ConfigFileError as exc:
        raise PatternError(str(exc)) from None
    if isinstance(data, dict) and set(data) == {"patterns"}:
        items = data["patterns"]
        if not isinstance(items, list):
            raise PatternError(f"{source}: patterns: expected a list")
        prefixes = [f"patterns[{i}]" for i in range(len(items))]
    elif isinstance(data, dict):
        items, prefixes = [data], [""]
    else:
        raise PatternError(f"{source}: expected a pattern (a mapping) or {{patterns: [...]}}")
    patterns = []
    for item, prefix in zip(items, prefixes, strict=True):
        try:
            patterns.append(Pattern.model_validate(item))
        except ValidationError as exc:
            name = item.get("name") if isinstance(item, dict) else None
            label = f"{prefix}({name})" if name and prefix else (str(name) if name else prefix)
            raise PatternError(_errors(source, exc, label)) from exc
    return patterns


def builtin_patterns() -> list[Pattern]:
    folder = files(__package__).joinpath("patterns")
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            found.extend(parse(entry.read_text("utf-8"), f"builtin:{entry.name}"))
    return found


def _read(path: Path) -> str:
    # PatternError is what start-up turns into one line naming the file; these were not one
    try:
        return read_config_text(path)
    except ConfigFileError as exc:
        raise PatternError(str(exc)) from None


def load_patterns(user_dir: Path | None = None, *, builtins: bool = True) -> list[Pattern]:
    """Built-ins, then every ``*.yaml``/``*.yml`` in ``user_dir``; a name used twice is an error."""
    patterns = builtin_patterns() if builtins else []
    if user_dir is not None:
        if not user_dir.is_dir():
            raise PatternError(f"{user_dir}: pattern directory not found")
        for path in sorted([*user_dir.glob("*.yaml"), *user_dir.glob("*.yml")]):
            patterns.extend(parse(_read(path), str(path)))
    _unique(patterns)
    return patterns


def _unique(patterns: Iterable[Pattern]) -> None:
    seen: set[str] = set()
    for pattern in patterns:
        if pattern.name in seen:
            raise PatternError(f"pattern {pattern.name!r} is defined twice")
        seen.add(pattern.name)
