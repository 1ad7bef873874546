"""The Pod Security Standards, baseline and restricted, versioned like upstream
pod-security-admission (``latest`` or a pinned ``v1.N``).

- :func:`evaluate` — the violations of a pod (metadata + spec) at a level and version;
- :func:`pod_spec_of` — the pod of a Pod or of a workload's pod template;
- :class:`MalformedObjectError` — the only error either raises for a wrongly shaped object.

Pure functions, no I/O: the webhook calls them per request, the ``qcdr admission check`` CLI per
manifest. The checks live one per module in :mod:`qcdr_admission.pss.checks`.
"""

from __future__ import annotations

from qcdr_admission.pss.errors import MalformedObjectError
from qcdr_admission.pss.levels import LEVELS, Level, Violation, check_ids, evaluate, evaluate_many, plan
from qcdr_admission.pss.versions import KNOWN_VERSIONS, LATEST, LATEST_MINOR, parse_version
from qcdr_admission.pss.workloads import POD_KINDS, pod_path, pod_spec_of

__all__ = [
    "KNOWN_VERSIONS",
    "LATEST",
    "LATEST_MINOR",
    "LEVELS",
    "POD_KINDS",
    "Level",
    "MalformedObjectError",
    "Violation",
    "check_ids",
    "evaluate",
    "evaluate_many",
    "parse_version",
    "plan",
    "pod_path",
    "pod_spec_of",
]
