"""The pod (a workload's pod template) carries the listed label keys, with a value if given
(``required_labels: [team]`` or ``{values: [team], equal: {env: prod}}``)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import ListConfig, PolicyCheck, register
from qcdr_admission.pss.pod import mapping


class Config(ListConfig):
    values: tuple[str, ...] = ()
    equal: dict[str, str] = Field(default_factory=dict)


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    labels = mapping(ctx.pod.metadata, "labels", "metadata")
    missing = [k for k in config.values if k not in labels]
    wrong = [f"{k}={v}" for k, v in config.equal.items() if labels.get(k) != v]
    out = []
    if missing:
        out.append(f"labels {', '.join(missing)} are required")
    if wrong:
        out.append(f"labels {', '.join(wrong)} are required")
    return out


register(PolicyCheck("required_labels", "requiredLabels", Config, run, "required labels"))
