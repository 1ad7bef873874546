"""The seam between the webhook and the rules: what one review is about (:class:`Subject`), what a
rule says about it (:class:`Result`), and the :class:`Engine` that turns one into the other.

An engine is a cheap in-memory object, synchronous and without I/O: the webhook calls
``engine.evaluate(subject)`` on the request path. :class:`PssEngine` runs the Pod Security
Standards per namespace and mode; :class:`CompositeEngine` adds the admission policies (built by
:mod:`qcdr_admission.policies`), and is swapped atomically when the policies change.

Workload templates (``Subject.is_template``): enforce-mode results are denials when
``deny_templates`` is on (the default, Kyverno's behaviour) and warnings otherwise (PSA's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from qcdr_admission import pss
from qcdr_admission.pss.pod import Pod


class Mode(StrEnum):
    ENFORCE = "enforce"  # deny
    WARN = "warn"  # allow, with a warning returned to the client
    AUDIT = "audit"  # allow silently; recorded in the decision


@dataclass(frozen=True, slots=True)
class Result:
    source: str  # "pss" or "policy:<name>"
    check: str  # upstream PSS id or our check id (e.g. "allowedRegistries")
    message: str
    mode: Mode


@dataclass(frozen=True, slots=True)
class Subject:
    """What one review is about."""

    kind: str
    namespace: str | None
    name: str | None
    operation: str
    object: Mapping[str, Any]
    old_object: Mapping[str, Any] | None
    pod_metadata: Mapping[str, Any]
    pod_spec: Mapping[str, Any]
    is_template: bool  # a workload's pod template (not a Pod)
    user: str
    groups: tuple[str, ...]
    # views derived from the object, built once per review (not part of its identity)
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def pod(self) -> Pod:
        """The pod view the checks read: built once, shared by PSS and the policies."""
        view = self.derived.get("pod")
        if view is None:
            view = self.derived["pod"] = Pod(self.pod_metadata, self.pod_spec)
        return cast(Pod, view)


class Engine(Protocol):
    def evaluate(self, subject: Subject) -> list[Result]: ...


# --- Pod Security Standards -------------------------------------------------------------------


def _check_level(value: str | None) -> str | None:
    if value is not None and value not in pss.LEVELS:
        raise ValueError(f"unknown level {value!r}: known are {', '.join(pss.LEVELS)}")
    return value


def _check_version(value: str | None) -> str | None:
    if value is not None:
        pss.parse_version(value)  # raises ValueError naming the known versions
    return value


class NamespacePss(BaseModel):
    """A namespace's override of the default levels (unset fields keep the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enforce: str | None = None
    warn: str | None = None
    audit: str | None = None
    version: str | None = None

    @field_validator("enforce", "warn", "audit")
    @classmethod
    def _known_level(cls, value: str | None) -> str | None:
        return _check_level(value)

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: str | None) -> str | None:
        return _check_version(value)


class PssConfig(BaseSettings):
    """``QCDR_ADMISSION_PSS_ENFORCE|WARN|AUDIT|VERSION|NAMESPACES`` and ``QCDR_ADMISSION_DENY_TEMPLATES``.

    ``privileged`` turns a mode off. ``pss_namespaces`` is JSON:
    ``{"legacy": {"enforce": "privileged"}, "payments": {"enforce": "restricted", "version": "v1.30"}}``.
    """

    model_config = SettingsConfigDict(env_prefix="QCDR_ADMISSION_", extra="ignore", frozen=True)

    pss_enforce: str = "baseline"
    pss_warn: str = "restricted"
    pss_audit: str = "privileged"
    pss_version: str = pss.LATEST
    pss_namespaces: dict[str, NamespacePss] = Field(default_factory=dict)
    deny_templates: bool = True

    @field_validator("pss_enforce", "pss_warn", "pss_audit")
    @classmethod
    def _known_level(cls, value: str) -> str:
        return _check_level(value) or value

    @field_validator("pss_version")
    @classmethod
    def _known_version(cls, value: str) -> str:
        return _check_version(value) or value


@dataclass(frozen=True, slots=True)
class _Plan:
    """(mode, level, version) triples for one namespace; privileged levels left out."""

    runs: tuple[tuple[Mode, str, str], ...]


def downgrade_templates(results: list[Result], subject: Subject, *, deny_templates: bool) -> list[Result]:
    """Enforce-mode results on a workload template become warnings unless templates are denied."""
    if deny_templates or not subject.is_template:
        return results
    return [replace(r, mode=Mode.WARN) if r.mode is Mode.ENFORCE else r for r in results]


class PssEngine:
    """The Pod Security Standards at the configured level and version per mode and namespace.

    A violation already reported in a stricter mode (enforce before warn before audit) is not
    repeated in a weaker one.
    """

    def __init__(self, config: PssConfig | None = None) -> None:
        self.config = config if config is not None else PssConfig()
        self._default = self._plan_for(None)
        self._namespaces = {ns: self._plan_for(o) for ns, o in self.config.pss_namespaces.items()}

    def _plan_for(self, override: NamespacePss | None) -> _Plan:
        c = self.config
        o = override if override is not None else NamespacePss()
        version = o.version or c.pss_version
        runs = []
        for mode, level in (
            (Mode.ENFORCE, o.enforce or c.pss_enforce),
            (Mode.WARN, o.warn or c.pss_warn),
            (Mode.AUDIT, o.audit or c.pss_audit),
        ):
            if level != "privileged":
                pss.plan(level, version)  # fail at construction, not per request
                runs.append((mode, level, version))
        return _Plan(tuple(runs))

    def evaluate(self, subject: Subject) -> list[Result]:
        plan = self._namespaces.get(subject.namespace or "", self._default)
        results: list[Result] = []
        reported: set[tuple[str, str]] = set()
        # every check revision runs once however many modes ask for it (baseline checks are
        # shared by an enforced baseline and a warned restricted level)
        levels = pss.evaluate_many(
            subject.pod_metadata,
            subject.pod_spec,
            [(lv, ver) for _, lv, ver in plan.runs],
            pod=subject.pod(),
        )
        for (mode, _level, _version), violations in zip(plan.runs, levels, strict=True):
            for v in violations:
                if (v.check, v.message) in reported:
                    continue
                reported.add((v.check, v.message))
                results.append(Result("pss", v.check, v.message, mode))
        return downgrade_templates(results, subject, deny_templates=self.config.deny_templates)


class CompositeEngine:
    """Several engines in order (PSS first, then the policies); results concatenated."""

    def __init__(self, engines: Sequence[Engine], *, deny_templates: bool = True) -> None:
        self.engines = tuple(engines)
        self.deny_templates = deny_templates

    def evaluate(self, subject: Subject) -> list[Result]:
        results: list[Result] = []
        for engine in self.engines:
            results.extend(engine.evaluate(subject))
        return downgrade_templates(results, subject, deny_templates=self.deny_templates)


def denied(results: Iterable[Result]) -> bool:
    """Whether any result denies the request."""
    return any(r.mode is Mode.ENFORCE for r in results)
