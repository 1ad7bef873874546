"""No privileged containers (init, regular and ephemeral)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext, quoted
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register
from qcdr_admission.pss.pod import boolean


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    bad = [c.name for c in ctx.pod.containers if boolean(c.sc, "privileged", c.sc_path) is True]
    return [f"{quoted(bad)} must not run privileged"] if bad else []


register(PolicyCheck("privileged", "privileged", CheckConfig, run, "no privileged containers"))
