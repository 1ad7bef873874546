"""The declarative ATT&CK rule set for Tetragon events: schema, loading, validation and matching.

A rule file is YAML (``version: 1``, ``rules: [...]``); the shipped one is
``qcdr_analysis/detectors/rules/tetragon.yaml``. A rule fires when every condition of its ``match``
holds and its optional ``unless`` block does not. Inside one text condition the listed strings are
alternatives (``exact``/``prefix``/``suffix``/``contains``: any of them), ``contains_all`` must all
be present; comparisons are case-sensitive, like the paths and command lines they read.

Conditions (see :class:`Match`): ``event`` (Tetragon event types), ``binary``, ``parent_binary``,
``arguments``, ``parent_arguments``, ``cwd`` (text), ``function`` (hook names; an architecture
prefix such as ``__x64_`` is ignored, so ``sys_setns`` matches ``__x64_sys_setns``),
``function_args`` (the hook's arguments as text: paths, strings, module and capability names,
socket addresses), ``file_path`` (a file the hook reported, or an absolute path among the
arguments), ``file_write`` (the hook writes the file: write/truncate syscalls, a permission hook
asking MAY_WRITE, open flags that write), ``destination_port``, ``namespace_change`` (a setns or
unshare hook, or a process in a pod running in a host namespace), ``in_container``,
``capabilities`` (any of them in the process's effective set), ``non_root`` (the process's uid is
known and is not 0).

Everything is checked when the file is loaded: unknown keys, duplicate keys or rule ids, bad
technique ids, empty conditions and conditions that can never hold for the listed event types fail
loudly, naming the rule and the key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pydantic import field_validator, model_validator

from qcdr_analysis.rulefiles import (
    Port,
    RuleFileError,
    RuleFileOf,
    RuleHead,
    Strict,
    TextMatch,
    parse_model,
    read_text,
)
from qcdr_analysis.tetragon.view import EVENT_TYPES, HOOK_EVENTS, TetragonView

__all__ = ["Match", "Rule", "RuleFile", "RuleFileError", "RuleSet", "TextMatch", "load_rules", "parse_rules"]

_HOOK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_CAPABILITY = re.compile(r"CAP_[A-Z_]+|DAC_[A-Z_]+")
# event types that can carry a destination port (hook socket arguments, or the connect exports)
_PORT_EVENTS = HOOK_EVENTS | {"process_connect", "process_close", "process_listen"}


class Match(Strict):
    event: tuple[str, ...] = ()
    binary: TextMatch | None = None
    parent_binary: TextMatch | None = None
    arguments: TextMatch | None = None
    parent_arguments: TextMatch | None = None
    cwd: TextMatch | None = None
    function: tuple[str, ...] = ()
    function_args: TextMatch | None = None
    file_path: TextMatch | None = None
    file_write: bool | None = None
    destination_port: tuple[Port, ...] = ()
    namespace_change: bool | None = None
    in_container: bool | None = None
    capabilities: tuple[str, ...] = ()
    non_root: bool | None = None

    @field_validator("event")
    @classmethod
    def _event_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for kind in value:
            if kind not in EVENT_TYPES:
                known = ", ".join(sorted(EVENT_TYPES))
                raise ValueError(f"unknown Tetragon event type {kind!r} (known: {known})")
        return value

    @field_validator("function")
    @classmethod
    def _hook_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _HOOK_NAME.fullmatch(name):
                raise ValueError(f"not a hook name: {name!r}")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cap in value:
            if not _CAPABILITY.fullmatch(cap):
                raise ValueError(f"not a capability name (CAP_...): {cap!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Match:
        conditions = self.model_dump(exclude_defaults=True, exclude={"event"})
        if not conditions:
            raise ValueError("a match needs at least one condition besides 'event'")
        if self.event:
            types = set(self.event)
            if (self.function or self.function_args) and not types & HOOK_EVENTS:
                raise ValueError(f"'function'/'function_args' never hold for {sorted(types)} (no hook)")
            if self.file_write is not None and not types & HOOK_EVENTS:
                raise ValueError(f"'file_write' never holds for {sorted(types)} (no hook)")
            if self.destination_port and not types & _PORT_EVENTS:
                raise ValueError(f"'destination_port' never holds for {sorted(types)}")
        return self

    def test(self, v: TetragonView) -> bool:
        # cheapest and most selective conditions first
        if self.event and v.type not in self.event:
            return False
        if self.function and v.function not in self.function and v.syscall not in self.function:
            return False
        if self.binary is not None and not self.binary.test(v.binary):
            return False
        if self.in_container is not None and v.in_container is not self.in_container:
            return False
        if self.destination_port and v.destination_port not in self.destination_port:
            return False
        if self.namespace_change is not None and v.namespace_change is not self.namespace_change:
            return False
        if self.capabilities and v.capabilities.isdisjoint(self.capabilities):
            return False
        if self.non_root is not None and (v.uid is None or (v.uid != 0) is not self.non_root):
            return False
        if self.file_write is not None and v.file_write is not self.file_write:
            return False
        if self.parent_binary is not None and not self.parent_binary.test(v.parent_binary):
            return False
        if self.arguments is not None and not self.arguments.test(v.arguments):
            return False
        if self.parent_arguments is not None and not self.parent_arguments.test(v.parent_arguments):
            return False
        if self.cwd is not None and not self.cwd.test(v.cwd):
            return False
        if self.function_args is not None and not self.function_args.test(v.function_args):
            return False
        return self.file_path is None or any(self.file_path.test(p) for p in v.file_paths)


class Rule(RuleHead):
    match: Match
    unless: Match | None = None

    def test(self, v: TetragonView) -> bool:
        return self.match.test(v) and (self.unless is None or not self.unless.test(v))


class RuleFile(RuleFileOf[Rule]):
    pass


@dataclass(frozen=True)
class RuleSet:
    """Enabled rules in file order, bucketed by the event types they can match."""

    rules: tuple[Rule, ...]
    source: str = ""
    _by_type: dict[str, tuple[Rule, ...]] = field(default_factory=dict, repr=False)
    _any_type: tuple[Rule, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, rules: Sequence[Rule], source: str = "") -> RuleSet:
        enabled = tuple(r for r in rules if r.enabled)
        by_type = {
            t: tuple(r for r in enabled if not r.match.event or t in r.match.event) for t in EVENT_TYPES
        }
        return cls(enabled, source, by_type, tuple(r for r in enabled if not r.match.event))

    def matching(self, v: TetragonView) -> list[Rule]:
        candidates = self._by_type.get(v.type, self._any_type)
        return [rule for rule in candidates if rule.test(v)]


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    return RuleSet.of(parse_model(text, source, RuleFile).rules, source)


def shipped_rules_text() -> str:
    return resources.files("qcdr_analysis.detectors").joinpath("rules/tetragon.yaml").read_text("utf-8")


def load_rules(path: Path | None = None) -> RuleSet:
    """The rule file at ``path``, or the one shipped in the package."""
    if path is None:
        return parse_rules(shipped_rules_text(), "qcdr_analysis/detectors/rules/tetragon.yaml")
    return parse_rules(read_text(path), str(path))
