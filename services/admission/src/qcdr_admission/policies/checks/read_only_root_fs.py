"""Every container sets ``securityContext.readOnlyRootFilesystem: true`` (ephemeral ones too)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext, quoted
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register
from qcdr_admission.pss.pod import boolean


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    bad = [
        c.name for c in ctx.pod.containers if boolean(c.sc, "readOnlyRootFilesystem", c.sc_path) is not True
    ]
    return [f"{quoted(bad)} must set securityContext.readOnlyRootFilesystem=true"] if bad else []


register(
    PolicyCheck("read_only_root_fs", "readOnlyRootFilesystem", CheckConfig, run, "read-only root filesystem")
)
