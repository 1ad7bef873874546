"""Baseline from v1.34: probes and lifecycle handlers must not name a ``host`` (an HTTP or TCP
probe aimed at another host turns the kubelet into a proxy)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_admission.pss.describe import containers, plural, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, mapping, string
from qcdr_admission.pss.registry import Check, Revision, register

PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
HANDLERS = ("postStart", "preStop")
ACTIONS = ("httpGet", "tcpSocket")


def _hosts(handler: Mapping[str, Any], where: str) -> list[str]:
    if not handler:
        return []
    found = []
    for action in ACTIONS:
        if handler.get(action) is None:
            continue
        host = string(mapping(handler, action, where), "host", f"{where}.{action}")
        if host:
            found.append(host)
    return found


def host_probes_and_host_lifecycle_v1_34(pod: Pod) -> str | None:
    bad: list[str] = []
    hosts: list[str] = []
    for c in pod.containers:
        found: list[str] = []
        # paths are only formatted for what is there: most containers set one or two probes
        for probe in PROBES:
            if c.raw.get(probe) is not None:
                found += _hosts(mapping(c.raw, probe, c.path), f"{c.path}.{probe}")
        lifecycle = mapping(c.raw, "lifecycle", c.path)
        for handler in HANDLERS:
            if lifecycle.get(handler) is not None:
                found += _hosts(
                    mapping(lifecycle, handler, f"{c.path}.lifecycle"), f"{c.path}.lifecycle.{handler}"
                )
        if found:
            bad.append(c.name)
            hosts += found
    if not bad:
        return None
    hosts = sorted_unique(hosts)
    return (
        f"{containers(bad)} must not aim probes or lifecycle handlers at another host "
        f"({plural(len(hosts), 'host', 'hosts')} {quoted(hosts)})"
    )


register(
    Check("hostProbesAndHostLifecycle", "baseline", (Revision(34, host_probes_and_host_lifecycle_v1_34),))
)
