"""Every image is pinned by a ``@sha256:<64 hex>`` digest (a tag alone can move)."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.images import InvalidImageReferenceError, is_pinned, parse_image
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    out = []
    for c, image in ctx.container_images():
        try:
            pinned = is_pinned(parse_image(image))
        except InvalidImageReferenceError:
            pinned = False
        if not pinned:
            out.append(f'container "{c.name}": image {image!r} must be pinned by a sha256 digest')
    return out


register(PolicyCheck("require_digests", "requireDigests", CheckConfig, run, "images pinned by digest"))
