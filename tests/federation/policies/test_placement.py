"""Placement: Kubernetes label-selector semantics, names, exclusions and disabled overrides, as
tables of cases; and the selector checks that refuse what the API server would."""

from __future__ import annotations

from typing import Any

import pytest
from qcdr_common.contracts.federation.v1 import FederatedPolicySpec, LabelSelector, Placement
from qcdr_federation.hub.policies.placement import (
    is_placed,
    placed_clusters,
    placement_issues,
    selector_issues,
    selector_matches,
)

PROD_EU = {"env": "prod", "region": "eu-west-1", "tier": "gold"}
PROD_US = {"env": "prod", "region": "us-east-1"}
STAGING = {"env": "staging", "region": "eu-west-1"}
BARE: dict[str, str] = {}


def sel(**raw: Any) -> LabelSelector:
    return LabelSelector.model_validate(raw)


def expr(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        # the empty selector selects everything, labels or not
        (sel(), PROD_EU, True),
        (sel(), BARE, True),
        # matchLabels: every pair, exact value
        (sel(match_labels={"env": "prod"}), PROD_EU, True),
        (sel(match_labels={"env": "prod"}), STAGING, False),
        (sel(match_labels={"env": "prod"}), BARE, False),
        (sel(match_labels={"env": "prod", "region": "us-east-1"}), PROD_EU, False),
        (sel(match_labels={"env": "prod", "region": "us-east-1"}), PROD_US, True),
        # In: key present with one of the values
        (sel(match_expressions=[expr("region", "In", "eu-west-1", "eu-central-1")]), PROD_EU, True),
        (sel(match_expressions=[expr("region", "In", "eu-west-1")]), PROD_US, False),
        (sel(match_expressions=[expr("region", "In", "eu-west-1")]), BARE, False),
        # NotIn: absent key matches too (Kubernetes semantics)
        (sel(match_expressions=[expr("region", "NotIn", "us-east-1")]), PROD_EU, True),
        (sel(match_expressions=[expr("region", "NotIn", "us-east-1")]), PROD_US, False),
        (sel(match_expressions=[expr("region", "NotIn", "us-east-1")]), BARE, True),
        # Exists / DoesNotExist: the key only
        (sel(match_expressions=[expr("tier", "Exists")]), PROD_EU, True),
        (sel(match_expressions=[expr("tier", "Exists")]), PROD_US, False),
        (sel(match_expressions=[expr("tier", "DoesNotExist")]), PROD_EU, False),
        (sel(match_expressions=[expr("tier", "DoesNotExist")]), PROD_US, True),
        # everything must hold together
        (
            sel(match_labels={"env": "prod"}, match_expressions=[expr("region", "In", "eu-west-1")]),
            STAGING,
            False,
        ),
        (
            sel(
                match_labels={"env": "prod"},
                match_expressions=[expr("region", "In", "eu-west-1"), expr("tier", "Exists")],
            ),
            PROD_EU,
            True,
        ),
        (
            sel(
                match_labels={"env": "prod"},
                match_expressions=[expr("region", "In", "eu-west-1"), expr("tier", "DoesNotExist")],
            ),
            PROD_EU,
            False,
        ),
    ],
)
def test_selector_semantics(selector: LabelSelector, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def place(**raw: Any) -> Placement:
    return Placement.model_validate(raw)


@pytest.mark.parametrize(
    ("placement", "name", "labels", "expected"),
    [
        # neither names nor a selector: nowhere, never everywhere by omission
        (place(), "eu-1", PROD_EU, False),
        (place(excluded_clusters=["us-1"]), "eu-1", PROD_EU, False),
        # names
        (place(clusters=["eu-1"]), "eu-1", BARE, True),
        (place(clusters=["eu-1"]), "us-1", PROD_US, False),
        # a selector, and names on top of it
        (place(cluster_selector={"match_labels": {"env": "prod"}}), "us-1", PROD_US, True),
        (place(cluster_selector={"match_labels": {"env": "prod"}}), "st-1", STAGING, False),
        (place(clusters=["st-1"], cluster_selector={"match_labels": {"env": "prod"}}), "st-1", STAGING, True),
        # the empty selector, given on purpose: everywhere
        (place(cluster_selector={}), "st-1", STAGING, True),
        # exclusion wins over names and selector
        (place(clusters=["eu-1"], excluded_clusters=["eu-1"]), "eu-1", PROD_EU, False),
        (
            place(cluster_selector={"match_labels": {"env": "prod"}}, excluded_clusters=["eu-1"]),
            "eu-1",
            PROD_EU,
            False,
        ),
        (
            place(cluster_selector={"match_labels": {"env": "prod"}}, excluded_clusters=["eu-1"]),
            "us-1",
            PROD_US,
            True,
        ),
    ],
)
def test_placement_rules(placement: Placement, name: str, labels: dict[str, str], expected: bool) -> None:
    assert is_placed(placement, name, labels) is expected


def test_placed_clusters_drops_disabled_overrides() -> None:
    spec = FederatedPolicySpec.model_validate(
        {
            "template": {},
            "placement": {"cluster_selector": {"match_labels": {"env": "prod"}}, "clusters": ["st-1"]},
            "overrides": [
                {"cluster_name": "us-1", "disabled": True},
                {"cluster_name": "eu-1", "patches": []},
            ],
        }
    )
    fleet = {"eu-1": PROD_EU, "us-1": PROD_US, "st-1": STAGING, "st-2": STAGING}
    assert placed_clusters(spec, fleet) == ["eu-1", "st-1"]


@pytest.mark.parametrize(
    ("selector", "where", "fragment"),
    [
        (
            sel(match_expressions=[expr("env", "In")]),
            "match_expressions.0.values",
            "needs at least one value",
        ),
        (
            sel(match_expressions=[expr("env", "NotIn")]),
            "match_expressions.0.values",
            "needs at least one value",
        ),
        (
            sel(match_expressions=[expr("env", "Exists", "x")]),
            "match_expressions.0.values",
            "takes no values",
        ),
        (
            sel(match_expressions=[expr("env", "DoesNotExist", "x")]),
            "match_expressions.0.values",
            "takes no values",
        ),
        (sel(match_labels={"bad key!": "x"}), "match_labels.bad key!", "label key"),
        (sel(match_labels={"Example.COM/env": "x"}), "match_labels.Example.COM/env", "prefix"),
        (sel(match_labels={"env": "not ok"}), "match_labels.env", "label value"),
        (sel(match_expressions=[expr("env", "In", "-bad-")]), "match_expressions.0.values.0", "label value"),
        # a final newline once passed: "$" in a re.match pattern also matches before it
        (sel(match_labels={"env\n": "x"}), "match_labels.env\n", "label key"),
        (sel(match_labels={"example.com\n/env": "x"}), "match_labels.example.com\n/env", "prefix"),
        (sel(match_labels={"env": "prod\n"}), "match_labels.env", "label value"),
    ],
)
def test_selector_issues(selector: LabelSelector, where: str, fragment: str) -> None:
    issues = selector_issues(selector, ("s",))
    assert len(issues) == 1, issues
    assert ".".join(str(p) for p in issues[0].loc) == f"s.{where}"
    assert fragment in issues[0].msg


def test_good_selectors_have_no_issues() -> None:
    selector = sel(
        match_labels={"env": "prod", "topology.kubernetes.io/region": "eu-west-1"},
        match_expressions=[expr("tier", "In", "gold", "silver"), expr("legacy", "DoesNotExist")],
    )
    assert selector_issues(selector, ()) == []


def test_duplicate_overrides_and_bad_names_are_issues() -> None:
    spec = FederatedPolicySpec.model_validate(
        {
            "template": {},
            "placement": {"clusters": ["eu-1", "Not_A_Name", "eu-2\n"], "excluded_clusters": ["x" * 64]},
            "overrides": [{"cluster_name": "eu-1"}, {"cluster_name": "eu-1", "disabled": True}],
        }
    )
    messages = {".".join(map(str, i.loc)): i.msg for i in placement_issues(spec)}
    assert set(messages) == {
        "placement.clusters.1",
        "placement.clusters.2",  # a final newline once passed
        "placement.excluded_clusters.0",
        "overrides.1.cluster_name",
    }
    assert "already has an override (index 0)" in messages["overrides.1.cluster_name"]
