"""Registry lists shared by the allowed and blocked registries checks."""

from __future__ import annotations

from pydantic import field_validator

from qcdr_admission.policies.images import registry_of
from qcdr_admission.policies.registry import ListConfig


class RegistryList(ListConfig):
    """Entries are ``host[:port]`` or ``host[:port]/repository/prefix``; hosts compare exactly."""

    @field_validator("values")
    @classmethod
    def _entries(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple("/".join(p for p in registry_of(v) if p) for v in values)

    def entries(self) -> tuple[tuple[str, str], ...]:
        return tuple(registry_of(v) for v in self.values)
