from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

import pytest
from qcdr_common.contracts.events.v1 import SecurityEvent, Severity
from qcdr_ingest.qualys.normalize import (
    MalformedFindingError,
    MalformedRecord,
    normalize_all,
    normalize_finding,
    parse_severity,
    parse_timestamp,
)


def raw(**overrides: Any) -> dict[str, Any]:
    finding: dict[str, Any] = {
        "uuid": "0d3c1a4e-8f57-4c9b-9d8e-6a1f2b3c4d5e",
        "threatCategory": "Cloud_Credentials_Accessed_By_Network_Utility",
        "severity": 4,
        "timestamp": "2026-02-28T16:02:15.411Z",
        "resourceType": "container",
        "resourceId": "c0ffee",
        "eventMessage": "curl queried the instance metadata service",
    }
    finding.update(overrides)
    return {k: v for k, v in finding.items() if v is not ...}


def test_full_mapping() -> None:
    event = normalize_finding(
        raw(
            mitreRulesInfo={"T1552.005": {"rule": "x"}, "T1078.004": {}},
            containerName="checkout",
            containerId="containerd://" + "a" * 64,
            pod="checkout-api-7d9c6b5f4d-x2k8p",
            namespace="payments",
            deploymentName="checkout-api",
            imageName="registry.example.com/payments/checkout-api:2.14.1",
            imageDigest="sha256:" + "b" * 64,
            processName="curl",
            processPath="/usr/bin/curl",
            destinationIp="169.254.169.254",
            destinationPort=80,
        ),
        cluster="prod-eu",
    )
    assert event.id == "0d3c1a4e-8f57-4c9b-9d8e-6a1f2b3c4d5e"
    assert event.source == "qualys"
    assert event.category == "Cloud_Credentials_Accessed_By_Network_Utility"
    assert event.severity is Severity.CRITICAL
    assert event.event_time == datetime(2026, 2, 28, 16, 2, 15, 411_000, tzinfo=UTC)
    assert event.message == "curl queried the instance metadata service"
    assert event.techniques == ("T1078.004", "T1552.005")
    w = event.workload
    assert (w.cluster, w.namespace, w.pod) == ("prod-eu", "payments", "checkout-api-7d9c6b5f4d-x2k8p")
    assert (w.owner_kind, w.owner_name) == ("Deployment", "checkout-api")
    assert (w.container, w.container_id) == ("checkout", "a" * 64)
    assert (w.image, w.image_digest) == (
        "registry.example.com/payments/checkout-api:2.14.1",
        "sha256:" + "b" * 64,
    )
    assert event.process is not None
    assert (event.process.name, event.process.path) == ("curl", "/usr/bin/curl")
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (ip_address("169.254.169.254"), 80)
    assert event.raw["resourceId"] == "c0ffee"


def test_events_are_fully_valid_models() -> None:
    event = normalize_finding(raw(destinationIp="2a01:4f8::7", mitreRulesInfo=[{"technique": "T1046"}]))
    assert SecurityEvent.model_validate_json(event.model_dump_json()) == event


def test_container_name_is_never_used_as_container_id() -> None:
    event = normalize_finding(raw(containerName="checkout"))
    assert event.workload.container == "checkout"
    assert event.workload.container_id is None


def test_deployment_name_is_the_owner_not_the_cluster() -> None:
    event = normalize_finding(raw(deploymentName="checkout-api"))
    assert event.workload.cluster is None
    assert (event.workload.owner_kind, event.workload.owner_name) == ("Deployment", "checkout-api")
    assert normalize_finding(raw(clusterName="prod-us"), cluster="fallback").workload.cluster == "prod-us"


@pytest.mark.parametrize("field", ["triggeredResource", "affectedResource"])
def test_victim_resources_never_become_the_destination(field: str) -> None:
    event = normalize_finding(raw(**{field: "52.95.110.1"}))
    assert event.network is None


def test_destination_from_network_information() -> None:
    event = normalize_finding(
        raw(
            networkInformation={
                "destinationIp": "45.148.10.81",
                "destinationPort": "4444",
                "domain": "Pool.X.net.",
            }
        )
    )
    assert event.network is not None
    assert (str(event.network.ip), event.network.port, event.network.domain) == (
        "45.148.10.81",
        4444,
        "pool.x.net",
    )
    remote = normalize_finding(raw(networkInformation={"remoteIp": "fe80::1", "remotePort": 53}))
    assert remote.network is not None
    assert str(remote.network.ip) == "fe80::1"


def test_top_level_destination_wins_over_network_information() -> None:
    event = normalize_finding(raw(destinationIp="10.0.0.1", networkInformation={"destinationIp": "10.0.0.2"}))
    assert event.network is not None
    assert str(event.network.ip) == "10.0.0.1"


@pytest.mark.parametrize(
    "network",
    [
        {"destinationIp": "999.1.1.1"},
        {"destinationIp": 123},
        {"destinationPort": 70000},
        {"destinationPort": True},
        {"destinationPort": "http"},
        {"destinationPort": 0},
        {"destinationPort": "\u00b2"},  # str.isdigit() is true of "²", int() refuses it
        {"networkInformation": {"domain": "no spaces allowed.com"}},
        {"networkInformation": {"domain": "localhost"}},
        {"networkInformation": {"domain": "10.1.2.3"}},
        {"networkInformation": "not an object"},
    ],
)
def test_bad_network_values_are_dropped_not_fatal(network: dict[str, Any]) -> None:
    assert normalize_finding(raw(**network)).network is None


def test_a_zone_on_an_ipv6_destination_is_dropped_and_the_address_kept() -> None:
    # PostgreSQL's inet refuses "fe80::1%eth0", and the zone names an interface of another node
    event = normalize_finding(raw(destinationIp="fe80::1%eth0"))
    assert event.network is not None
    assert event.network.ip == ip_address("fe80::1")


def test_bad_ip_keeps_the_good_port() -> None:
    event = normalize_finding(raw(destinationIp="not-an-ip", destinationPort=31337))
    assert event.network is not None
    assert (event.network.ip, event.network.port) == (None, 31337)


def test_techniques_from_both_shapes_and_invalid_ids_are_recorded() -> None:
    result = normalize_all(
        [
            raw(uuid="a", mitreRulesInfo={"T1046": {}, "t1595": {}, "TA0007": {}}),
            raw(
                uuid="b",
                mitreRulesInfo=[{"technique": "T1059.004"}, {"technique": "T1059.4"}, "T1071", {"x": 1}],
            ),
            raw(uuid="c", mitreRulesInfo=17),
        ]
    )
    assert [e.techniques for e in result.events] == [("T1046", "T1595"), ("T1059.004", "T1071"), ()]
    assert result.invalid_techniques == {"TA0007": 1, "T1059.4": 1, "None": 1, "<int>": 1}


@pytest.mark.parametrize(
    ("value", "severity"),
    [
        (0, Severity.INFO),
        (1, Severity.LOW),
        (2, Severity.MEDIUM),
        (3, Severity.HIGH),
        (4, Severity.CRITICAL),
        (5, Severity.CRITICAL),
        (6, Severity.CRITICAL),
        (10, Severity.CRITICAL),
        ("LOW", Severity.LOW),
        ("medium", Severity.MEDIUM),
        ("High", Severity.HIGH),
        ("CRITICAL", Severity.CRITICAL),
        ("3", Severity.HIGH),
    ],
)
def test_severity_mapping(value: object, severity: Severity) -> None:
    assert parse_severity(value) is severity


def test_larger_numbers_never_mean_lower_severity() -> None:
    ranks = [parse_severity(n).rank for n in range(11)]
    assert ranks == sorted(ranks)


@pytest.mark.parametrize("value", [11, -1, "garbage", None, True, 2.5, [3], "42", "\u00b3"])
def test_bad_severities_are_malformed(value: object) -> None:
    with pytest.raises(MalformedFindingError, match="severity"):
        parse_severity(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-28T16:02:15.411Z", datetime(2026, 2, 28, 16, 2, 15, 411_000, tzinfo=UTC)),
        ("2026-02-28T16:02:15Z", datetime(2026, 2, 28, 16, 2, 15, tzinfo=UTC)),
        ("2026-02-28T18:02:15.411+02:00", datetime(2026, 2, 28, 16, 2, 15, 411_000, tzinfo=UTC)),
        ("2026-02-28T16:02:15.411123+00:00", datetime(2026, 2, 28, 16, 2, 15, 411_123, tzinfo=UTC)),
        (1772294535411, datetime(2026, 2, 28, 16, 2, 15, 411_000, tzinfo=UTC)),
        ("1772294535411", datetime(2026, 2, 28, 16, 2, 15, 411_000, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(value: object, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-02-28 16:02:15", "no time zone"),
        ("yesterday", "not ISO 8601"),
        ("2026-13-45T99:00:00Z", "not ISO 8601"),
        (1772294535, "not plausible epoch milliseconds"),
        ("\u00b9" * 13, "not ISO 8601"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
        (None, "missing"),
        (True, "must be a string"),
        ({"at": 1}, "must be a string"),
    ],
)
def test_bad_timestamps_are_malformed(value: object, reason: str) -> None:
    with pytest.raises(MalformedFindingError, match=reason):
        parse_timestamp(value)


@pytest.mark.parametrize(
    ("finding", "reason"),
    [
        (raw(uuid=...), "uuid is missing"),
        (raw(uuid=""), "uuid is missing"),
        (raw(uuid="   "), "uuid is missing or empty"),
        (raw(uuid=42), "uuid is not a string"),
        (raw(uuid="x" * 201), "id"),
        (raw(threatCategory=...), "threatCategory is missing"),
        (raw(threatCategory=""), "threatCategory is missing"),
        (raw(threatCategory=["Execution"]), "threatCategory is missing"),
        (raw(severity="garbage"), "unknown severity"),
        (raw(timestamp="not-a-time"), "not ISO 8601"),
        (raw(pod=5), "pod must be a string"),
        (raw(namespace=["a"]), "namespace must be a string"),
        (raw(eventMessage={"text": "x"}), "eventMessage must be a string"),
    ],
)
def test_malformed_findings(finding: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedFindingError, match=reason):
        normalize_finding(finding)


@pytest.mark.parametrize(
    "labels",
    [
        {"app": "x", "io.kubernetes.pod.namespace": "payments"},
        [{"key": "app", "value": "x"}, {"key": "io.kubernetes.pod.namespace", "value": "payments"}],
        ["app=x", "io.kubernetes.pod.namespace=payments"],
    ],
)
def test_namespace_from_pod_labels(labels: object) -> None:
    assert normalize_finding(raw(podLabels=labels)).workload.namespace == "payments"


def test_namespace_field_wins_over_labels() -> None:
    finding = raw(namespace="a", podLabels={"io.kubernetes.pod.namespace": "b"})
    assert normalize_finding(finding).workload.namespace == "a"


def test_image_digest_variants() -> None:
    bare = "C" * 64
    assert normalize_finding(raw(imageSha=bare)).workload.image_digest == "sha256:" + "c" * 64
    pinned = normalize_finding(raw(imageName="nginx@sha256:" + "d" * 64)).workload
    assert pinned.image_digest == "sha256:" + "d" * 64


def test_process_name_is_derived_from_the_path() -> None:
    event = normalize_finding(raw(processPath="/usr/local/bin/xmrig"))
    assert event.process is not None
    assert event.process.name == "xmrig"
    assert normalize_finding(raw()).process is None


def test_empty_strings_are_absent_values() -> None:
    event = normalize_finding(raw(pod="", containerName="  ", eventMessage=""))
    assert (event.workload.pod, event.workload.container, event.message) == (None, None, None)


def test_normalize_all_counts_every_input() -> None:
    inputs: list[Any] = [
        raw(uuid="ok-1"),
        "junk",
        raw(uuid="bad", severity=99),
        raw(uuid=...),
        raw(uuid="ok-2"),
    ]
    result = normalize_all(inputs, cluster="c1")
    assert [e.id for e in result.events] == ["ok-1", "ok-2"]
    assert all(e.workload.cluster == "c1" for e in result.events)
    assert result.malformed == [
        MalformedRecord(1, "finding is not an object (got str)"),
        MalformedRecord("bad", "severity 99 is outside 0-10"),
        MalformedRecord(3, "uuid is missing or empty"),
    ]


def test_normalize_all_restores_the_garbage_collector() -> None:
    import gc

    assert gc.isenabled()
    normalize_all([raw(), "junk"])
    assert gc.isenabled()
