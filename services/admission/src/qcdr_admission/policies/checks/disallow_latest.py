"""No ``:latest`` image; an image with neither tag nor digest is ``latest``. A digest pins the
image whatever its tag says, so ``app:latest@sha256:…`` passes."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.images import InvalidImageReferenceError, parse_image
from qcdr_admission.policies.registry import CheckConfig, PolicyCheck, register


def run(config: CheckConfig, ctx: CheckContext) -> Sequence[str]:
    out = []
    for c, image in ctx.container_images():
        try:
            ref = parse_image(image)
        except InvalidImageReferenceError:
            out.append(f'container "{c.name}": image {image!r} is not a valid image reference')
            continue
        if ref.digest is None and ref.is_latest:
            out.append(f'container "{c.name}": image {image!r} uses the latest tag (name a version)')
    return out


register(PolicyCheck("disallow_latest", "disallowLatestTag", CheckConfig, run, "no latest tag"))
