"""Baseline: AppArmor must not be switched off, through the fields (``appArmorProfile.type``:
RuntimeDefault or Localhost) or the beta annotations (empty, ``runtime/default`` or
``localhost/…``).

Upstream checks both channels from v1.0 on: the fields only exist since Kubernetes 1.30, so an
older policy version seeing them is still right to judge them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qcdr_admission.pss.describe import containers, plural, quoted, sorted_unique
from qcdr_admission.pss.pod import Pod, present, string
from qcdr_admission.pss.registry import Check, Revision, register

ALLOWED_TYPES = frozenset({"RuntimeDefault", "Localhost"})
ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


def _bad_type(sc: Mapping[str, Any], where: str) -> str | None:
    profile = present(sc, "appArmorProfile", where)
    if profile is None:
        return None
    kind = string(profile, "type", f"{where}.appArmorProfile") or ""
    return None if kind in ALLOWED_TYPES else kind


def _allowed_annotation(value: str) -> bool:
    return not value or value == "runtime/default" or value.startswith("localhost/")


def app_armor_profile_v1_0(pod: Pod) -> str | None:
    setters: list[str] = []
    values: list[str] = []
    pod_type = _bad_type(pod.sc, "spec.securityContext")
    if pod_type is not None:
        setters.append("pod")
        values.append(pod_type)
    bad: list[str] = []
    for c in pod.containers:
        kind = _bad_type(c.sc, c.sc_path)
        if kind is not None:
            bad.append(c.name)
            values.append(kind)
    if bad:
        setters.append(containers(bad))
    annotations = sorted(
        f'{key}="{value}"'
        for key, value in pod.annotations.items()
        if key.startswith(ANNOTATION_PREFIX) and not _allowed_annotation(value)
    )
    parts = []
    if setters:
        parts.append(
            f"{' and '.join(setters)} must not set securityContext.appArmorProfile.type to "
            f"{quoted(sorted_unique(values))}"
        )
    if annotations:
        parts.append(
            f"AppArmor must not be unconfined: forbidden "
            f"{plural(len(annotations), 'annotation', 'annotations')} "
            f"{', '.join(annotations)}"
        )
    return "; ".join(parts) or None


register(Check("appArmorProfile", "baseline", (Revision(0, app_armor_profile_v1_0),)))
