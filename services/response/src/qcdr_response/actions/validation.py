"""Strict checks on the values an action acts on. Each raises ``InvalidRequestError`` with the
field and the reason; nothing is cleaned up silently (``/var/log/../../etc/passwd`` is refused,
not turned into ``/etc/passwd`` as the original did)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from qcdr_common.contracts.actions.v1 import ActionTarget

from qcdr_response.actions.base import InvalidRequestError

CONTAINER_ID = re.compile(r"^[a-f0-9]{12,64}$")
# RFC 1123 label (namespaces, and names that must be labels) and subdomain (most object names)
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
POD_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Linux's PID_MAX_LIMIT; PID 1 (the init of a namespace) and 2 (kthreadd) are never targets
PID_MAX = 4_194_304
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


def container_id(value: str, field: str = "container_id") -> str:
    """A full or short (>= 12) lower-case hex container id; runtime prefixes
    (``docker://``, ``containerd://``, ``cri-o://``) are stripped, as pod status carries them."""
    for prefix in ("docker://", "containerd://", "cri-o://"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    if not CONTAINER_ID.fullmatch(value):
        raise InvalidRequestError(f"{field}: not a container id (12-64 lower-case hex characters)")
    return value


def dns1123_label(value: str, field: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise InvalidRequestError(f"{field}: {value!r} is not a DNS-1123 label")
    return value


def dns1123_subdomain(value: str, field: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.fullmatch(value):
        raise InvalidRequestError(f"{field}: {value!r} is not a DNS-1123 subdomain")
    return value


def pid(value: int, field: str = "pid") -> int:
    if not 2 < value <= PID_MAX:
        raise InvalidRequestError(f"{field}: {value} is not a PID an action may signal (3..{PID_MAX})")
    return value


def label_key(key: str, field: str = "label") -> str:
    """A Kubernetes label or annotation key: optional DNS-1123 prefix and a name of <= 63 chars."""
    prefix, _, name = key.rpartition("/")
    if prefix:
        dns1123_subdomain(prefix, f"{field} prefix")
    if not name or len(name) > 63 or not LABEL_NAME.fullmatch(name):
        raise InvalidRequestError(f"{field}: {key!r} is not a valid label key")
    return key


def label_value(value: str, field: str = "label value") -> str:
    if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
        raise InvalidRequestError(f"{field}: {value!r} is not a valid label value")
    return value


def container_path(value: str, field: str = "path") -> PurePosixPath:
    """An absolute path inside a container, already canonical: no ``.``/``..`` components, no
    repeated or trailing slashes, no control characters. Where it really leads (symlinks) is
    resolved later, confined to the container's root, by the node agent."""
    if not value.startswith("/"):
        raise InvalidRequestError(f"{field}: must be an absolute path")
    if _PATH_FORBIDDEN.search(value):
        raise InvalidRequestError(f"{field}: control characters are not allowed")
    parts = value.split("/")[1:]
    if value != "/" and any(p in ("", ".", "..") for p in parts):
        raise InvalidRequestError(f"{field}: {value!r} is not canonical (no '.', '..' or '//')")
    return PurePosixPath(value)


def under_roots(path: PurePosixPath, roots: tuple[str, ...], field: str = "path") -> PurePosixPath:
    """``path`` must lie under one of ``roots`` (canonical absolute paths, themselves checked)."""
    for root in roots:
        r = container_path(root, "allowed root")
        if path == r or r in path.parents:
            return path
    raise InvalidRequestError(f"{field}: {str(path)!r} is outside the allowed roots ({', '.join(roots)})")


def target_fields(target: ActionTarget) -> None:
    """The checks every action gets on whatever target fields are set."""
    if target.namespace is not None:
        dns1123_label(target.namespace, "namespace")
    if target.pod is not None:
        dns1123_subdomain(target.pod, "pod")
    if target.node is not None:
        dns1123_subdomain(target.node, "node")
    if target.owner_name is not None:
        dns1123_subdomain(target.owner_name, "owner_name")
    if target.pod_uid is not None and not POD_UID.fullmatch(target.pod_uid):
        raise InvalidRequestError("pod_uid: not a UID")
    if target.container is not None:
        dns1123_label(target.container, "container")
    if target.container_id is not None:
        container_id(target.container_id)
    if target.pid is not None:
        pid(target.pid)
    if target.path is not None:
        container_path(target.path)
    if target.binary is not None:
        container_path(target.binary, "binary")
