"""Where the analysis engine's anomaly and drift findings land among the policy families."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_response.lifecycle.generation import ScopeGenerator, finding_to_event
from qcdr_response.policies.config import GenerationConfig
from qcdr_response.policies.families.behaviour_anomaly import no_policy_reason
from qcdr_response.policies.generate import PolicyGenerator

# (category, typical techniques) -> family, None = deliberately no policy
EXPECTED: list[tuple[str, tuple[str, ...], str | None]] = [
    ("anomaly.unknown_process", ("T1059",), "behaviour-anomaly"),
    ("anomaly.unknown_process", (), "behaviour-anomaly"),
    ("anomaly.unusual_parent", ("T1059",), "behaviour-anomaly"),
    # without the family this went to reverse-shell (T1071), whose policy ignores the destination
    ("anomaly.unknown_destination", ("T1071",), "behaviour-anomaly"),
    ("anomaly.unknown_destination", ("T1059.004", "T1071"), "behaviour-anomaly"),
    ("anomaly.sensitive_file", ("T1552.001",), "credential-files"),
    ("anomaly.unknown_file", (), None),
    ("drift.new_executable", ("T1059",), "drift"),
    ("drift.modified_executable", ("T1036.005",), "drift"),
    ("drift.package_manager", (), "drift"),
    ("drift.binary_dir_write", (), "drift"),
    ("anomaly.rate", (), None),
    ("anomaly.trend", (), None),
]


def _finding(category: str, techniques: tuple[str, ...]) -> Finding:
    kind = "drift" if category.startswith("drift.") else "anomaly"
    return Finding.model_validate(
        {
            "id": f"f-{category}-{'-'.join(techniques)}",
            "kind": kind,
            "detector": "drift" if kind == "drift" else "behaviour_profile",
            "category": category,
            "severity": "medium",
            "techniques": techniques,
            "event_time": datetime(2026, 3, 1, 12, tzinfo=UTC),
            "workload": {"namespace": "shop", "owner_kind": "Deployment", "owner_name": "web"},
            "process": {"path": "/usr/local/bin/helper", "parent_path": "/usr/sbin/nginx"},
            "network": {"ip": "203.0.113.7", "port": 8443},
        }
    )


@pytest.mark.parametrize(("category", "techniques", "family"), EXPECTED)
def test_each_category_routes_to_its_family(
    category: str, techniques: tuple[str, ...], family: str | None
) -> None:
    event = finding_to_event(_finding(category, techniques))
    assert ScopeGenerator(GenerationConfig()).family_of(event) == family


@pytest.mark.parametrize("category", ["anomaly.rate", "anomaly.trend", "anomaly.unknown_file"])
def test_no_policy_categories_are_unmapped_with_a_reason_not_dropped(category: str) -> None:
    result = PolicyGenerator(GenerationConfig()).generate([finding_to_event(_finding(category, ()))])
    assert result.documents == []
    assert result.refusals == []
    assert result.unmapped[category].count == 1
    assert category in result.unmapped[category].reason
    reason = no_policy_reason(category)
    assert reason is not None
    assert reason.startswith("no policy:")


def test_categories_with_a_policy_have_no_no_policy_reason() -> None:
    for category, _, family in EXPECTED:
        assert (no_policy_reason(category) is None) == (family is not None), category
