"""The admission policy checks: one module per check in :mod:`qcdr_admission.policies.checks`;
importing a module registers its :class:`PolicyCheck` (duplicate keys fail at import)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, model_validator
from qcdr_common.registry import Registry

from qcdr_admission.policies.context import CheckContext


class CheckConfig(BaseModel):
    """A check's options. ``true`` in a policy means "on, with the defaults"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return value


class ListConfig(CheckConfig):
    """A check configured by one list (``blocked_capabilities: [SYS_ADMIN]``)."""

    values: tuple[str, ...]

    @model_validator(mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {"values": value}
        return value


C = TypeVar("C", bound=CheckConfig)
CheckFn = Callable[[C, CheckContext], Sequence[str]]


@dataclass(frozen=True, slots=True)
class PolicyCheck(Generic[C]):
    key: str  # the field in a policy's ``checks`` (snake_case)
    id: str  # the id in results and decisions (camelCase, like the PSS ids)
    config: type[C]
    run: Callable[[C, CheckContext], Sequence[str]]  # messages; empty when the pod passes
    summary: str


CHECKS: Registry[PolicyCheck[Any]] = Registry("admission policy check")


def register(check: PolicyCheck[C]) -> PolicyCheck[C]:
    CHECKS.add(check.key, check, check.run.__module__)
    return check


def load_checks() -> Registry[PolicyCheck[Any]]:
    from qcdr_common.registry import import_submodules

    import qcdr_admission.policies.checks as package

    import_submodules(package)
    return CHECKS


def validate_checks(raw: Mapping[str, Any]) -> dict[str, CheckConfig]:
    """``{key: config}`` with each value validated by its check; ``false``/``null`` drop a check."""
    registry = load_checks()
    out: dict[str, CheckConfig] = {}
    for key, value in raw.items():
        if key not in registry:
            raise ValueError(f"unknown check {key!r} (known: {', '.join(sorted(registry.names()))})")
        if value is None or value is False:
            continue
        config = registry.get(key).config
        out[key] = value if isinstance(value, config) else config.model_validate(value)
    return out
