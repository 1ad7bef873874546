"""Parsing an ``admission.k8s.io/v1`` AdmissionReview into what the engine evaluates.

Pure and allocation-light: the decoded body is read in place (the engine never copies it either).
Everything wrong with a review is a :class:`ReviewError` with a stable ``reason`` (answered 400);
nothing here raises anything else for any JSON value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qcdr_admission.engine import Subject
from qcdr_admission.pss import MalformedObjectError, pod_path, pod_spec_of

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"

# The kinds whose pods we evaluate (the webhook's rules register exactly these).
POD = "Pod"
TEMPLATE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job", "CronJob"}
)
EVALUATED_OPERATIONS = frozenset({"CREATE", "UPDATE"})

# Pod annotations the Pod Security Standards read (before 1.19 seccomp, and AppArmor): a change to
# one of them is a significant update even when nothing else but metadata changed (as in PSA).
_SECURITY_ANNOTATION_PREFIXES = (
    "seccomp.security.alpha.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "container.apparmor.security.beta.kubernetes.io/",
)


class ReviewError(Exception):
    """A review the webhook cannot answer (400); ``reason`` is a stable snake_case code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Review:
    """The parts of one AdmissionRequest the webhook uses (``subject`` None: nothing to evaluate)."""

    uid: str
    operation: str
    kind: str
    namespace: str | None
    name: str | None
    user: str
    dry_run: bool
    subject: Subject | None
    skipped: str | None  # why nothing was evaluated ("metadata-only", "subresource", ...)


def _opt_str(request: Mapping[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ReviewError("malformed_review", f"request.{key} must be a string")
    return value


def parse_review(review: object) -> Review:
    """The review's request, checked; raises :class:`ReviewError` for anything malformed."""
    if not isinstance(review, dict):
        raise ReviewError("malformed_review", "the body must be a JSON object (an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != KIND:
        raise ReviewError(
            "unsupported_review",
            f"expected apiVersion {API_VERSION} and kind {KIND} "
            "(the webhook declares admissionReviewVersions [v1])",
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("malformed_review", "request is missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("malformed_review", "request.uid is missing or not a non-empty string")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise ReviewError("malformed_review", "request.operation is missing or not a string")
    gvk = request.get("kind")
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise ReviewError("malformed_review", "request.kind must be an object with a string kind")
    kind: str = gvk["kind"]
    group = gvk.get("group") or ""
    if not isinstance(group, str):
        raise ReviewError("malformed_review", "request.kind.group must be a string")
    namespace = _opt_str(request, "namespace")
    name = _opt_str(request, "name")
    subresource = _opt_str(request, "subResource") or ""
    dry_run = request.get("dryRun")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise ReviewError("malformed_review", "request.dryRun must be a boolean")
    user_info = request.get("userInfo")
    if user_info is None:
        user_info = {}
    if not isinstance(user_info, dict):
        raise ReviewError("malformed_review", "request.userInfo must be an object")
    user = user_info.get("username") or ""
    if not isinstance(user, str):
        raise ReviewError("malformed_review", "request.userInfo.username must be a string")
    groups_raw = user_info.get("groups") or ()
    if not isinstance(groups_raw, list | tuple) or not all(isinstance(g, str) for g in groups_raw):
        raise ReviewError("malformed_review", "request.userInfo.groups must be a list of strings")

    out = Review(uid, operation, kind, namespace, name, user, bool(dry_run), None, None)
    if operation not in EVALUATED_OPERATIONS:
        out.skipped = "operation"
        return out
    is_pod = kind == POD and group == ""
    if not is_pod and kind not in TEMPLATE_KINDS:
        out.skipped = "kind"
        return out
    if subresource and not (is_pod and subresource == "ephemeralcontainers"):
        out.skipped = "subresource"  # status, scale, binding, ...: no pod spec to judge
        return out

    obj = request.get("object")
    if not isinstance(obj, dict):
        raise ReviewError("malformed_object", "request.object is missing or not an object")
    old = request.get("oldObject")
    if old is not None and not isinstance(old, dict):
        raise ReviewError("malformed_object", "request.oldObject must be an object")
    if operation == "UPDATE" and old is not None and not subresource and _metadata_only(obj, old, is_pod):
        out.skipped = "metadata-only"
        return out
    if obj.get("kind") is None:
        # some callers (and recorded requests) leave the object's own kind out: take the request's
        obj = {**obj, "kind": kind, "apiVersion": _api_version(gvk)}
    if name is None:
        name = _object_name(obj)
        out.name = name
    try:
        parts = pod_spec_of(obj)
    except MalformedObjectError as exc:
        raise ReviewError("malformed_object", f"request.object: {exc}") from None
    if parts is None:
        out.skipped = "kind"  # e.g. a custom resource called Deployment in another group
        return out
    out.subject = Subject(
        kind=kind,
        namespace=namespace,
        name=name,
        operation=operation,
        object=obj,
        old_object=old,
        pod_metadata=parts[0],
        pod_spec=parts[1],
        is_template=not is_pod,
        user=user,
        groups=tuple(groups_raw),
    )
    return out


def object_error(exc: MalformedObjectError, kind: str) -> ReviewError:
    """The 400 for a malformed pod found while evaluating, its path placed inside the object."""
    where = pod_path(kind)
    err = exc.under(where) if where else exc
    return ReviewError("malformed_object", f"request.object: {err}")


def _api_version(gvk: Mapping[str, Any]) -> str:
    group, version = gvk.get("group") or "", gvk.get("version") or "v1"
    return f"{group}/{version}" if group else str(version)


def _object_name(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        name = meta.get("name") or meta.get("generateName")
        if isinstance(name, str) and name:
            return name
    return None


def _metadata_only(obj: Mapping[str, Any], old: Mapping[str, Any], is_pod: bool) -> bool:
    """Whether an update changes nothing but metadata (and status), as PSA skips it.

    For a Pod the annotations the standards read (seccomp, AppArmor) count as significant.
    """
    for key, value in obj.items():
        if key not in ("metadata", "status") and old.get(key) != value:
            return False
    for key in old:
        if key not in ("metadata", "status") and key not in obj:
            return False
    if is_pod:
        return _security_annotations(obj) == _security_annotations(old)
    return True


def _security_annotations(obj: Mapping[str, Any]) -> dict[str, object]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict):
        return {}
    return {
        k: v
        for k, v in annotations.items()
        if isinstance(k, str) and k.startswith(_SECURITY_ANNOTATION_PREFIXES)
    }
