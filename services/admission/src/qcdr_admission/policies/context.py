"""What a policy check sees: the subject, the pod (typed readers from the PSS engine) and
read-only views of the in-memory state that some checks need (image status, runtime findings).

The views are snapshots answered from memory; a check never does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qcdr_admission.engine import Subject
from qcdr_admission.pss.pod import Container, Pod, string


@dataclass(frozen=True, slots=True)
class ImageStatus:
    """What ingest knows about one image from the Qualys Container Security API."""

    key: str  # "sha256:..." or "registry/repository:tag"
    scanned: bool
    max_severity: int | None  # Qualys 1..5; None when no vulnerabilities are reported


class ImageStatusView(Protocol):
    @property
    def loaded(self) -> bool: ...

    def lookup(self, image: str) -> ImageStatus | None:
        """The status of an image reference (by its digest when pinned, else by name and tag)."""
        ...


@dataclass(frozen=True, slots=True)
class OpenIssue:
    """An open high or critical finding or chain the runtime reader holds."""

    id: str
    kind: str  # "chain" or the finding kind
    severity: str
    title: str


class RuntimeView(Protocol):
    @property
    def ready(self) -> bool: ...

    def for_image(self, image: str) -> Sequence[OpenIssue]: ...

    def for_namespace(self, namespace: str) -> Sequence[OpenIssue]: ...


class _NoImages:
    loaded = False

    def lookup(self, image: str) -> ImageStatus | None:
        return None


class _NoRuntime:
    ready = False

    def for_image(self, image: str) -> Sequence[OpenIssue]:
        return ()

    def for_namespace(self, namespace: str) -> Sequence[OpenIssue]:
        return ()


NO_IMAGES: ImageStatusView = _NoImages()
NO_RUNTIME: RuntimeView = _NoRuntime()


@dataclass(slots=True)
class CheckContext:
    subject: Subject
    pod: Pod
    images: ImageStatusView = NO_IMAGES
    runtime: RuntimeView = NO_RUNTIME
    _images: list[tuple[Container, str]] | None = field(default=None, repr=False)

    def container_images(self) -> list[tuple[Container, str]]:
        """(container, image) for every container of the three lists that names an image."""
        if self._images is None:
            self._images = []
            for c in self.pod.containers:
                image = string(c.raw, "image", c.path)
                if image:
                    self._images.append((c, image))
        return self._images


def quoted(names: Sequence[str]) -> str:
    """``container "a"`` / ``containers "a", "b"``."""
    unique = list(dict.fromkeys(names))
    word = "container" if len(unique) == 1 else "containers"
    return f"{word} " + ", ".join(f'"{n}"' for n in unique)
