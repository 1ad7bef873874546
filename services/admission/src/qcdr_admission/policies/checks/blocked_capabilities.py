"""Containers may not add the listed capabilities. Names compare case-insensitively and with or
without ``CAP_``; adding ``ALL`` adds every one of them."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import ListConfig, PolicyCheck, register
from qcdr_admission.pss.pod import mapping, strings


def normal(name: str) -> str:
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


class Config(ListConfig):
    @field_validator("values")
    @classmethod
    def _normal(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normal(v) for v in values)


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    blocked = set(config.values)
    out = []
    for c in ctx.pod.containers:
        caps = mapping(c.sc, "capabilities", c.sc_path)
        added = {normal(a) for a in strings(caps, "add", f"{c.sc_path}.capabilities")}
        hits = sorted(blocked if "ALL" in added else added & blocked)
        if hits:
            out.append(f'container "{c.name}" must not add capabilities {", ".join(hits)}')
    return out


register(PolicyCheck("blocked_capabilities", "blockedCapabilities", Config, run, "no blocked capabilities"))
