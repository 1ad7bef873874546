"""What every declarative rule file of the analysis shares: strict models, text conditions,
YAML that refuses duplicate keys, and errors that name the file, the rule and the key."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from qcdr_common.config_files import ConfigFileError, parse_yaml, read_config_text
from qcdr_common.contracts.events.v1 import NetworkDestination, ProcessInfo, SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding, FindingKind

TECHNIQUE = re.compile(r"T\d{4}(?:\.\d{3})?")
M = TypeVar("M", bound=BaseModel)


class RuleFileError(ValueError):
    """The rule file cannot be used; the message names the file, the rule and the key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_empty(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    if any(not v for v in values):
        raise ValueError(f"{what} strings must not be empty")
    return values


class TextMatch(Strict):
    exact: tuple[str, ...] = ()
    prefix: tuple[str, ...] = ()
    suffix: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    contains_all: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> TextMatch:
        if not (self.exact or self.prefix or self.suffix or self.contains or self.contains_all):
            raise ValueError("needs at least one of exact, prefix, suffix, contains, contains_all")
        for name in ("exact", "prefix", "suffix", "contains", "contains_all"):
            _non_empty(getattr(self, name), name)
        return self

    def test(self, value: str) -> bool:
        if self.contains_all and not all(s in value for s in self.contains_all):
            return False
        if not (self.exact or self.prefix or self.suffix or self.contains):
            return True
        return (
            value in self.exact
            or value.startswith(self.prefix)
            or value.endswith(self.suffix)
            or any(s in value for s in self.contains)
        )


class RuleHead(Strict):
    """What a rule of any file says besides its conditions: what it is and what it means."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,79}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{1,99}$")
    severity: Severity
    techniques: tuple[str, ...] = Field(min_length=1)
    enabled: bool = True

    @field_validator("techniques")
    @classmethod
    def _techniques(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for technique in value:
            if not TECHNIQUE.fullmatch(technique):
                raise ValueError(f"not a MITRE ATT&CK technique id: {technique!r}")
        return value


R = TypeVar("R", bound=RuleHead)
# a destination port in a condition
Port = Annotated[int, Field(ge=1, le=65535)]


class RuleFileOf(Strict, Generic[R]):
    """``version: 1`` and at least one rule, ids unique."""

    version: Literal[1]
    rules: list[R] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleFileOf[R]:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def rules_finding(
    detector: str,
    event: SecurityEvent,
    matched: Sequence[RuleHead],
    *,
    what: str,
    attributes: dict[str, Any],
    process: ProcessInfo | None,
    network: NetworkDestination | None,
) -> Finding:
    """One finding for the rules an event matched: the most severe rule (the first on a tie) names
    it and gives its category, the techniques of all of them and the event's own are kept, and
    ``attributes["rules"]`` lists every rule id. ``what`` says what happened (a command, a request)."""
    from qcdr_analysis.detectors import finding_id  # the detectors package imports this module

    primary = max(matched, key=lambda rule: rule.severity.rank)  # max keeps the first on a tie
    return Finding(
        id=finding_id(detector, (event,)),
        kind=FindingKind.ATTACK_TECHNIQUE,
        detector=detector,
        category=primary.category,
        severity=primary.severity,
        techniques=tuple(sorted({t for rule in matched for t in rule.techniques} | set(event.techniques))),
        title=primary.title,
        explanation=f"{what}: " + "; ".join(f"{r.id} ({r.title})" for r in matched),
        event_time=event.event_time,
        evidence_event_ids=(event.id,),
        workload=event.workload,
        process=process,
        network=network,
        source=event.source,
        attributes={"rules": [rule.id for rule in matched], **attributes},
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (the last one would silently win)."""


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # ``? [a, b]``, ``{a: 1}: x``: what SafeLoader says of it
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            )
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _where(loc: Sequence[int | str], data: Any) -> str:
    """``rules[3] (nsenter-host).match.binary`` from a pydantic error location."""
    parts: list[str] = []
    node = data
    for item in loc:
        child: Any = None
        if isinstance(item, int):
            rule_id = None
            if isinstance(node, list) and 0 <= item < len(node):
                child = node[item]
                rule_id = child.get("id") if isinstance(child, dict) and len(parts) == 1 else None
            parts.append(f"[{item}]" + (f" ({rule_id})" if rule_id else ""))
        else:
            if isinstance(node, dict):
                child = node.get(item)
            parts.append(f".{item}" if parts else item)
        node = child
    return "".join(parts)


def parse_model(text: str, source: str, model: type[M]) -> M:
    """``text`` (YAML) validated as ``model``; :class:`RuleFileError` names what is wrong and where."""
    try:
        data = parse_yaml(text, source, _UniqueKeyLoader)
    except ConfigFileError as exc:
        raise RuleFileError(str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_where(err['loc'], data) or '<top>'}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise RuleFileError(f"{source}: {problems}") from None


def read_text(path: Path) -> str:
    try:
        return read_config_text(path)
    except ConfigFileError as exc:
        raise RuleFileError(str(exc)) from None
