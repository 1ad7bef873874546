"""Deterministic demo findings shaped like Qualys CDR output.

``generate_findings(count, seed, now)`` returns the same list for the same arguments (stdlib
``random.Random`` with a fixed seed; no clock, no hash randomisation). Findings follow the
QCR001-QCR040 catalog, spread over the 24 hours before ``now``, across several namespaces and
Deployments with realistic pod names and image digests.

Network indicators are deliberately mixed so that later filtering has something to do:
documentation ranges (which the IOC filter drops), other public addresses (arbitrary picks for
the demo: they say nothing about whoever holds them), private, loopback, link-local, CGNAT, the
cloud metadata addresses (v4 and v6), public and internal IPv6, domains, attacker-favoured ports
(4444, 3333, 31337, ...) and harmless ones (443, 53). ``triggeredResource`` sometimes names a
public address of the *victim*, which must never become an indicator.

About ``malformed_ratio`` of the records are broken on purpose (no uuid, bad timestamp, garbage
severity, not an object, ...) so that malformed counting is exercised end to end.

Fields beyond the ones the original read (``namespace``, ``containerId``, ``imageDigest``,
``networkInformation.destinationIp``, ``clusterName``...) are the same assumptions the API double
documents.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from qcdr_ingest.qualys.catalog import (
    C2,
    CATALOG,
    CLOUD_CREDS,
    SCANNING,
    SUSPICIOUS_NET,
    CatalogEntry,
)

DEFAULT_COUNT = 600
DEFAULT_SEED = 20260109
WINDOW = timedelta(hours=24)
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated name suffixes

# (namespace, deployment, container, image)
_WORKLOADS = (
    ("payments", "checkout-api", "checkout", "registry.example.com/payments/checkout-api:2.14.1"),
    ("payments", "ledger-worker", "worker", "registry.example.com/payments/ledger-worker:1.9.0"),
    ("storefront", "web-frontend", "nginx", "docker.io/library/nginx:1.27.2"),
    ("storefront", "catalog-svc", "catalog", "ghcr.io/acme/catalog-svc:0.42.0"),
    ("data-pipeline", "etl-runner", "runner", "registry.example.com/data/etl-runner:5.3.0"),
    ("data-pipeline", "kafka-connect", "connect", "docker.io/confluentinc/cp-kafka-connect:7.6.1"),
    ("ml-serving", "model-gateway", "gateway", "registry.example.com/ml/model-gateway:0.9.3"),
    ("ci", "build-agent", "agent", "registry.example.com/ci/build-agent:2024.11"),
    ("monitoring", "grafana", "grafana", "docker.io/grafana/grafana:11.2.0"),
    ("default", "legacy-cron", "cron", "docker.io/library/busybox:1.36"),
    (
        "kube-system",
        "metrics-server",
        "metrics-server",
        "registry.k8s.io/metrics-server/metrics-server:v0.7.2",
    ),
)

DOC_IPS = ("192.0.2.44", "198.51.100.23", "203.0.113.77", "2001:db8::bad:1")
PUBLIC_IPS = (
    "45.148.10.81",
    "91.92.109.44",
    "185.196.8.213",
    "5.42.92.61",
    "141.98.10.29",
    "194.26.192.70",
    "2a01:4f8:c17:3d2a::7",
)
INTERNAL_IPS = ("10.0.3.17", "172.20.1.5", "192.168.1.20", "127.0.0.1", "100.64.0.7", "::1", "fe80::a8f3:1")
IMDS_IPS = ("169.254.169.254", "fd00:ec2::254")
DOMAINS = ("xmr.pool-demo.net", "cdn-sync.badnet-demo.com", "api.telemetry-demo.ru", "paste-drop-demo.io")
SUSPICIOUS_PORTS = (4444, 3333, 31337, 1337, 5555, 6666, 8443, 14444)
VICTIM_IPS = ("52.95.110.1", "198.51.100.200", "10.244.7.12")

# Heavier weights for the two categories seen in the original's real run.
_PLUS_TWO = timezone(timedelta(hours=2))

_WEIGHTS = tuple(6 if e.category == CLOUD_CREDS else 4 if e.category == SCANNING else 1 for e in CATALOG)


@dataclass(frozen=True, slots=True)
class _Pod:
    namespace: str
    deployment: str
    container: str
    image: str
    digest: str
    name: str
    container_id: str
    ip: str


def _pods(rng: random.Random) -> list[_Pod]:
    pods: list[_Pod] = []
    for namespace, deployment, container, image in _WORKLOADS:
        digest = hashlib.sha256(image.encode()).hexdigest()
        template_hash = "".join(rng.choice(_POD_ALPHABET) for _ in range(10))
        for _ in range(rng.randint(2, 4)):
            suffix = "".join(rng.choice(_POD_ALPHABET) for _ in range(5))
            pods.append(
                _Pod(
                    namespace=namespace,
                    deployment=deployment,
                    container=container,
                    image=image,
                    digest=digest,
                    name=f"{deployment}-{template_hash}-{suffix}",
                    container_id=f"{rng.getrandbits(256):064x}",
                    ip=f"10.244.{rng.randint(0, 15)}.{rng.randint(2, 254)}",
                )
            )
    return pods


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _timestamp(rng: random.Random, moment: datetime) -> Any:
    # Mostly the documented format; a few other valid spellings the normalizer must accept.
    roll = rng.random()
    if roll < 0.04:
        return int(moment.timestamp() * 1000)
    if roll < 0.07:
        return moment.isoformat()
    if roll < 0.09:
        return moment.astimezone(_PLUS_TWO).isoformat(timespec="milliseconds")
    return _iso(moment)


def _network(rng: random.Random, entry: CatalogEntry) -> dict[str, Any]:
    category = entry.category
    ip: str | None = None
    port: int | None = rng.choice(entry.ports) if entry.ports else None
    domain: str | None = None
    if category == CLOUD_CREDS:
        ip = rng.choice(IMDS_IPS + ("169.254.169.254",) * 4)
        if "metadata.google.internal" in entry.destinations and rng.random() < 0.5:
            domain = "metadata.google.internal"
    elif entry.destinations:
        ip = rng.choice([d for d in entry.destinations if d[0].isdigit()] or ["10.96.0.1"])
        domain = next((d for d in entry.destinations if not d[0].isdigit()), None)
    elif category in (C2, SUSPICIOUS_NET, "Crypto_Mining"):
        ip = rng.choice(PUBLIC_IPS * 3 + DOC_IPS + INTERNAL_IPS)
        port = port if port is not None and rng.random() < 0.6 else rng.choice((*SUSPICIOUS_PORTS, 443, 53))
        domain = rng.choice(DOMAINS) if rng.random() < 0.4 else None
    elif category == SCANNING or entry.id == "QCR037":
        ip = rng.choice(INTERNAL_IPS[:3] + DOC_IPS[:2] + PUBLIC_IPS[:2])
        port = port or rng.choice((22, 80, 443, 3306, 6379))
    else:
        return {}
    fields: dict[str, Any] = {}
    info: dict[str, Any] = {"protocol": "TCP" if port != 53 else "UDP"}
    # Both places the double may carry a destination, so both code paths get exercised.
    if rng.random() < 0.5:
        fields["destinationIp"], fields["destinationPort"] = ip, port
    else:
        info["destinationIp"], info["destinationPort"] = ip, port
    if domain:
        info["domain"] = domain
    fields["networkInformation"] = info
    return fields


def _finding(rng: random.Random, entry: CatalogEntry, pod: _Pod, moment: datetime) -> dict[str, Any]:
    process = rng.choice(entry.processes) if entry.processes else "sh"
    path = f"/usr/bin/{process}"
    severity = entry.severity
    if severity == 4 and rng.random() < 0.2:
        severity = 5
    elif severity == 2 and rng.random() < 0.15:
        severity = 1
    techniques = list(entry.techniques)
    mitre: Any = {t: {"rule": entry.id} for t in techniques}
    if rng.random() < 0.15:
        mitre = [{"technique": t} for t in techniques]
    if rng.random() < 0.03:
        mitre = {**{t: {} for t in techniques}, "TA0006": {}}  # a tactic id, not a technique
    finding: dict[str, Any] = {
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "threatCategory": entry.category,
        "severity": severity,
        "timestamp": _timestamp(rng, moment),
        "resourceType": "container",
        "resourceId": pod.container_id,
        "eventMessage": f"{entry.title} ({entry.id}): {process} in {pod.namespace}/{pod.name}",
        "mitreRulesInfo": mitre,
        "containerName": pod.container,
        "containerId": pod.container_id if rng.random() < 0.7 else f"containerd://{pod.container_id}",
        "pod": pod.name,
        "deploymentName": pod.deployment,
        "imageName": pod.image,
        "processName": process,
        "processPath": path,
        "syscall": entry.syscalls[0],
    }
    if rng.random() < 0.8:
        finding["imageDigest"] = f"sha256:{pod.digest}"
    else:
        finding["imageSha"] = pod.digest
    if rng.random() < 0.85:
        finding["namespace"] = pod.namespace
    else:
        finding["podLabels"] = {"app": pod.deployment, "io.kubernetes.pod.namespace": pod.namespace}
    finding.update(_network(rng, entry))
    if rng.random() < 0.2:
        finding["triggeredResource"] = rng.choice((*VICTIM_IPS, pod.ip))
        finding["affectedResource"] = pod.name
    return finding


def _break(rng: random.Random, finding: dict[str, Any], kind: int) -> Any:
    """A malformed variant; ``kind`` cycles so every flavour appears."""
    broken = dict(finding)
    match kind % 8:
        case 0:
            del broken["uuid"]
        case 1:
            broken["uuid"] = ""
        case 2:
            broken["timestamp"] = rng.choice(("yesterday", "2026-13-45T99:00:00Z", "not-a-time"))
        case 3:
            broken["severity"] = rng.choice(("garbage", 42, [3]))
        case 4:
            return f"corrupted-record-{finding['uuid'][:8]}"
        case 5:
            del broken["threatCategory"]
        case 6:
            broken["timestamp"] = _naive(finding)
        case _:
            return [finding["uuid"], finding["threatCategory"]]
    return broken


def _naive(finding: dict[str, Any]) -> str:
    # A timestamp without a zone: readable, but which zone is it in? Malformed by design.
    return (
        "2026-01-09 12:00:00" if not isinstance(finding.get("timestamp"), str) else finding["timestamp"][:19]
    )


def generate_findings(
    count: int = DEFAULT_COUNT,
    seed: int = DEFAULT_SEED,
    now: datetime | None = None,
    *,
    malformed_ratio: float = 0.02,
) -> list[Any]:
    """``count`` findings in the 24 h before ``now`` (default: this hour), ~2 % malformed."""
    if count < 0:
        raise ValueError("count must not be negative")
    end = (now or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)).astimezone(UTC)
    rng = random.Random(seed)
    pods = _pods(rng)
    window_ms = int(WINDOW.total_seconds() * 1000)
    findings: list[Any] = []
    previous: tuple[_Pod, datetime] | None = None
    for _ in range(count):
        entry = rng.choices(CATALOG, weights=_WEIGHTS)[0]
        if previous is not None and rng.random() < 0.2:
            # Attacks come in bursts: the same pod again, seconds to a minute later.
            pod, moment = previous[0], previous[1] + timedelta(milliseconds=rng.randint(500, 90_000))
            moment = min(moment, end - timedelta(milliseconds=rng.randint(1, 5_000)))
        else:
            pod = rng.choice(pods)
            moment = end - timedelta(milliseconds=rng.randint(1, window_ms))
        previous = (pod, moment)
        findings.append(_finding(rng, entry, pod, moment))
    broken = sorted(rng.sample(range(count), round(count * malformed_ratio))) if count else []
    for kind, index in enumerate(broken):
        findings[index] = _break(rng, findings[index], kind)
    return findings
