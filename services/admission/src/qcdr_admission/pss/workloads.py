"""From a Kubernetes object to the pod it runs: a Pod itself, or the pod template of a workload
controller (for a CronJob, ``spec.jobTemplate.spec.template``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_admission.pss.errors import MalformedObjectError
from qcdr_admission.pss.pod import as_mapping, mapping

# kind -> API groups it belongs to ("" is the core group)
TEMPLATE_KINDS: dict[str, frozenset[str]] = {
    "Deployment": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "ReplicationController": frozenset({""}),
    "Job": frozenset({"batch"}),
}
POD_KINDS = frozenset({"Pod", "CronJob", *TEMPLATE_KINDS})
PodParts = tuple[Mapping[str, Any], Mapping[str, Any]]


def _group(api_version: object) -> str | None:
    if api_version is None:
        return None
    if not isinstance(api_version, str):
        raise MalformedObjectError("apiVersion", "a string", api_version)
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def pod_spec_of(obj: object) -> PodParts | None:
    """``(metadata, spec)`` of the pod ``obj`` runs, or ``None`` for a kind that runs no pod.

    A missing template reads as an empty pod (nothing to forbid). The API group is checked when
    ``apiVersion`` is present, so a custom resource that happens to be called ``Deployment`` is not
    mistaken for one. Wrong shapes raise :class:`MalformedObjectError`.
    """
    root = as_mapping(obj, "(object)")
    kind = root.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise MalformedObjectError("kind", "a string", kind)
    if kind not in POD_KINDS:
        return None
    group = _group(root.get("apiVersion"))
    if kind == "Pod":
        if group not in (None, ""):
            return None
        return mapping(root, "metadata", ""), mapping(root, "spec", "")
    spec = mapping(root, "spec", "")
    if kind == "CronJob":
        if group not in (None, "batch"):
            return None
        job = mapping(mapping(spec, "jobTemplate", "spec"), "spec", "spec.jobTemplate")
        template = mapping(job, "template", "spec.jobTemplate.spec")
        where = "spec.jobTemplate.spec.template"
    else:
        if group is not None and group not in TEMPLATE_KINDS[kind]:
            return None
        template = mapping(spec, "template", "spec")
        where = "spec.template"
    return mapping(template, "metadata", where), mapping(template, "spec", where)


def pod_path(kind: str) -> str:
    """Where the pod sits in an object of ``kind``, to place an evaluation error
    (:meth:`MalformedObjectError.under`)."""
    if kind == "CronJob":
        return "spec.jobTemplate.spec.template"
    return "spec.template" if kind in TEMPLATE_KINDS else ""
