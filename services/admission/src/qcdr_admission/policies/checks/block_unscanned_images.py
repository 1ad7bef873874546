"""Every image is known to the Qualys Container Security image-status cache and was scanned; with
``max_severity`` set, none has vulnerabilities above it (Qualys 1..5). An unknown image is
unscanned. Before the cache's first load, every image counts as unknown (``fail_open_until_loaded``
turns that into a pass)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


class Config(CheckConfig):
    max_severity: int | None = Field(default=None, ge=1, le=5)
    fail_open_until_loaded: bool = False


def run(config: Config, ctx: CheckContext) -> Sequence[str]:
    if not ctx.images.loaded and config.fail_open_until_loaded:
        return []
    out = []
    for c, image in ctx.container_images():
        status = ctx.images.lookup(image)
        if status is None:
            out.append(f'container "{c.name}": image {image!r} is unknown to Qualys (not scanned)')
        elif not status.scanned:
            out.append(f'container "{c.name}": image {image!r} has not been scanned')
        elif (
            config.max_severity is not None
            and status.max_severity is not None
            and status.max_severity > config.max_severity
        ):
            out.append(
                f'container "{c.name}": image {image!r} has severity {status.max_severity} '
                f"vulnerabilities (allowed up to {config.max_severity})"
            )
    return out


register(PolicyCheck("block_unscanned_images", "blockUnscannedImages", Config, run, "scanned images only"))
