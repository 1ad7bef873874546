"""``AdmissionPolicy``: a name, a mode, a scope (``match``) and a set of checks, each optional.

The JSON shape (what the API takes and returns, and what the table stores)::

    {"name": "payments-images", "mode": "enforce", "enabled": true, "description": "...",
     "match": {"namespaces": ["payments-*"], "exclude_namespaces": ["payments-sandbox"],
               "selector": {"matchLabels": {"tier": "web"},
                            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
               "kinds": ["Pod", "Deployment"]},
     "checks": {"allowed_registries": ["registry.example.com"], "disallow_latest": true,
                "blocked_host_paths": {"values": ["/"], "allow": ["/var/log"]}}}

Each key of ``checks`` is a registered check (:mod:`qcdr_admission.policies.checks`); ``true``
turns a check on with its defaults, a list fills its ``values``, ``false`` or ``null`` leaves it out.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from qcdr_admission.engine import Mode
from qcdr_admission.policies.registry import CheckConfig, validate_checks

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_GLOB = re.compile(r"[a-z0-9*?\[\]!.-]{1,253}")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def check_dns1123(name: str) -> str:
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise ValueError("must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', at most 253")
    return name


def check_label_key(key: str) -> str:
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        raise ValueError(f"label key {key!r} has an empty prefix")
    if slash:
        check_dns1123(prefix)
    if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        raise ValueError(f"label key {key!r} is not a valid label name")
    return key


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(f"label value {value!r} is not valid")
    return value


class Requirement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return check_label_key(key)

    @model_validator(mode="after")
    def _values(self) -> Requirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        for v in self.values:
            check_label_value(v)
        return self


class LabelSelector(BaseModel):
    """A Kubernetes label selector; all its terms must hold (an empty selector matches everything)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[Requirement, ...] = Field(default=(), alias="matchExpressions")

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for k, v in labels.items():
            check_label_key(k)
            check_label_value(v)
        return labels


class Match(BaseModel):
    """Where a policy applies. Empty lists mean "any"; exclusions win over inclusions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: tuple[str, ...] = ()  # names or globs (*, ?, [..])
    exclude_namespaces: tuple[str, ...] = ()
    selector: LabelSelector | None = None  # on the admitted object's labels
    kinds: tuple[str, ...] = ()  # Pod, Deployment, ... (case-insensitive)

    @field_validator("namespaces", "exclude_namespaces")
    @classmethod
    def _globs(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for v in values:
            if not _GLOB.fullmatch(v):
                raise ValueError(f"{v!r} is not a namespace name or glob")
        return values


class AdmissionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=253)
    description: str = Field(default="", max_length=2000)
    enabled: bool = True
    mode: Mode = Mode.ENFORCE
    match: Match = Field(default_factory=Match)
    checks: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_dns1123(name)

    @field_validator("checks")
    @classmethod
    def _checks(cls, raw: dict[str, Any]) -> dict[str, CheckConfig]:
        return validate_checks(raw)

    @field_serializer("checks")
    def _dump_checks(self, checks: dict[str, CheckConfig]) -> dict[str, Any]:
        return {key: config.model_dump(mode="json") for key, config in checks.items()}
