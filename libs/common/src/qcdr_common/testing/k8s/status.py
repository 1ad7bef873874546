"""Kubernetes ``Status`` errors, worded as a real API server words them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qcdr_common.testing.k8s import fields
from qcdr_common.testing.k8s.resources import ResourceType
from qcdr_common.testing.schemas import Issue


class StatusError(Exception):
    """An error the server answers with a ``Status`` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def details(rt: ResourceType, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "group": rt.group, "kind": rt.plural, **extra}


def not_found(rt: ResourceType, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{rt.qualified_plural} "{name}" not found', details(rt, name))


def invalid(rt: ResourceType, name: str, issues: Sequence[Issue]) -> StatusError:
    causes = [{"reason": "FieldValueInvalid", "message": i.message, "field": i.path} for i in issues]
    listed = ", ".join(str(i) for i in issues)
    return StatusError(
        422,
        "Invalid",
        f'{rt.qualified_kind} "{name}" is invalid: [{listed}]',
        {"name": name, "group": rt.group, "kind": rt.kind, "causes": causes},
    )


def rv_conflict(rt: ResourceType, name: str) -> StatusError:
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified_plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details(rt, name),
    )


def uid_precondition_failed(rt: ResourceType, name: str, wanted: str, actual: str) -> StatusError:
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified_plural} "{name}": Precondition failed: '
        f"UID in precondition: {wanted}, UID in object meta: {actual}",
        details(rt, name, uid=actual),
    )


def apply_conflict(rt: ResourceType, name: str, conflicts: Sequence[fields.Conflict]) -> StatusError:
    def who(c: fields.Conflict) -> str:
        return f'"{c.manager[0]}" using {rt.api_version}'

    if len(conflicts) == 1:
        c = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who(c)}: {fields.display(c.path)}"
    else:
        lines = "".join(f"\n- conflict with {who(c)}: {fields.display(c.path)}" for c in conflicts)
        message = f"Apply failed with {len(conflicts)} conflicts:{lines}"
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {who(c)}",
            "field": fields.display(c.path),
        }
        for c in conflicts
    ]
    return StatusError(409, "Conflict", message, details(rt, name, causes=causes))
