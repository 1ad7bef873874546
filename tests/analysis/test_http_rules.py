"""``http_rules``: HTTP requests pods make, as ingest stores Hubble's L7 flows, against the shipped
rule set: each rule fires on its request and stays quiet on the look-alike next to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from qcdr_analysis.detectors import http_rules
from qcdr_analysis.http.rules import load_rules, parse_rules
from qcdr_analysis.rulefiles import RuleFileError
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_common.contracts.findings.v1 import Finding
from qcdr_ingest.events.registry import load_adapters
from qcdr_response.lifecycle.generation import ScopeGenerator, finding_to_event
from qcdr_response.policies.checks import default_checker
from qcdr_response.policies.config import GenerationConfig

from tests.ingest.events.factories import hubble_http_request as hubble_request

RULES = load_rules()


def event(url: str, **kwargs: Any) -> SecurityEvent:
    return load_adapters().get("hubble").convert(hubble_request(url, **kwargs), "prod")


def detect(url: str, **kwargs: Any) -> list[Finding]:
    return http_rules.detect([event(url, **kwargs)], RULES)


def only(url: str, **kwargs: Any) -> Finding:
    (finding,) = detect(url, **kwargs)
    return finding


IMDS_ROLE = "http://169.254.169.254/latest/meta-data/iam/security-credentials/node-role"


def test_curl_fetching_instance_credentials_is_high() -> None:
    finding = only(IMDS_ROLE + "?x=secret")
    assert finding.attributes["rules"] == ["imds-credentials-by-hand", "imds-credentials"]
    assert (finding.category, finding.severity, finding.techniques) == (
        "cloud_credentials_access",
        Severity.HIGH,
        ("T1552.005",),
    )
    assert finding.attributes["url"] == IMDS_ROLE  # no query string
    assert "secret" not in finding.explanation
    assert (finding.workload.cluster, finding.workload.namespace, finding.workload.pod) == (
        "prod",
        "shop",
        "api-1",
    )
    assert finding.network is not None
    assert str(finding.network.ip) == "169.254.169.254"


@pytest.mark.parametrize(
    ("user_agent", "severity"),
    [
        ("Go-http-client/1.1", Severity.MEDIUM),
        (None, Severity.MEDIUM),  # Hubble exported no headers: the client is unknown
        ("Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux", None),
        ("aws-sdk-go-v2/1.24.0 os/linux lang/go#1.21", None),
        ("azsdk-python-identity/1.15.0 Python/3.11", None),
    ],
)
def test_cloud_sdks_fetch_credentials_as_they_should(
    user_agent: str | None, severity: Severity | None
) -> None:
    found = detect(IMDS_ROLE, user_agent=user_agent)
    assert [f.severity for f in found] == ([severity] if severity else [])


@pytest.mark.parametrize(
    ("url", "destination", "rule"),
    [
        (
            "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
            "169.254.169.254",
            "imds-credentials-by-hand",
        ),
        (
            "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
            "169.254.169.254",
            "imds-credentials-by-hand",
        ),
        ("http://169.254.170.2/v2/credentials/8a5f0c", "169.254.170.2", "imds-credentials-by-hand"),
        ("http://169.254.169.254/latest/user-data", "169.254.169.254", "imds-user-data"),
    ],
)
def test_every_cloud_is_covered(url: str, destination: str, rule: str) -> None:
    assert only(url, destination=destination).attributes["rules"][0] == rule


def test_metadata_that_is_not_a_credential_is_quiet() -> None:
    assert detect("http://169.254.169.254/latest/meta-data/placement/region") == []
    # the credential path on another server is somebody's web application, not the metadata service
    assert detect(IMDS_ROLE.replace("169.254.169.254", "198.51.100.7"), destination="198.51.100.7") == []


@pytest.mark.parametrize(
    ("url", "kwargs", "rule", "category"),
    [
        (
            "http://10.0.0.1:8001/api/v1/namespaces/kube-system/secrets/admin-token",
            {"port": 8001},
            "kubernetes-secrets-over-http",
            "credential_access",
        ),
        (
            "http://10.0.0.9:2379/v3/kv/range",
            {"method": "POST", "port": 2379},
            "etcd-keys-over-http",
            "credential_access",
        ),
        (
            "http://10.0.0.9:2375/v1.43/containers/create",
            {"method": "POST", "port": 2375},
            "docker-engine-api-on-the-network",
            "container_escape",
        ),
        ("http://10.0.0.9:10255/pods", {"port": 10255}, "kubelet-read-only-port", "discovery"),
        (
            "http://203.0.113.5/x86_64/kinsing",
            {"destination": "203.0.113.5"},
            "script-or-binary-download",
            "ingress_tool_transfer",
        ),
        (
            "http://203.0.113.5/install.sh",
            {"destination": "203.0.113.5"},
            "script-or-binary-download",
            "ingress_tool_transfer",
        ),
    ],
)
def test_cluster_and_node_apis(url: str, kwargs: dict[str, Any], rule: str, category: str) -> None:
    finding = only(url, **{"destination": "10.0.0.9", **kwargs})
    assert (finding.attributes["rules"], finding.category) == ([rule], category)


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("http://10.0.0.1:8001/api/v1/namespaces/kube-system/pods", {"port": 8001}),
        ("http://10.0.0.9:2379/health", {"port": 2379}),
        ("http://10.0.0.9:2375/v1.43/containers/json", {"method": "GET", "port": 2375}),
        ("http://10.0.0.9:10255/healthz", {"port": 10255}),
        ("http://10.0.0.9/charts/install.sh", {}),  # the cluster's own artifact server
        ("http://203.0.113.5/docs/install.sh.html", {"destination": "203.0.113.5"}),
    ],
)
def test_look_alikes_are_quiet(url: str, kwargs: dict[str, Any]) -> None:
    assert detect(url, **{"destination": "10.0.0.9", **kwargs}) == []


def test_a_request_an_l7_policy_denied_still_counts_and_says_so() -> None:
    finding = only(IMDS_ROLE, verdict="DROPPED")
    assert "denied by an L7 policy" in finding.explanation
    assert finding.attributes["verdict"] == "DROPPED"


def test_other_events_are_not_read() -> None:
    flow = hubble_request("http://x")["flow"]
    flow["l4"]["TCP"]["flags"] = {"SYN": True}
    del flow["l7"]
    flow["Type"] = "L3_L4"
    syn = load_adapters().get("hubble").convert({"flow": flow}, "prod")
    assert syn.category == "network_flow"
    assert http_rules.detect([syn], RULES) == []


def test_the_finding_reaches_the_cloud_credentials_policy_family() -> None:
    config = GenerationConfig()
    generator = ScopeGenerator(config, default_checker(config))
    scope = generator.scope_of(finding_to_event(only(IMDS_ROLE)))
    assert scope is not None
    assert scope.family == "cloud-creds"


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ("match: {destination: [10.0.0.1/8]}", "not a CIDR"),
        ("match: {method: [get]}", "upper-case HTTP method"),
        ("match: {}", "at least one condition"),
        ("match: {path: {}}", "at least one of exact"),
        ("match: {destination_port: [0]}", "greater than or equal to 1"),
        ("match: {url: {contains: [x]}}", "Extra inputs"),
    ],
)
def test_bad_rule_files_fail_naming_the_rule(rule: str, error: str) -> None:
    text = (
        "version: 1\nrules:\n  - id: broken-rule\n    title: t\n    category: c_x\n    severity: high\n"
        f"    techniques: [T1105]\n    {rule}\n"
    )
    with pytest.raises(RuleFileError, match=error) as raised:
        parse_rules(text, "mine.yaml")
    assert "mine.yaml" in str(raised.value)
    assert "broken-rule" in str(raised.value)


def test_a_rules_file_replaces_the_shipped_set(tmp_path: Path) -> None:
    path = tmp_path / "http.yaml"
    path.write_text(
        "version: 1\nrules:\n  - id: any-post\n    title: any POST\n    category: custom\n"
        "    severity: low\n    techniques: [T1071.001]\n    match: {method: [POST]}\n"
    )
    rules = http_rules.setup(http_rules.Config(rules_file=path))
    found = http_rules.detect(
        [event("http://203.0.113.5/upload", method="POST", destination="203.0.113.5")], rules
    )
    assert [f.attributes["rules"] for f in found] == [["any-post"]]
    with pytest.raises(RuleFileError, match="cannot read"):
        http_rules.setup(http_rules.Config(rules_file=tmp_path / "missing.yaml"))
