"""Small factories for the policy tests."""

from __future__ import annotations

from typing import Any

from qcdr_admission.engine import Subject


def container(
    name: str = "app", image: str = "registry.example.com/app:1.0", **fields: Any
) -> dict[str, Any]:
    return {"name": name, "image": image, **fields}


def pod_subject(
    spec: dict[str, Any] | None = None,
    *,
    namespace: str | None = "default",
    labels: dict[str, str] | None = None,
    kind: str = "Pod",
    is_template: bool = False,
) -> Subject:
    spec = spec if spec is not None else {"containers": [container()]}
    metadata: dict[str, Any] = {"name": "p", "labels": labels or {}}
    obj = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "spec": spec}
    return Subject(
        kind=kind,
        namespace=namespace,
        name="p",
        operation="CREATE",
        object=obj,
        old_object=None,
        pod_metadata=metadata,
        pod_spec=spec,
        is_template=is_template,
        user="alice",
        groups=(),
    )
