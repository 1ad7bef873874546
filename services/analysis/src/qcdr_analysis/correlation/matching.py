"""Compiled step matchers and the index that keeps an item from being tested against every step.

Each step is filed under its cheapest discriminator: its techniques (an item looks up its own
techniques and their parents), else its categories, else exact process names (a glob without
wildcards), else an "always test" list. An item is then fully tested only against the steps filed
under something it has.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from qcdr_analysis.correlation.items import Item
from qcdr_analysis.correlation.patterns import Match, Pattern

Test = Callable[[Item], bool]


@lru_cache(maxsize=65536)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # items keep addresses as text; a batch asks about the same few destinations many times
    return ipaddress.ip_address(text)


def _globs(patterns: tuple[str, ...]) -> Callable[[str, str], bool]:
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))

    def test(path: str, name: str) -> bool:
        return bool((path and regex.match(path)) or (name and regex.match(name)))

    return test


def compile_match(match: Match) -> Test:
    """A predicate for ``match``; conditions that are not given cost nothing."""
    tests: list[Test] = []
    if match.technique:
        wanted = frozenset(match.technique)
        tests.append(lambda i: not wanted.isdisjoint(i.technique_keys()))
    if match.category:
        categories = frozenset(match.category)
        tests.append(lambda i: not categories.isdisjoint(i.categories))
    if match.source:
        sources = frozenset(match.source)
        tests.append(lambda i: i.source in sources)
    if match.process:
        process = _globs(match.process)
        tests.append(lambda i: process(i.path, i.name))
    if match.parent_process:
        parent = _globs(match.parent_process)
        tests.append(lambda i: parent(i.parent_path, i.parent_path.rpartition("/")[2]))
    if match.args_contains:
        needles = match.args_contains
        tests.append(lambda i: any(n in i.args for n in needles))
    if match.destination_port:
        ports = frozenset(match.destination_port)
        tests.append(lambda i: i.dest_port in ports)
    if match.destination_ip:
        networks = [ipaddress.ip_network(n, strict=False) for n in match.destination_ip]
        tests.append(lambda i: bool(i.dest_ip) and any(_address(i.dest_ip) in n for n in networks))
    if match.destination_domain:
        domain = _globs(match.destination_domain)
        tests.append(lambda i: domain(i.dest_domain, ""))
    if match.detector:
        detectors = frozenset(match.detector)
        tests.append(lambda i: not detectors.isdisjoint(i.detectors))
    if match.min_severity is not None:
        floor = match.min_severity.rank
        tests.append(lambda i: i.severity >= floor)
    if len(tests) == 1:
        return tests[0]
    return lambda i: all(t(i) for t in tests)


def compile_step(match: Match, negation: Match | None) -> Test:
    positive = compile_match(match)
    if negation is None or negation.is_empty():
        return positive
    negative = compile_match(negation)
    return lambda i: positive(i) and not negative(i)


@dataclass(frozen=True, slots=True)
class Target:
    pattern: int  # index into the engine's patterns
    step: int  # step index, or -1 for the pattern's ``until``
    test: Test


@dataclass(slots=True)
class StepIndex:
    by_technique: dict[str, list[Target]] = field(default_factory=dict)
    by_category: dict[str, list[Target]] = field(default_factory=dict)
    by_name: dict[str, list[Target]] = field(default_factory=dict)
    always: list[Target] = field(default_factory=list)

    def add(self, match: Match, target: Target) -> None:
        if match.technique:
            for technique in match.technique:
                self.by_technique.setdefault(technique, []).append(target)
        elif match.category:
            for category in match.category:
                self.by_category.setdefault(category, []).append(target)
        elif match.process and not any(c in p for p in match.process for c in "*?["):
            for name in match.process:
                self.by_name.setdefault(name.rpartition("/")[2], []).append(target)
        else:
            self.always.append(target)

    def candidates(self, item: Item) -> list[Target]:
        found: list[Target] = list(self.always)
        if self.by_technique and item.techniques:
            for technique in item.technique_keys():
                found.extend(self.by_technique.get(technique, ()))
        for category in item.categories:
            found.extend(self.by_category.get(category, ()))
        if item.name:
            found.extend(self.by_name.get(item.name, ()))
        if len(found) > 1:  # a step filed under two of the item's keys is tested once
            found = list({(t.pattern, t.step): t for t in found}.values())
        return found

    def discriminators(self) -> frozenset[str]:
        return frozenset(self.by_technique) | frozenset(self.by_category) | frozenset(self.by_name)


def build_index(patterns: list[Pattern]) -> StepIndex:
    index = StepIndex()
    for p, pattern in enumerate(patterns):
        for s, step in enumerate(pattern.steps):
            index.add(step, Target(p, s, compile_step(step, step.not_)))
        if pattern.until is not None:
            index.add(pattern.until, Target(p, -1, compile_match(pattern.until)))
    return index
