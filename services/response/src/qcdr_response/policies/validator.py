"""Shared pieces of the policy validators: the issue type and Kubernetes metadata rules.

The Tetragon and Cilium checks live in ``validator_tetragon`` and ``validator_cilium``; both
work on plain dict manifests (as parsed from YAML), never on typed models, so that anything a
generator or a human can write is checked exactly as the API server will see it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Severity = Literal["error", "warning"]


class TetragonCode(StrEnum):
    """Stable issue codes of ``validate_tracing_policy``."""

    VERSION = "QCDR-T001"  # needs a newer Tetragon (or was removed): a version error
    KERNEL = "QCDR-T002"  # needs a newer kernel: a version error
    DEPRECATED = "QCDR-T003"
    KIND = "QCDR-T010"
    NAME = "QCDR-T011"
    LABELS = "QCDR-T012"
    SCOPE = "QCDR-T013"  # namespace / hostSelector rules of the two kinds
    WORKLOAD_SELECTOR = "QCDR-T014"  # podSelector / containerSelector / hostSelector shape
    STRUCTURE = "QCDR-T015"  # unknown fields, wrong types, missing required fields
    HOOK = "QCDR-T020"
    ARG = "QCDR-T021"
    ARG_REF = "QCDR-T022"  # a filter points at an argument the hook does not declare
    OPERATOR = "QCDR-T023"
    VALUE = "QCDR-T024"
    LIMIT = "QCDR-T025"  # Tetragon's per-hook / per-selector limits
    STRING_MATCH = "QCDR-T026"  # Prefix/Postfix/SubString lengths and literal globs
    BINARIES = "QCDR-T027"
    PROCESS_FILTER = "QCDR-T028"  # matchPIDs / matchNamespaces / matchCapabilities
    ACTION = "QCDR-T030"
    RATE_LIMIT = "QCDR-T031"
    PORTABILITY = "QCDR-T040"
    SEMANTICS = "QCDR-T041"


VERSION_CODES = frozenset({TetragonCode.VERSION, TetragonCode.KERNEL})


class CiliumCode(StrEnum):
    """Stable issue codes of ``validate_cilium_policy``."""

    VERSION = "QCDR-C001"
    KIND = "QCDR-C010"
    NAME = "QCDR-C011"
    LABELS = "QCDR-C012"
    SCOPE = "QCDR-C013"
    SELECTOR = "QCDR-C014"
    STRUCTURE = "QCDR-C015"
    DENY_FIELD = "QCDR-C020"  # toFQDNs / L7 rules / authentication inside a deny rule
    DEFAULT_DENY = "QCDR-C021"  # deny rules that silently switch on default-deny
    PORT_ONLY_DENY = "QCDR-C022"  # a port denied towards every destination
    CIDR = "QCDR-C023"
    PORTS = "QCDR-C024"
    SIZE = "QCDR-C025"


@dataclass(frozen=True)
class PolicyIssue:
    """One finding about a manifest. ``code`` is stable (tests and callers match on it)."""

    severity: Severity
    path: str
    message: str
    code: str


@dataclass
class Issues:
    """Collects issues while a validator walks a manifest."""

    items: list[PolicyIssue] = field(default_factory=list)

    def error(self, path: str, code: str, message: str) -> None:
        # str(): codes are StrEnum members; issues carry plain strings (JSON-friendly).
        self.items.append(PolicyIssue("error", path, message, str(code)))

    def warn(self, path: str, code: str, message: str) -> None:
        self.items.append(PolicyIssue("warning", path, message, str(code)))


def errors(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    return [i for i in issues if i.severity == "error"]


def as_map(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def is_int(value: Any) -> bool:
    # YAML booleans are ints in Python; the API server would reject them for an integer field.
    return isinstance(value, int) and not isinstance(value, bool)


# --- Kubernetes names and labels (apimachinery validation rules) --------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_DNS_LABEL}$")
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_ANNOTATIONS_BYTES = 256 * 1024


def dns_subdomain_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > 253:
        return f"is {len(name)} characters, the limit is 253"
    if not DNS1123_SUBDOMAIN.fullmatch(name):
        return (
            f"{name!r} is not a DNS-1123 subdomain (lower-case alphanumerics, '-' and '.', "
            "starting and ending with an alphanumeric)"
        )
    return None


def dns_label_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > 63 or not DNS1123_LABEL.fullmatch(name):
        return f"{name!r} is not a DNS-1123 label (<= 63 lower-case alphanumerics or '-')"
    return None


def qualified_name_problem(key: Any) -> str | None:
    """Label and annotation keys: ``[prefix/]name`` (prefix a DNS subdomain, name <= 63 chars)."""
    if not isinstance(key, str) or not key:
        return "key must be a non-empty string"
    prefix, _, name = key.rpartition("/")
    if prefix and dns_subdomain_problem(prefix):
        return f"key {key!r}: prefix {prefix!r} is not a DNS-1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"key {key!r}: name part must be <= 63 characters of alphanumerics, '-', '_' or '.', "
            "starting and ending with an alphanumeric"
        )
    return None


def label_value_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"value {value!r} must be a string (quote it in YAML)"
    if len(value) > 63:
        return f"value {value!r} is {len(value)} characters, the limit is 63"
    if not _LABEL_VALUE.fullmatch(value):
        # The classic way to get here is an ISO timestamp: ':' is not allowed in label values.
        return (
            f"value {value!r} may only contain alphanumerics, '-', '_' and '.', "
            "and must start and end with an alphanumeric"
        )
    return None


def check_labels(labels: Any, path: str, issues: Issues, code: str) -> None:
    labels_map = as_map(labels)
    if labels is None:
        return
    if labels_map is None:
        issues.error(path, code, "labels must be a map of strings")
        return
    for key, value in labels_map.items():
        problem = qualified_name_problem(key) or label_value_problem(value)
        if problem:
            issues.error(f"{path}[{key}]", code, f"invalid label: {problem}")


def check_annotations(annotations: Any, path: str, issues: Issues, code: str) -> None:
    if annotations is None:
        return
    annotations_map = as_map(annotations)
    if annotations_map is None:
        issues.error(path, code, "annotations must be a map of strings")
        return
    total = 0
    for key, value in annotations_map.items():
        problem = qualified_name_problem(key)
        if problem:
            issues.error(f"{path}[{key}]", code, f"invalid annotation: {problem}")
        if not isinstance(value, str):
            issues.error(f"{path}[{key}]", code, "annotation values must be strings (quote them in YAML)")
            continue
        total += len(str(key)) + len(value.encode())
    if total > MAX_ANNOTATIONS_BYTES:
        issues.error(path, code, f"annotations total {total} bytes, the API server limit is 256 KiB")


def check_metadata(
    metadata: Any, issues: Issues, *, codes: Mapping[str, str], namespaced: bool, kind: str
) -> None:
    """name, labels, annotations, and namespace presence matching the object's scope.

    ``codes`` maps "name", "labels" and "namespace" to the caller's issue codes.
    """
    meta = as_map(metadata)
    if meta is None:
        issues.error("metadata", codes["name"], "metadata must be a map with at least a name")
        return
    problem = dns_subdomain_problem(meta.get("name"))
    if problem:
        issues.error("metadata.name", codes["name"], f"metadata.name {problem}")
    check_labels(meta.get("labels"), "metadata.labels", issues, codes["labels"])
    check_annotations(meta.get("annotations"), "metadata.annotations", issues, codes["labels"])
    namespace = meta.get("namespace")
    if namespaced:
        ns_problem = dns_label_problem(namespace)
        if ns_problem:
            issues.error(
                "metadata.namespace",
                codes["namespace"],
                f"{kind} is namespaced: metadata.namespace {ns_problem}"
                + (" (without it the object lands in whatever namespace the client defaults to)"),
            )
    elif namespace is not None:
        issues.error(
            "metadata.namespace",
            codes["namespace"],
            f"{kind} is cluster-scoped: metadata.namespace must not be set (it is ignored, so the "
            "object applies cluster-wide although it looks namespaced)",
        )


LABEL_SELECTOR_KEYS = frozenset({"matchLabels", "matchExpressions"})
SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


def check_label_selector(
    selector: Any, path: str, issues: Issues, code: str, *, strict_keys: bool = True
) -> None:
    """A metav1.LabelSelector: only matchLabels/matchExpressions, well-formed requirements.

    ``strict_keys`` validates label keys as Kubernetes qualified names; Cilium selectors allow
    source prefixes such as ``k8s:`` so callers turn it off there.
    """
    if selector is None:
        return
    sel = as_map(selector)
    if sel is None:
        issues.error(path, code, "must be a label selector (a map with matchLabels/matchExpressions)")
        return
    for key in sel:
        if key not in LABEL_SELECTOR_KEYS:
            hint = ""
            if key == "namespace":
                hint = (
                    ": a label selector has no namespace field; scope to a namespace with "
                    "TracingPolicyNamespaced (or a namespace label in matchLabels for Cilium)"
                )
            issues.error(f"{path}.{key}", code, f"unknown field {key!r} in a label selector{hint}")
    labels = sel.get("matchLabels")
    if labels is not None:
        labels_map = as_map(labels)
        if labels_map is None:
            issues.error(f"{path}.matchLabels", code, "matchLabels must be a map of strings")
        else:
            for key, value in labels_map.items():
                key_problem = qualified_name_problem(key) if strict_keys else None
                problem = key_problem or label_value_problem(value)
                if problem:
                    issues.error(f"{path}.matchLabels[{key}]", code, f"invalid selector label: {problem}")
    expressions = sel.get("matchExpressions")
    if expressions is None:
        return
    exprs = as_list(expressions)
    if exprs is None:
        issues.error(f"{path}.matchExpressions", code, "matchExpressions must be a list")
        return
    for i, expr in enumerate(exprs):
        epath = f"{path}.matchExpressions[{i}]"
        emap = as_map(expr)
        if emap is None or not isinstance(emap.get("key"), str):
            issues.error(epath, code, "each expression needs a string key and an operator")
            continue
        operator = emap.get("operator")
        values = emap.get("values") or []
        if operator not in SELECTOR_OPERATORS:
            issues.error(epath, code, f"operator {operator!r} is not one of {sorted(SELECTOR_OPERATORS)}")
        elif operator in ("In", "NotIn") and not values:
            issues.error(epath, code, f"operator {operator} needs a non-empty values list")
        elif operator in ("Exists", "DoesNotExist") and values:
            issues.error(epath, code, f"operator {operator} must not have values")


def selector_is_empty(selector: Any) -> bool:
    """True for ``{}`` / ``{matchLabels: {}}``: selects everything, i.e. scopes nothing."""
    sel = as_map(selector)
    if sel is None:
        return True
    return not sel.get("matchLabels") and not sel.get("matchExpressions")
