"""A federated policy as one cluster gets it, and the checks a template must pass.

Rendering for cluster C: a deep copy of the template; C's override patches (RFC 6902, with the
``jsonpatch`` library) applied in order; then the labels ``federation.qualys.com/policy-id`` and
``app.kubernetes.io/managed-by: qcdr-federation`` and the annotation
``federation.qualys.com/generation`` set (after the patches, so no override can take them away).

``content_hash`` is the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8; the same
bytes ``qcdr_common.contracts.policies.v1.PolicyDocument.content_hash`` hashes) of the rendered
manifest, so the hash a spoke's response service computes for the policy it stores is the hash
the hub rendered.

Structural checks (the API answers 422 with every issue): a known kind with its apiVersion,
``metadata.name`` a DNS-1123 subdomain, ``metadata.namespace`` present exactly for namespaced kinds,
``spec`` an object, string-valued labels and annotations, nothing but apiVersion/kind/metadata/spec
at the top and name/namespace/labels/annotations in metadata (a template is not a live object: uid,
resourceVersion or status would only confuse the spoke's server-side apply). Full schema validation
is the spoke response service's job (it lints what it applies).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Collection, Mapping
from typing import Any

import jsonpatch
import jsonpointer
import orjson
from qcdr_common.contracts.federation.v1 import (
    ANNOTATION_GENERATION,
    LABEL_MANAGED_BY,
    LABEL_POLICY_ID,
    MANAGED_BY,
    NAMESPACED_KINDS,
    FederatedPolicySpec,
    Override,
    PlacedPolicy,
    PolicyKind,
)

from qcdr_federation.hub.policies.issues import Issue, PolicySpecError
from qcdr_federation.hub.policies.placement import placement_issues

API_VERSIONS: Mapping[str, str] = {
    PolicyKind.TRACING_POLICY.value: "cilium.io/v1alpha1",
    PolicyKind.TRACING_POLICY_NAMESPACED.value: "cilium.io/v1alpha1",
    PolicyKind.CILIUM_NETWORK_POLICY.value: "cilium.io/v2",
    PolicyKind.CILIUM_CLUSTERWIDE_NETWORK_POLICY.value: "cilium.io/v2",
}
_NAMESPACED = frozenset(k.value for k in NAMESPACED_KINDS)
_TOP_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
_META_KEYS = frozenset({"name", "namespace", "labels", "annotations"})
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

Loc = tuple[str | int, ...]


# --------------------------------------------------------------------------- hashing


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8 (orjson: the form PolicyDocument hashes too)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def spec_json(spec: FederatedPolicySpec) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    rollout = data.get("rollout")
    if rollout is None:
        # specs stored before rollouts existed keep their content hash (no new generation)
        data.pop("rollout", None)
    elif rollout.get("on_failure") == "halt":
        rollout.pop("on_failure")  # likewise rollouts stored before on_failure existed
    return data


def spec_hash(spec: FederatedPolicySpec) -> str:
    """The policy's content hash: a new generation exactly when it changes."""
    return sha256_hex(spec_json(spec))


def set_etag(pairs: Collection[tuple[str, str]]) -> str:
    """The ETag of a cluster's set: sha256 of its sorted (policy id, content hash) pairs."""
    digest = hashlib.sha256()
    for policy_id, content_hash in sorted(pairs):
        digest.update(f"{policy_id} {content_hash}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- structural checks


def manifest_issues(manifest: Any, loc: Loc = ("template",), *, kind: str | None = None) -> list[Issue]:
    """What is structurally wrong with a template or a rendered manifest (empty: nothing).
    ``kind``: the kind it must keep (a patch may not change it)."""
    if not isinstance(manifest, dict):
        return [Issue(loc, "must be an object (a whole manifest: apiVersion, kind, metadata, spec)")]
    issues: list[Issue] = []
    for key in manifest:
        if key not in _TOP_KEYS:
            issues.append(
                Issue((*loc, str(key)), "unknown field; a template has apiVersion, kind, metadata and spec")
            )
    found_kind = manifest.get("kind")
    if not isinstance(found_kind, str) or found_kind not in API_VERSIONS:
        issues.append(
            Issue((*loc, "kind"), f"unknown kind {found_kind!r}; one of {', '.join(sorted(API_VERSIONS))}")
        )
        found_kind = None
    elif kind is not None and found_kind != kind:
        issues.append(
            Issue((*loc, "kind"), f"the kind is {kind}; an override cannot change it to {found_kind}")
        )
    api_version = manifest.get("apiVersion")
    if found_kind is not None and api_version != API_VERSIONS[found_kind]:
        issues.append(
            Issue((*loc, "apiVersion"), f"{found_kind} is {API_VERSIONS[found_kind]}, not {api_version!r}")
        )
    issues += _metadata_issues(manifest.get("metadata"), (*loc, "metadata"), found_kind)
    if not isinstance(manifest.get("spec"), dict):
        issues.append(Issue((*loc, "spec"), "required, and must be an object"))
    return issues


def _metadata_issues(meta: Any, loc: Loc, kind: str | None) -> list[Issue]:
    if not isinstance(meta, dict):
        return [Issue(loc, "required, and must be an object with at least a name")]
    issues = [
        Issue(
            (*loc, str(key)),
            "unknown or server-set field; a template's metadata has name, namespace, labels and annotations",
        )
        for key in meta
        if key not in _META_KEYS
    ]
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        issues.append(
            Issue(
                (*loc, "name"),
                f"{name!r} is not a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', ≤ 253)",
            )
        )
    namespace = meta.get("namespace")
    if kind is not None:
        if kind in _NAMESPACED and namespace is None:
            issues.append(Issue((*loc, "namespace"), f"{kind} is namespaced: metadata.namespace is required"))
        elif kind not in _NAMESPACED and namespace is not None:
            issues.append(Issue((*loc, "namespace"), f"{kind} is cluster-scoped: remove metadata.namespace"))
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace)
    ):
        issues.append(Issue((*loc, "namespace"), f"{namespace!r} is not a DNS-1123 label"))
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            issues.append(Issue((*loc, field), "must be a map of strings"))
    return issues


# --------------------------------------------------------------------------- rendering


def override_for(spec: FederatedPolicySpec, cluster_name: str) -> Override | None:
    for override in spec.overrides:
        if override.cluster_name == cluster_name:
            return override
    return None


def render_manifest(
    policy_id: str, generation: int, spec: FederatedPolicySpec, cluster_name: str
) -> dict[str, Any]:
    """The manifest ``cluster_name`` gets; PolicySpecError naming the cluster when its patches do
    not apply or leave a manifest that fails the structural checks."""
    manifest: Any = copy.deepcopy(spec.template)
    override = override_for(spec, cluster_name)
    if override is not None and override.patches:
        index = spec.overrides.index(override)
        loc: Loc = ("overrides", index, "patches")
        operations = [p.model_dump(mode="json") for p in override.patches]
        try:
            manifest = jsonpatch.JsonPatch(operations).apply(manifest)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, KeyError) as exc:
            raise PolicySpecError(
                [Issue(loc, f"the patches for cluster {cluster_name!r} do not apply to the template: {exc}")]
            ) from None
        issues = manifest_issues(manifest, ("rendered", cluster_name), kind=spec.template.get("kind"))
        if issues:
            raise PolicySpecError(
                [
                    Issue(loc, f"for cluster {cluster_name!r} the patched manifest is invalid: {i}")
                    for i in issues
                ]
            )
    if not isinstance(manifest, dict) or not isinstance(manifest.get("metadata"), dict):
        raise PolicySpecError([Issue(("template",), "must be a manifest with metadata")])
    metadata = manifest["metadata"]
    labels = dict(metadata.get("labels") or {})
    labels[LABEL_POLICY_ID] = policy_id
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    annotations = dict(metadata.get("annotations") or {})
    annotations[ANNOTATION_GENERATION] = str(generation)
    metadata["labels"] = labels
    metadata["annotations"] = annotations
    return dict(manifest)


def render(
    policy_id: str, name: str, generation: int, spec: FederatedPolicySpec, cluster_name: str
) -> PlacedPolicy:
    manifest = render_manifest(policy_id, generation, spec, cluster_name)
    try:
        content_hash = sha256_hex(manifest)
    except orjson.JSONEncodeError as exc:
        raise PolicySpecError([Issue(("template",), f"cannot be encoded as JSON: {exc}")]) from None
    return PlacedPolicy(
        policy_id=policy_id,
        name=name,
        generation=generation,
        content_hash=content_hash,
        enforce=spec.enforce,
        manifest=manifest,
    )


# --------------------------------------------------------------------------- the whole spec


def nul_issues(value: Any, loc: Loc = ()) -> list[Issue]:
    """Every string (keys too) holding a NUL character: JSON allows it, PostgreSQL's jsonb does
    not, so the hub names the field instead of failing to store it."""
    issues: list[Issue] = []
    if isinstance(value, str):
        if "\x00" in value:
            issues.append(Issue(loc, "contains a NUL character (\\u0000), which the hub cannot store"))
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                issues.append(
                    Issue(loc, f"key {key!r} contains a NUL character (\\u0000), which the hub cannot store")
                )
                key = key.replace("\x00", "\\u0000")  # the path stays one printable line
            issues += nul_issues(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            issues += nul_issues(item, (*loc, index))
    return issues


def spec_issues(spec: FederatedPolicySpec, existing_clusters: Collection[str]) -> list[Issue]:
    """Everything wrong with a spec: the template, the placement, and the patches of every override
    whose cluster exists (each renders now; a patch for a cluster not declared yet is checked when
    that cluster appears, and a failure then leaves the policy off that cluster, with a reason)."""
    issues = manifest_issues(spec.template)
    issues += placement_issues(spec)
    data = spec_json(spec)
    try:
        canonical_json(data)
    except orjson.JSONEncodeError as exc:
        issues.append(Issue(("template",), f"cannot be encoded as canonical JSON: {exc}"))
    else:
        issues += nul_issues(data)
    if issues:
        return issues
    for override in spec.overrides:
        if override.disabled or not override.patches or override.cluster_name not in existing_clusters:
            continue
        try:
            render("fp-check", "check", 1, spec, override.cluster_name)
        except PolicySpecError as exc:
            issues += exc.issues
    return issues


def check_spec(spec: FederatedPolicySpec, existing_clusters: Collection[str]) -> None:
    issues = spec_issues(spec, existing_clusters)
    if issues:
        raise PolicySpecError(issues)
