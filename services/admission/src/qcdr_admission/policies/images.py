"""Image references parsed the way containerd and docker normalise them.

``nginx`` is ``docker.io/library/nginx:latest``; the first path component is a registry host only
when it contains a ``.`` or a ``:`` or is ``localhost`` (or has an upper-case letter, which a
repository path never has); ``index.docker.io`` is ``docker.io``. Hosts compare case-insensitively
and with their port: ``registry.example.com:5000`` is another registry than
``registry.example.com``, and ``registry.example.com.evil.io`` is not ``registry.example.com``.
A reference that does not parse matches no allow-list entry (fail closed).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# distribution/reference grammar (reference.go), anchored.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class InvalidImageReferenceError(ValueError):
    """The string is not an image reference."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    registry: str  # lower-case host[:port], docker.io for Docker Hub
    repository: str  # path inside the registry (library/nginx)
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        """``registry/repository`` (no tag, no digest)."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_latest(self) -> bool:
        """Tagged ``latest``, or neither tagged nor pinned (which pulls ``latest``)."""
        return self.tag == "latest" or (self.tag is None and self.digest is None)


def _looks_like_domain(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost" or first.lower() != first


@functools.lru_cache(maxsize=4096)
def parse_image(reference: str) -> ImageRef:
    """Normalise ``reference``; raises :class:`InvalidImageReferenceError`."""
    if not reference or len(reference) > 4096 or reference != reference.strip():
        raise InvalidImageReferenceError(f"not an image reference: {reference[:80]!r}")
    first, slash, rest = reference.partition("/")
    if slash and _looks_like_domain(first):
        domain, remainder = first, rest
    else:
        domain, remainder = DOCKER_HUB, reference
    match = _REFERENCE.fullmatch(f"{domain}/{remainder}")
    if match is None or match.group("domain") is None:
        raise InvalidImageReferenceError(f"not an image reference: {reference[:80]!r}")
    registry = match.group("domain").lower()
    path = match.group("path")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return ImageRef(registry, path, match.group("tag"), match.group("digest"))


def registry_of(entry: str) -> tuple[str, str]:
    """An allow/block-list entry: ``host[:port]`` or ``host[:port]/path/prefix``, normalised.

    Returns ``(registry, repository prefix or "")``; raises ``ValueError`` for a malformed entry.
    """
    text = entry.strip().rstrip("/")
    host, _, prefix = text.partition("/")
    host = host.lower()
    if not re.fullmatch(_DOMAIN, host):
        raise ValueError(f"{entry!r} is not a registry host (host[:port][/path])")
    if host in _HUB_ALIASES:
        host = DOCKER_HUB
    if prefix and not re.fullmatch(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", prefix):
        raise ValueError(f"{entry!r}: the path part is not a repository path")
    return host, prefix


def matches(image: ImageRef, entry: tuple[str, str]) -> bool:
    """Whether ``image`` is in the registry (and under the repository prefix, by whole components)."""
    registry, prefix = entry
    if image.registry != registry:
        return False
    return not prefix or image.repository == prefix or image.repository.startswith(prefix + "/")


def is_pinned(image: ImageRef) -> bool:
    """Pinned by a sha256 digest (the only algorithm the registries and runtimes use)."""
    return image.digest is not None and _SHA256.fullmatch(image.digest) is not None
