"""Baseline: no ``hostPort`` on any container port (unset or 0)."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers, plural
from qcdr_admission.pss.pod import Pod, integer, mappings
from qcdr_admission.pss.registry import Check, Revision, register


def host_ports_v1_0(pod: Pod) -> str | None:
    bad: list[str] = []
    ports: set[int] = set()
    for c in pod.containers:
        where = f"{c.path}.ports"
        used = False
        for index, port in enumerate(mappings(c.raw, "ports", c.path)):
            host_port = integer(port, "hostPort", f"{where}[{index}]")
            if host_port:
                used = True
                ports.add(host_port)
        if used:
            bad.append(c.name)
    if not bad:
        return None
    listed = ", ".join(str(p) for p in sorted(ports))
    return (
        f"{containers(bad)} must not bind host ports ({plural(len(ports), 'hostPort', 'hostPorts')} {listed})"
    )


register(Check("hostPorts", "baseline", (Revision(0, host_ports_v1_0),)))
