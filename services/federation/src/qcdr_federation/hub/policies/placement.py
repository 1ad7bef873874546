"""Which clusters a federated policy goes to: Kubernetes label-selector semantics over the hub's
(declared) cluster labels, plus names.

Rules (the contract's :class:`~qcdr_common.contracts.federation.v1.Placement`):

- ``excluded_clusters`` always wins;
- otherwise a cluster is placed when it is named in ``clusters`` or matched by ``cluster_selector``;
- neither given: no cluster at all (never everywhere by omission); an *empty* selector, given on
  purpose, selects every cluster, as in Kubernetes;
- an override with ``disabled: true`` takes its cluster out.

Selector semantics are Kubernetes' (``metav1.LabelSelector``): every ``matchLabels`` pair must be
present with that value; ``In`` needs the key present with one of the values; ``NotIn`` holds
when the key is absent or has none of the values; ``Exists`` / ``DoesNotExist`` test the key only.

Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from qcdr_common.contracts.federation.v1 import (
    CLUSTER_NAME_PATTERN,
    FederatedPolicySpec,
    LabelSelector,
    LabelSelectorRequirement,
    Placement,
    SelectorOperator,
)

from qcdr_federation.hub.policies.issues import Issue

# label syntax as the API server checks it (the hub's labels become Kubernetes-style selectors)
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def requirement_matches(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case SelectorOperator.IN:
            return present and labels[requirement.key] in requirement.values
        case SelectorOperator.NOT_IN:
            return not present or labels[requirement.key] not in requirement.values
        case SelectorOperator.EXISTS:
            return present
        case SelectorOperator.DOES_NOT_EXIST:
            return not present
    raise AssertionError(f"unhandled operator {requirement.operator!r}")  # pragma: no cover


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Every pair and every expression hold (so the empty selector matches everything)."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(requirement_matches(r, labels) for r in selector.match_expressions)


def is_placed(placement: Placement, cluster_name: str, labels: Mapping[str, str]) -> bool:
    if cluster_name in placement.excluded_clusters:
        return False
    if cluster_name in placement.clusters:
        return True
    return placement.cluster_selector is not None and selector_matches(placement.cluster_selector, labels)


def disabled_clusters(spec: FederatedPolicySpec) -> frozenset[str]:
    return frozenset(o.cluster_name for o in spec.overrides if o.disabled)


def places_on(spec: FederatedPolicySpec, cluster_name: str, labels: Mapping[str, str]) -> bool:
    """The placement selects the cluster and no override disables it there."""
    if not is_placed(spec.placement, cluster_name, labels):
        return False
    return not any(o.disabled and o.cluster_name == cluster_name for o in spec.overrides)


def placed_clusters(spec: FederatedPolicySpec, clusters: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The names (sorted) of the clusters, among ``clusters`` (name -> labels), that get the policy."""
    return sorted(name for name, labels in clusters.items() if places_on(spec, name, labels))


# --------------------------------------------------------------------------- validation


def _label_key_issues(key: str, loc: tuple[str | int, ...]) -> list[Issue]:
    prefix, slash, name = key.rpartition("/")
    if not slash:
        name = key
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return [Issue(loc, f"label key {key!r}: the prefix must be a DNS-1123 subdomain")]
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return [
            Issue(
                loc,
                f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.', starting and "
                "ending with an alphanumeric",
            )
        ]
    return []


def _label_value_issues(value: str, loc: tuple[str | int, ...]) -> list[Issue]:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return [
            Issue(
                loc,
                f"label value {value!r}: at most 63 alphanumerics, '-', '_' or '.', empty or starting and "
                "ending with an alphanumeric",
            )
        ]
    return []


def selector_issues(selector: LabelSelector, loc: tuple[str | int, ...]) -> list[Issue]:
    """What the API server would refuse in a LabelSelector (so a selector never silently matches
    nothing because of a typo)."""
    issues: list[Issue] = []
    for key, value in selector.match_labels.items():
        where = (*loc, "match_labels", key)
        issues += _label_key_issues(key, where)
        issues += _label_value_issues(value, where)
    for index, requirement in enumerate(selector.match_expressions):
        where = (*loc, "match_expressions", index)
        issues += _label_key_issues(requirement.key, (*where, "key"))
        if requirement.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN):
            if not requirement.values:
                issues.append(
                    Issue(
                        (*where, "values"), f"operator {requirement.operator.value} needs at least one value"
                    )
                )
            for i, value in enumerate(requirement.values):
                issues += _label_value_issues(value, (*where, "values", i))
        elif requirement.values:
            issues.append(Issue((*where, "values"), f"operator {requirement.operator.value} takes no values"))
    return issues


def placement_issues(spec: FederatedPolicySpec) -> list[Issue]:
    issues: list[Issue] = []
    placement = spec.placement
    if placement.cluster_selector is not None:
        issues += selector_issues(placement.cluster_selector, ("placement", "cluster_selector"))
    issues += _name_issues(placement.clusters, ("placement", "clusters"))
    issues += _name_issues(placement.excluded_clusters, ("placement", "excluded_clusters"))
    seen: dict[str, int] = {}
    for index, override in enumerate(spec.overrides):
        if override.cluster_name in seen:
            issues.append(
                Issue(
                    ("overrides", index, "cluster_name"),
                    f"cluster {override.cluster_name!r} already has an override "
                    f"(index {seen[override.cluster_name]}); merge them",
                )
            )
        seen.setdefault(override.cluster_name, index)
    return issues


_CLUSTER_NAME = re.compile(CLUSTER_NAME_PATTERN)


def _name_issues(names: Iterable[str], loc: tuple[str | int, ...]) -> list[Issue]:
    return [
        Issue((*loc, i), f"{name!r} is not a cluster name (a DNS-1123 label)")
        for i, name in enumerate(names)
        if not _CLUSTER_NAME.fullmatch(name)
    ]
