"""What a placed manifest must pass before it becomes a policy here.

First the shape the federation contract promises (one of the four federated kinds with its
apiVersion, a name), then the checker generated policies pass (``policies.checks``: the Tetragon
or Cilium validator for the configured target versions, and the blast-radius lint). Generated
policies with lint findings are demoted to audit; a placed manifest is never rewritten here (its
content hash is what the hub tracks), so lint findings on an *enforcing* manifest refuse it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qcdr_common.contracts.federation.v1 import PolicyKind
from qcdr_common.logging import get_logger

from qcdr_response.policies.checks import TRACING_KINDS
from qcdr_response.policies.generate import Checker
from qcdr_response.policies.lint import HOOK_KINDS
from qcdr_response.policies.targets import ENFORCING_ACTIONS

log = get_logger(__name__)

API_VERSIONS: Mapping[str, str] = {
    PolicyKind.TRACING_POLICY: "cilium.io/v1alpha1",
    PolicyKind.TRACING_POLICY_NAMESPACED: "cilium.io/v1alpha1",
    PolicyKind.CILIUM_NETWORK_POLICY: "cilium.io/v2",
    PolicyKind.CILIUM_CLUSTERWIDE_NETWORK_POLICY: "cilium.io/v2",
}


@dataclass(frozen=True)
class Identity:
    """The Kubernetes object a placed manifest is: the identity of its policy here."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> Identity:
        """Best effort (for messages about manifests that failed validation too)."""
        meta = manifest.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        namespace = meta.get("namespace")
        return cls(
            _text(manifest.get("apiVersion")),
            _text(manifest.get("kind")),
            _text(namespace) if namespace else None,
            _text(meta.get("name")),
        )

    @property
    def namespace_key(self) -> str:
        """The namespace as ``response_policies`` keeps it ('' for cluster-scoped kinds)."""
        return self.namespace or ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def has_nul(value: object) -> bool:
    """PostgreSQL text and jsonb cannot hold NUL: such a value can never be stored or looked up."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def _shape(manifest: Mapping[str, Any]) -> list[str]:
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in API_VERSIONS:
        allowed = ", ".join(sorted(API_VERSIONS))
        return [f"kind: a federated policy is one of {allowed} (got {kind!r})"]
    problems = []
    if manifest.get("apiVersion") != API_VERSIONS[kind]:
        problems.append(f"apiVersion: {kind} is {API_VERSIONS[kind]} (got {manifest.get('apiVersion')!r})")
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str) or not meta["name"]:
        problems.append("metadata.name: a non-empty string is required")
    if has_nul(manifest):
        problems.append("the manifest contains a NUL character (\\u0000), which cannot be stored")
    return problems


def is_enforcing(manifest: Mapping[str, Any]) -> bool:
    """Whether any selector of any hook acts (kills, overrides, signals) rather than observes."""
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping):
        return False
    for hook_kind in HOOK_KINDS:
        for hook in _list(spec.get(hook_kind)):
            for selector in _list(hook.get("selectors") if isinstance(hook, Mapping) else None):
                actions = _list(selector.get("matchActions") if isinstance(selector, Mapping) else None)
                if any(isinstance(a, Mapping) and a.get("action") in ENFORCING_ACTIONS for a in actions):
                    return True
    return False


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def validate(manifest: Mapping[str, Any], checker: Checker) -> list[str]:
    """The reasons to refuse the manifest (empty: it may become a policy)."""
    problems = _shape(manifest)
    if problems:
        return problems
    body = dict(manifest)
    try:
        result = checker(body)
    except Exception as exc:  # a validator bug must refuse one manifest, not stop the stream
        log.exception("the policy checker failed on a placed manifest", identity=str(Identity.of(body)))
        return [f"the policy checker failed: {type(exc).__name__}: {exc}"]
    problems = list(result.errors)
    if result.lint and body.get("kind") in TRACING_KINDS and is_enforcing(body):
        problems += [f"lint (the policy enforces): {issue}" for issue in result.lint]
    return problems
