"""A stored object of the test API server and the helpers every write path shares."""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from qcdr_common.testing.k8s import fields
from qcdr_common.testing.k8s.fields import FieldPath, ManagerKey
from qcdr_common.testing.k8s.resources import ResourceType
from qcdr_common.testing.k8s.status import StatusError, bad_request, uid_precondition_failed

# metadata the server owns: dropped from request bodies, set by the server
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

Owners = dict[ManagerKey, set[FieldPath]]
Times = dict[ManagerKey, str]


class ObjectKey(NamedTuple):
    api_version: str
    kind: str
    namespace: str | None
    name: str


@dataclass
class StoredObject:
    rt: ResourceType
    body: dict[str, Any]  # the object with server metadata, without managedFields
    owners: Owners = field(default_factory=dict)
    times: Times = field(default_factory=dict)
    # who wrote which status fields through the /status subresource (managedFields "subresource: status")
    status_owners: Owners = field(default_factory=dict)
    status_times: Times = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out = copy.deepcopy(self.body)
        out["metadata"]["managedFields"] = [
            self._entry(key, paths, self.times) for key, paths in self.owners.items()
        ] + [
            {**self._entry(key, paths, self.status_times), "subresource": "status"}
            for key, paths in self.status_owners.items()
        ]
        return out

    def _entry(self, key: ManagerKey, paths: set[FieldPath], times: Times) -> dict[str, Any]:
        manager, operation = key
        return {
            "manager": manager,
            "operation": operation,
            "apiVersion": self.rt.api_version,
            "time": times[key],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields.to_fields_v1(paths),
        }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def strip_server_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(body))
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_METADATA:
            meta.pop(key, None)
    return out


def check_uid(rt: ResourceType, old: StoredObject, body: Any) -> None:
    """A ``metadata.uid`` in an update is a precondition: it must be the stored object's."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    wanted = meta.get("uid") if isinstance(meta, dict) else None
    actual = old.body["metadata"]["uid"]
    if wanted and wanted != actual:
        raise uid_precondition_failed(rt, old.body["metadata"]["name"], str(wanted), actual)


def spec_part(rt: ResourceType, body: Mapping[str, Any]) -> dict[str, Any]:
    """What ``metadata.generation`` counts changes of: everything but metadata and, unless it is an
    ordinary field of the kind, status."""
    skipped = ("metadata",) if rt.status_is_field else ("metadata", "status")
    return {k: v for k, v in body.items() if k not in skipped}


def leaves_of(rt: ResourceType) -> fields.LeavesOf:
    """The ownable paths of a main-resource write of ``rt``."""
    return fields.leaves_with_status if rt.status_is_field else fields.leaves


def changed_times(old: Times, old_owners: Owners, owners: Owners, me: ManagerKey, at: str) -> Times:
    """Each manager's last-change time: now for the writer and for anyone whose fields changed."""
    return {k: at if k == me or old_owners.get(k) != v else old.get(k, at) for k, v in owners.items()}


def incoming(
    rt: ResourceType,
    namespace: str | None,
    url_name: str | None,
    body: Any,
    *,
    keep_status: bool = False,
    namespace_exists: Callable[[str], bool] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """A request body checked against the URL and stripped of server fields; and its resourceVersion.
    ``namespace_exists``: namespaced writes need their Namespace (404 otherwise)."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON/YAML object")
    content = copy.deepcopy(body)
    api_version, kind = content.get("apiVersion"), content.get("kind")
    if api_version and api_version != rt.api_version:
        raise bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version "
            f"({rt.api_version})"
        )
    if kind and kind != rt.kind:
        raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
    content["apiVersion"], content["kind"] = rt.api_version, rt.kind
    meta = content.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    if url_name is not None:
        if meta.get("name") and meta["name"] != url_name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({url_name})"
            )
        meta["name"] = url_name
    elif not meta.get("name") and meta.get("generateName"):
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
        meta["name"] = f"{meta['generateName']}{suffix}"
    if rt.namespaced:
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace
        if namespace_exists is not None and not namespace_exists(namespace or ""):
            raise StatusError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
    else:
        meta.pop("namespace", None)  # like a real server: ignored for cluster-scoped kinds
    rv = meta.get("resourceVersion")
    if not (keep_status or rt.status_is_field):
        # with a status subresource, writes to the main resource ignore status (the store keeps the
        # stored one); the built-in kinds here have no controllers and store none at all
        content.pop("status", None)
    return strip_server_fields(content), str(rv) if rv else None
