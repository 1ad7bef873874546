"""Baseline: no privileged containers (``securityContext.privileged`` unset or false)."""

from __future__ import annotations

from qcdr_admission.pss.describe import containers
from qcdr_admission.pss.pod import Pod, boolean
from qcdr_admission.pss.registry import Check, Revision, register


def privileged_v1_0(pod: Pod) -> str | None:
    bad = [c.name for c in pod.containers if boolean(c.sc, "privileged", c.sc_path) is True]
    if not bad:
        return None
    return f"{containers(bad)} must not run privileged (securityContext.privileged=true)"


register(Check("privileged", "baseline", (Revision(0, privileged_v1_0),)))
