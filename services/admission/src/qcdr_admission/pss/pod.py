"""A read-only view of a pod (metadata + spec) for the checks: typed field readers that raise
:class:`MalformedObjectError` on a wrong shape, and the containers in upstream's visiting order
(init containers, containers, ephemeral containers).

Nothing is copied: the view holds references into the caller's mappings. ``null`` is "not set",
as in the Kubernetes API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from qcdr_admission.pss.errors import MalformedObjectError

EMPTY: Mapping[str, Any] = MappingProxyType({})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def as_mapping(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        return EMPTY
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise MalformedObjectError(path, "a mapping", value)


def mapping(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``obj[key]`` as a mapping (empty when absent)."""
    value = obj.get(key)
    if value is None:
        return EMPTY
    # decoded JSON is dicts: an exact type test first, the slower ABC check for other mappings
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise MalformedObjectError(join(where, key), "a mapping", value)


def present(obj: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any] | None:
    """``obj[key]`` as a mapping, or ``None`` when absent (where "set but empty" matters)."""
    value = obj.get(key)
    if value is None or type(value) is dict or isinstance(value, Mapping):
        return value
    raise MalformedObjectError(join(where, key), "a mapping", value)


def sequence(obj: Mapping[str, Any], key: str, where: str) -> Sequence[Any]:
    value = obj.get(key)
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        return value
    raise MalformedObjectError(join(where, key), "a list", value)


def boolean(obj: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise MalformedObjectError(join(where, key), "a boolean", value)


def string(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedObjectError(join(where, key), "a string", value)


def integer(obj: Mapping[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise MalformedObjectError(join(where, key), "an integer", value)


def strings(obj: Mapping[str, Any], key: str, where: str) -> Sequence[str]:
    """A list of strings (capabilities, ...)."""
    items = sequence(obj, key, where)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise MalformedObjectError(f"{join(where, key)}[{index}]", "a string", item)
    return items


def mappings(obj: Mapping[str, Any], key: str, where: str) -> Sequence[Mapping[str, Any]]:
    """A list of mappings (ports, volumes, sysctls, ...)."""
    items = sequence(obj, key, where)
    for index, item in enumerate(items):
        if type(item) is not dict and not isinstance(item, Mapping):
            raise MalformedObjectError(f"{join(where, key)}[{index}]", "a mapping", item)
    return items


class Container:
    """One container of any of the three lists, with its securityContext (empty when unset)."""

    __slots__ = ("name", "path", "raw", "sc", "sc_path")

    def __init__(self, raw: Mapping[str, Any], path: str) -> None:
        self.raw = raw
        self.path = path
        self.name = string(raw, "name", path) or ""
        self.sc_path = f"{path}.securityContext"
        self.sc = mapping(raw, "securityContext", path)


class Pod:
    """The pod the checks look at: ``metadata``, ``spec``, the pod-level securityContext ``sc`` and
    the ``containers`` of all three lists."""

    __slots__ = ("_annotations", "containers", "metadata", "sc", "spec")

    def __init__(self, metadata: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
        self.metadata = as_mapping(metadata, "metadata")
        self.spec = as_mapping(spec, "spec")
        self.sc = mapping(self.spec, "securityContext", "spec")
        self._annotations: Mapping[str, str] | None = None
        found: list[Container] = []
        for list_name in CONTAINER_LISTS:
            items = self.spec.get(list_name)
            if items is None:
                continue
            if not isinstance(items, list | tuple):
                raise MalformedObjectError(f"spec.{list_name}", "a list", items)
            for index, item in enumerate(items):
                path = f"spec.{list_name}[{index}]"
                if not isinstance(item, Mapping):
                    raise MalformedObjectError(path, "a mapping", item)
                found.append(Container(item, path))
        self.containers: tuple[Container, ...] = tuple(found)

    @property
    def annotations(self) -> Mapping[str, str]:
        """``metadata.annotations`` (keys and values checked to be strings on first use)."""
        if self._annotations is None:
            annotations = mapping(self.metadata, "annotations", "metadata")
            for key, value in annotations.items():
                if not isinstance(key, str):
                    raise MalformedObjectError("metadata.annotations", "string keys", key)
                if not isinstance(value, str):
                    raise MalformedObjectError(f"metadata.annotations[{key}]", "a string", value)
            self._annotations = annotations
        return self._annotations

    @property
    def is_windows(self) -> bool:
        """``spec.os.name: windows`` (the restricted Linux-only checks skip such pods from v1.25)."""
        return string(mapping(self.spec, "os", "spec"), "name", "spec.os") == "windows"

    @property
    def in_user_namespace(self) -> bool:
        """``spec.hostUsers: false``: the pod runs in its own user namespace."""
        return boolean(self.spec, "hostUsers", "spec") is False
