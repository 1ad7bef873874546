"""Writing generated documents: one YAML file per seed file name, stable and diff-friendly."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from qcdr_common.contracts.policies.v1 import PolicyDocument
from qcdr_response.policies.files import HEADER, write_files

__all__ = ["HEADER", "render_files", "write_files"]


def render_files(documents: Sequence[PolicyDocument]) -> dict[str, str]:
    by_file: dict[str, list[PolicyDocument]] = defaultdict(list)
    for doc in documents:
        by_file[doc.filename].append(doc)
    out = {}
    for filename, docs in sorted(by_file.items()):
        docs.sort(key=lambda d: (d.kind, d.namespace or "", d.name))
        out[filename] = HEADER + "---\n".join(d.to_yaml() for d in docs)
    return out
