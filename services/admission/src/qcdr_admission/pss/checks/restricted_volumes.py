"""Restricted: only the volume types that need no host access or privilege: configMap, csi,
downwardAPI, emptyDir, ephemeral, image, persistentVolumeClaim, projected, secret. Replaces
baseline's ``hostPathVolumes`` at the restricted level.

``image`` volumes are allowed at every version, as upstream patched them into its single v1.0
revision. A volume with no source at all is an ``emptyDir`` once the API server has defaulted it.
"""

from __future__ import annotations

from qcdr_admission.pss.describe import plural, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, mappings, string
from qcdr_admission.pss.registry import Check, Revision, register

ALLOWED = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "image",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


def restricted_volumes_v1_0(pod: Pod) -> str | None:
    bad: list[str] = []
    kinds: list[str] = []
    for index, volume in enumerate(mappings(pod.spec, "volumes", "spec")):
        name = string(volume, "name", f"spec.volumes[{index}]") or ""
        sources = [key for key, value in volume.items() if key != "name" and value is not None]
        if not sources or any(source in ALLOWED for source in sources):
            continue
        bad.append(name)
        kinds.extend(str(source) for source in sources)
    if not bad:
        return None
    kinds = sorted_unique(kinds)
    return (
        f"{plural(len(bad), 'volume', 'volumes')} {quoted(bad)} must not use "
        f"{plural(len(kinds), 'the restricted volume type', 'the restricted volume types')} {quoted(kinds)}"
    )


register(
    Check(
        "restrictedVolumes",
        "restricted",
        (Revision(0, restricted_volumes_v1_0, overrides=("hostPathVolumes",)),),
    )
)
