"""The declarative ATT&CK rule set for HTTP requests pods make (``http_request`` events).

A rule file is YAML (``version: 1``, ``rules: [...]``); the shipped one is
``qcdr_analysis/detectors/rules/http.yaml``. As in the Tetragon rule file, a rule fires when every
condition of its ``match`` holds and its optional ``unless`` does not, and inside one condition the
listed values are alternatives.

Conditions (see :class:`Match`): ``method`` (upper case), ``host`` (the URL's host name, lower
case), ``path`` (the URL's path, without the query string, case-sensitive), ``destination`` (CIDRs
the server's address falls in), ``destination_port``, ``user_agent`` (the request's User-Agent
header, when Hubble exports headers; empty otherwise). Text conditions take ``exact``, ``prefix``,
``suffix``, ``contains`` and ``contains_all`` as in the Tetragon file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pydantic import field_validator, model_validator

from qcdr_analysis.http.view import HttpView
from qcdr_analysis.rulefiles import Port, RuleFileOf, RuleHead, Strict, TextMatch, parse_model, read_text

SHIPPED = "qcdr_analysis/detectors/rules/http.yaml"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Match(Strict):
    method: tuple[str, ...] = ()
    host: TextMatch | None = None
    path: TextMatch | None = None
    destination: tuple[str, ...] = ()
    destination_port: tuple[Port, ...] = ()
    user_agent: TextMatch | None = None

    @field_validator("method")
    @classmethod
    def _methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for method in value:
            if not method.isalpha() or method != method.upper():
                raise ValueError(f"not an upper-case HTTP method: {method!r}")
        return value

    @field_validator("destination")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"not a CIDR: {cidr!r} ({exc})") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Match:
        if not self.model_dump(exclude_defaults=True):
            raise ValueError("a match needs at least one condition")
        return self

    def networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(c) for c in self.destination)

    def test(self, v: HttpView, networks: tuple[Network, ...]) -> bool:
        if self.method and v.method not in self.method:
            return False
        if self.destination_port and v.destination_port not in self.destination_port:
            return False
        if networks and (v.destination_ip is None or not any(v.destination_ip in n for n in networks)):
            return False
        if self.host is not None and not self.host.test(v.host):
            return False
        if self.path is not None and not self.path.test(v.path):
            return False
        return self.user_agent is None or self.user_agent.test(v.user_agent)


class Rule(RuleHead):
    match: Match
    unless: Match | None = None


class RuleFile(RuleFileOf[Rule]):
    pass


@dataclass(frozen=True)
class _Compiled:
    rule: Rule
    match: tuple[Network, ...]
    unless: tuple[Network, ...]

    def test(self, v: HttpView) -> bool:
        if not self.rule.match.test(v, self.match):
            return False
        return self.rule.unless is None or not self.rule.unless.test(v, self.unless)


@dataclass(frozen=True)
class RuleSet:
    """Enabled rules in file order, their CIDRs parsed once."""

    compiled: tuple[_Compiled, ...]
    source: str = ""

    @classmethod
    def of(cls, rules: list[Rule], source: str = "") -> RuleSet:
        return cls(
            tuple(
                _Compiled(r, r.match.networks(), r.unless.networks() if r.unless else ())
                for r in rules
                if r.enabled
            ),
            source,
        )

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(c.rule for c in self.compiled)

    def matching(self, v: HttpView) -> list[Rule]:
        return [c.rule for c in self.compiled if c.test(v)]


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    return RuleSet.of(parse_model(text, source, RuleFile).rules, source)


def load_rules(path: Path | None = None) -> RuleSet:
    """The rule file at ``path``, or the one shipped in the package."""
    if path is None:
        text = resources.files("qcdr_analysis.detectors").joinpath("rules/http.yaml").read_text("utf-8")
        return parse_rules(text, SHIPPED)
    return parse_rules(read_text(path), str(path))
