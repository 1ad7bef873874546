"""Refuse (or warn about, with the policy's mode) pods whose images or namespace have open high or
critical findings or attack chains, as the runtime reader holds them in memory.

``images`` and ``namespace`` choose what is looked at; ``chains_only`` ignores single findings.
Before the reader has bootstrapped nothing is reported (the service is not ready until then).
"""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext, OpenIssue
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


class Config(CheckConfig):
    images: bool = True
    namespace: bool = True
    chains_only: bool = False


def _describe(issues: Sequence[OpenIssue], chains_only: bool) -> str | None:
    chosen = [i for i in issues if i.kind == "chain" or not chains_only]
    if not chosen:
        return None
    shown = ", ".join(f"{i.severity} {i.kind} {i.id}" for i in chosen[:3])
    more = f" and {len(chosen) - 3} more" if len(chosen) > 3 else ""
    return f"{shown}{more}"


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    out = []
    if config.images:
        for c, image in ctx.container_images():
            text = _describe(ctx.runtime.for_image(image), config.chains_only)
            if text:
                out.append(f'container "{c.name}": image {image!r} has open findings: {text}')
    namespace = ctx.subject.namespace
    if config.namespace and namespace:
        text = _describe(ctx.runtime.for_namespace(namespace), config.chains_only)
        if text:
            out.append(f"namespace {namespace!r} has open findings: {text}")
    return out


register(PolicyCheck("runtime_aware", "runtimeAware", Config, run, "no open high-severity findings"))
