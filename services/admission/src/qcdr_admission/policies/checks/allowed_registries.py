"""Every image comes from a listed registry, compared on the exact host (and port) after docker's
normalisation; an unparseable image reference is refused."""

from __future__ import annotations

from collections.abc import Sequence

from qcdr_admission.policies.checks._registries import RegistryList
from qcdr_admission.policies.context import CheckContext
from qcdr_admission.policies.images import InvalidImageReferenceError, matches, parse_image
from qcdr_admission.policies.registry import PolicyCheck, register


def run(config: RegistryList, ctx: CheckContext) -> Sequence[str]:
    entries = config.entries()
    out = []
    for c, image in ctx.container_images():
        try:
            ref = parse_image(image)
        except InvalidImageReferenceError:
            out.append(f'container "{c.name}": image {image!r} is not a valid image reference')
            continue
        if not any(matches(ref, e) for e in entries):
            out.append(f'container "{c.name}": registry {ref.registry} of image {image!r} is not allowed')
    return out


register(PolicyCheck("allowed_registries", "allowedRegistries", RegistryList, run, "allowed registries only"))
