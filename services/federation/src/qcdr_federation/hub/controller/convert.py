"""From federation objects (camelCase CRD fields) to what the hub's services take: a cluster
declaration, or the contract's :class:`FederatedPolicySpec`. Pure functions; a
:class:`ConversionError` carries a message fit for a ``ValidationFailed`` condition.

The API server has already checked the objects against the CRD schemas, but the controller does
not rely on it (an older CRD may be installed, or validation may be off), so every field is checked
again here or by the contract's models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN, FederatedPolicySpec

from qcdr_federation.hub.clusters.schemas import check_labels
from qcdr_federation.hub.controller.kinds import POLICY_CRD_KINDS, CrdKind, template_kind

PROVIDERS = frozenset({"aws", "gcp", "azure", "on-prem", "other"})
DEFAULT_SECRET_KEY = "token"  # noqa: S105 (the key name in the Secret)
# the template metadata a federated policy may carry; anything else (uid, resourceVersion, ...)
# belongs to the federation object, not to the policy the spokes get
_TEMPLATE_METADATA_KEYS = ("name", "namespace", "labels", "annotations")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_CAMEL_BOUNDARY = re.compile(r"_([a-z])")


class ConversionError(ValueError):
    """The object cannot become what the hub takes; the message says which field and why."""


@dataclass(frozen=True)
class SecretRef:
    name: str
    namespace: str | None
    key: str = DEFAULT_SECRET_KEY


@dataclass(frozen=True)
class ClusterDeclaration:
    """A ``FederatedCluster`` as the hub declares it."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    secret_ref: SecretRef | None = None
    paused: bool = False


# --------------------------------------------------------------------------- helpers


def object_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(name, str) or not name:
        raise ConversionError("metadata.name is missing")
    return name


def object_generation(obj: Mapping[str, Any]) -> int:
    meta = obj.get("metadata")
    generation = meta.get("generation") if isinstance(meta, Mapping) else None
    return generation if isinstance(generation, int) else 0


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec", {})
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConversionError("spec must be an object")
    return spec


def _optional(spec: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = spec.get(key)
    if value is not None and not isinstance(value, kind):
        raise ConversionError(f"{where}.{key} must be {_type_name(kind)}")
    return value


_TYPE_NAMES: dict[type, str] = {str: "a string", bool: "a boolean", Mapping: "an object", Sequence: "a list"}


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


def crd_path(prefix: str, loc: Sequence[str | int]) -> str:
    """A location in the contract's models (snake_case) as a path in the object
    (``spec.overrides[0].clusterName``)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += "." + _CAMEL_BOUNDARY.sub(lambda m: m.group(1).upper(), str(part))
    return path


def _describe(error: ValidationError, prefix: str) -> str:
    """Pydantic's errors as CRD paths (``spec.overrides[0].clusterName: ...``), at most five."""
    parts = [f"{crd_path(prefix, item['loc'])}: {item['msg']}" for item in error.errors()[:5]]
    more = error.error_count() - len(parts)
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


# --------------------------------------------------------------------------- clusters


def cluster_declaration(obj: Mapping[str, Any]) -> ClusterDeclaration:
    """A ``FederatedCluster`` → the declaration (placement labels: ``spec.labels`` plus ``region``
    and ``provider`` when given; those two win over same-named entries of ``spec.labels``)."""
    name = object_name(obj)
    if len(name) > 63 or not re.fullmatch(CLUSTER_NAME_PATTERN, name):
        raise ConversionError(
            f"metadata.name {name!r} is not a cluster name: a DNS-1123 label "
            "(lower-case letters, digits and '-', at most 63)"
        )
    spec = _spec(obj)
    raw_labels = _optional(spec, "labels", Mapping, "spec") or {}
    labels: dict[str, str] = {}
    for key, value in raw_labels.items():
        if not isinstance(value, str):
            raise ConversionError(f"spec.labels[{key!r}] must be a string")
        labels[str(key)] = value
    region = _optional(spec, "region", str, "spec")
    if region:
        labels["region"] = region
    provider = _optional(spec, "provider", str, "spec")
    if provider:
        if provider not in PROVIDERS:
            raise ConversionError(f"spec.provider {provider!r} is not one of {', '.join(sorted(PROVIDERS))}")
        labels["provider"] = provider
    try:
        check_labels(labels)
    except ValueError as exc:
        raise ConversionError(f"spec.labels: {exc}") from None
    paused = _optional(spec, "paused", bool, "spec") or False
    return ClusterDeclaration(name=name, labels=labels, secret_ref=_secret_ref(spec), paused=paused)


def _secret_ref(spec: Mapping[str, Any]) -> SecretRef | None:
    ref = _optional(spec, "bootstrapTokenSecretRef", Mapping, "spec")
    if ref is None:
        return None
    where = "spec.bootstrapTokenSecretRef"
    name = _optional(ref, "name", str, where)
    if not name or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise ConversionError(f"{where}.name must be a Secret name (a DNS-1123 subdomain)")
    namespace = _optional(ref, "namespace", str, where) or None
    if namespace is not None and (len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace)):
        raise ConversionError(f"{where}.namespace must be a namespace name (a DNS-1123 label)")
    key = _optional(ref, "key", str, where) or DEFAULT_SECRET_KEY
    if len(key) > 253 or not _SECRET_KEY.fullmatch(key):
        raise ConversionError(f"{where}.key must be a Secret key (letters, digits, '-', '_' and '.')")
    return SecretRef(name=name, namespace=namespace, key=key)


# --------------------------------------------------------------------------- policies


def template_manifest(kind: CrdKind, template: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest a policy CRD's ``spec.template`` stands for: apiVersion and kind from the CRD
    kind and whether ``metadata.namespace`` is set; metadata limited to name, namespace, labels and
    annotations; the spec as written."""
    if kind not in POLICY_CRD_KINDS:
        raise ValueError(f"{kind} is not a policy kind")
    metadata = template.get("metadata")
    if not isinstance(metadata, Mapping):
        raise ConversionError("spec.template.metadata must be an object")
    spec = template.get("spec")
    if not isinstance(spec, Mapping):
        raise ConversionError("spec.template.spec must be an object")
    namespace = metadata.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise ConversionError("spec.template.metadata.namespace must be a string")
    api_version, policy_kind = template_kind(kind, namespaced=bool(namespace))
    meta = {key: metadata[key] for key in _TEMPLATE_METADATA_KEYS if metadata.get(key) not in (None, "")}
    return {"apiVersion": api_version, "kind": policy_kind.value, "metadata": meta, "spec": dict(spec)}


def _selector(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ConversionError("spec.placement.clusterSelector must be an object")
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, Sequence) or isinstance(expressions, str):
        raise ConversionError("spec.placement.clusterSelector.matchExpressions must be a list")
    return {
        "match_labels": raw.get("matchLabels") or {},
        "match_expressions": [
            {"key": e.get("key"), "operator": e.get("operator"), "values": e.get("values") or []}
            if isinstance(e, Mapping)
            else e
            for e in expressions
        ],
    }


def _overrides(raw: Any) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConversionError("spec.overrides must be a list")
    out: list[Any] = []
    for item in raw:
        if not isinstance(item, Mapping):
            out.append(item)  # the contract's model reports it
            continue
        converted: dict[str, Any] = {
            "cluster_name": item.get("clusterName"),
            "disabled": bool(item.get("disabled", False)),
        }
        if item.get("patches") is not None:
            converted["patches"] = item["patches"]
        out.append(converted)
    return out


def _rollout(raw: Any) -> Any:
    if raw is None or not isinstance(raw, Mapping):
        return raw  # None, or what the contract's model reports
    names = {
        "strategy": "strategy",
        "maxConcurrency": "max_concurrency",
        "minSuccessTimeSeconds": "min_success_time_s",
        "progressDeadlineSeconds": "progress_deadline_s",
        "maxFailures": "max_failures",
        "order": "order",
        "onFailure": "on_failure",
    }
    return {names.get(str(key), str(key)): value for key, value in raw.items()}


def policy_suspended(obj: Mapping[str, Any]) -> bool:
    """``spec.suspend`` of a policy object (Flux's and CronJob's name for it)."""
    return bool(_optional(_spec(obj), "suspend", bool, "spec") or False)


def policy_spec(kind: CrdKind, obj: Mapping[str, Any]) -> FederatedPolicySpec:
    """A ``FederatedTracingPolicy`` / ``FederatedNetworkPolicy`` → the contract's spec."""
    spec = _spec(obj)
    template = spec.get("template")
    if not isinstance(template, Mapping):
        raise ConversionError("spec.template is required (an object with metadata and spec)")
    placement = spec.get("placement")
    if placement is None:
        raise ConversionError("spec.placement is required")
    if not isinstance(placement, Mapping):
        raise ConversionError("spec.placement must be an object")
    body: dict[str, Any] = {
        "template": template_manifest(kind, template),
        "placement": {
            "clusters": placement.get("clusters") or [],
            "cluster_selector": _selector(placement.get("clusterSelector")),
            "excluded_clusters": placement.get("excludedClusters") or [],
        },
        "overrides": _overrides(spec.get("overrides")),
        "enforce": spec.get("enforce", False),
        "description": spec.get("description") or "",
    }
    if spec.get("rollout") is not None:
        body["rollout"] = _rollout(spec["rollout"])
    try:
        return FederatedPolicySpec.model_validate(body)
    except ValidationError as exc:
        raise ConversionError(_describe(exc, "spec")) from None
