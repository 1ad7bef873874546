"""Baseline: no Windows HostProcess containers (``windowsOptions.hostProcess`` unset or false, at
pod and container level)."""

from __future__ import annotations

from qcdr_admission.pss.describe import setters
from qcdr_admission.pss.pod import Container, Pod, boolean, mapping
from qcdr_admission.pss.registry import Check, Revision, register


def _host_process(c: Container) -> bool:
    options = mapping(c.sc, "windowsOptions", c.sc_path)
    return boolean(options, "hostProcess", f"{c.sc_path}.windowsOptions") is True


def windows_host_process_v1_0(pod: Pod) -> str | None:
    options = mapping(pod.sc, "windowsOptions", "spec.securityContext")
    pod_bad = boolean(options, "hostProcess", "spec.securityContext.windowsOptions") is True
    names = [c.name for c in pod.containers if _host_process(c)]
    if not pod_bad and not names:
        return None
    return f"{setters(pod_bad, names)} must not run as Windows HostProcess (windowsOptions.hostProcess=true)"


register(Check("windowsHostProcess", "baseline", (Revision(0, windows_host_process_v1_0),)))
