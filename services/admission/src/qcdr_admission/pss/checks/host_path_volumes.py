"""Baseline: no ``hostPath`` volumes (restricted replaces this with ``restrictedVolumes``)."""

from __future__ import annotations

from qcdr_admission.pss.describe import plural, quoted
from qcdr_admission.pss.pod import Pod, mappings, present, string
from qcdr_admission.pss.registry import Check, Revision, register


def host_path_volumes_v1_0(pod: Pod) -> str | None:
    bad = []
    for index, volume in enumerate(mappings(pod.spec, "volumes", "spec")):
        where = f"spec.volumes[{index}]"
        if present(volume, "hostPath", where) is not None:
            bad.append(string(volume, "name", where) or "")
    if not bad:
        return None
    return f"{plural(len(bad), 'volume', 'volumes')} {quoted(bad)} must not mount host paths (hostPath)"


register(Check("hostPathVolumes", "baseline", (Revision(0, host_path_volumes_v1_0),)))
