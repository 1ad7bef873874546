"""Names, labels and annotations shared by every generated object.

Names carry no date, so a daily run updates the same objects; the date is an annotation. Label
values stay within Kubernetes' rules (≤ 63 chars, alphanumerics and ``-_.``), and every list that
could grow with the number of findings is bounded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from qcdr_common.contracts.events.v1 import SecurityEvent, Severity

from qcdr_response.policies.config import GenerationConfig

MANAGED_BY = {"app.kubernetes.io/managed-by": "qcdr"}
# Each pipeline prunes only its own objects: the CDR run must never delete, say, the threat-intel
# blocklist that another qcdr job manages.
PIPELINE_LABEL = "qcdr.io/pipeline"
CDR_PIPELINE = "cdr"
CDR_SELECTOR = {**MANAGED_BY, PIPELINE_LABEL: CDR_PIPELINE}
PART_OF = {"app.kubernetes.io/part-of": "qcdr"}
PREFIX = "qcdr.io"
MAX_ANNOTATION_ITEMS = 20

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def label_value(value: str) -> str:
    cleaned = _LABEL_VALUE_BAD.sub("-", value)[:63]
    return cleaned.strip("-_.")


def dns_name(value: str, max_len: int = 253) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    return cleaned[:max_len].rstrip("-") or "qcdr"


def max_severity(events: Iterable[SecurityEvent]) -> Severity:
    return max((e.severity for e in events), key=lambda s: s.rank, default=Severity.INFO)


def bounded_list(values: Sequence[str], limit: int) -> tuple[str, int]:
    """The first ``limit`` values (sorted, comma-joined) and how many were left out."""
    ordered = sorted(set(values))
    return ",".join(ordered[:limit]), max(0, len(ordered) - limit)


def policy_labels(
    *,
    generator: str,
    family: str,
    severity: Severity,
    action: str,
    technique: str | None,
    pipeline: str = CDR_PIPELINE,
) -> dict[str, str]:
    out = {
        **MANAGED_BY,
        **PART_OF,
        PIPELINE_LABEL: pipeline,
        f"{PREFIX}/generator": generator,
        f"{PREFIX}/family": label_value(family),
        f"{PREFIX}/severity": severity.value,
        f"{PREFIX}/action": action.lower(),
    }
    if technique:
        out[f"{PREFIX}/technique"] = label_value(technique)
    return dict(sorted(out.items()))


def policy_annotations(
    *,
    description: str,
    events: Sequence[SecurityEvent],
    config: GenerationConfig,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    categories = Counter(e.category for e in events)
    techniques = sorted({t for e in events for t in e.techniques})
    ids, omitted = bounded_list([e.id for e in events], config.max_source_ids)
    out = {
        f"{PREFIX}/description": description,
        f"{PREFIX}/finding-count": str(len(events)),
        f"{PREFIX}/categories": ",".join(
            f"{c}={n}" for c, n in sorted(categories.items())[:MAX_ANNOTATION_ITEMS]
        ),
        f"{PREFIX}/techniques": ",".join(techniques[:MAX_ANNOTATION_ITEMS]),
        f"{PREFIX}/source-ids": ids,
        f"{PREFIX}/generated-date": config.run_date.isoformat(),
        f"{PREFIX}/targets": f"tetragon>={config.tetragon_version},kernel>={config.kernel_version},"
        f"cilium>={config.cilium_version}",
    }
    if omitted:
        out[f"{PREFIX}/source-ids-omitted"] = str(omitted)
    out.update(extra or {})
    return dict(sorted(out.items()))


def object_meta(
    name: str, namespace: str | None, lbls: dict[str, str], annos: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = lbls
    meta["annotations"] = annos
    return meta
