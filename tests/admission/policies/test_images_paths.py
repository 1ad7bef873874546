"""Image references and host paths: the normalisation the registry and path checks rely on."""

from __future__ import annotations

import pytest
from qcdr_admission.policies.images import InvalidImageReferenceError, parse_image, registry_of
from qcdr_admission.policies.paths import canonical, overlaps, within

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("bitnami/redis", "docker.io", "bitnami/redis", None, None),
        ("index.docker.io/nginx", "docker.io", "library/nginx", None, None),
        ("registry.example.com/app:1", "registry.example.com", "app", "1", None),
        ("Registry.Example.com/app", "registry.example.com", "app", None, None),
        ("registry.example.com:5000/team/app", "registry.example.com:5000", "team/app", None, None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/app", "localhost:5000", "app", None, None),
        ("registry.example.com.evil.io/app", "registry.example.com.evil.io", "app", None, None),
        # a first component without '.', ':' or 'localhost' is a Docker Hub namespace, not a host
        ("registry/app", "docker.io", "registry/app", None, None),
        (f"app@{DIGEST}", "docker.io", "library/app", None, DIGEST),
        (f"r.io/app:1@{DIGEST}", "r.io", "app", "1", DIGEST),
    ],
)
def test_references_normalise_like_docker(
    reference: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_image(reference)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


@pytest.mark.parametrize(
    "reference",
    ["", " nginx", "nginx ", "UPPER/app", "r.io/App", "r.io//app", "app:", "app@sha256:zz", "a b"],
)
def test_malformed_references_are_rejected(reference: str) -> None:
    if reference == "UPPER/app":  # an upper-case first component is a host, and a valid one
        assert parse_image(reference).registry == "upper"
        return
    with pytest.raises(InvalidImageReferenceError):
        parse_image(reference)


def test_registry_entries_normalise() -> None:
    assert registry_of("Index.Docker.io") == ("docker.io", "")
    assert registry_of("registry.example.com:5000/team/") == ("registry.example.com:5000", "team")
    with pytest.raises(ValueError, match="registry host"):
        registry_of("https://registry.example.com")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/var/run/docker.sock", "/run/docker.sock"),
        ("//var//run/./docker.sock", "/run/docker.sock"),
        ("/var/log/../../var/run/docker.sock", "/run/docker.sock"),
        ("/var/run/", "/run"),
        ("/var/run", "/run"),
        ("/var/running", "/var/running"),
        ("var/log", "/var/log"),
        ("/../../etc", "/etc"),
        ("", "/"),
        ("/", "/"),
    ],
)
def test_canonical_paths(path: str, expected: str) -> None:
    assert canonical(path) == expected


def test_prefixes_compare_by_component() -> None:
    assert within("/var/log/pods", "/var/log")
    assert not within("/var/logs", "/var/log")
    assert within("/etc", "/")
    assert overlaps("/run", "/run/docker.sock")
    assert not overlaps("/var", "/run/docker.sock")
