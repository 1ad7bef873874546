"""The test API server's in-memory object store: CRUD, optimistic concurrency, server-side apply."""

from __future__ import annotations

import copy
import secrets
import string
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from qcdr_common.testing.k8s import fields
from qcdr_common.testing.k8s.fields import FieldPath, ManagerKey
from qcdr_common.testing.k8s.resources import ResourceType
from qcdr_common.testing.k8s.selectors import FieldRequirement, Requirement
from qcdr_common.testing.k8s.status import (
    StatusError,
    apply_conflict,
    bad_request,
    details,
    invalid,
    not_found,
    rv_conflict,
    uid_precondition_failed,
)
from qcdr_common.testing.schemas import Issue, ManifestValidator

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


class ObjectKey(NamedTuple):
    api_version: str
    kind: str
    namespace: str | None
    name: str


@dataclass
class StoredObject:
    rt: ResourceType
    body: dict[str, Any]  # the object with server metadata, without managedFields
    owners: dict[ManagerKey, set[FieldPath]] = field(default_factory=dict)
    times: dict[ManagerKey, str] = field(default_factory=dict)

    def render(self) -> dict[str, Any]:
        out = copy.deepcopy(self.body)
        out["metadata"]["managedFields"] = [
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": self.rt.api_version,
                "time": self.times[(manager, operation)],
                "fieldsType": "FieldsV1",
                "fieldsV1": fields.to_fields_v1(paths),
            }
            for (manager, operation), paths in self.owners.items()
        ]
        return out


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def strip_server_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(body))
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in SERVER_METADATA:
            meta.pop(key, None)
    return out


def _check_uid(rt: ResourceType, old: StoredObject, body: Any) -> None:
    """A ``metadata.uid`` in an update is a precondition: it must be the stored object's."""
    meta = body.get("metadata") if isinstance(body, dict) else None
    wanted = meta.get("uid") if isinstance(meta, dict) else None
    actual = old.body["metadata"]["uid"]
    if wanted and wanted != actual:
        raise uid_precondition_failed(rt, old.body["metadata"]["name"], str(wanted), actual)


def _spec_part(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("metadata", "status")}


class Store:
    """Objects by (group, kind, namespace, name); every public method is atomic."""

    def __init__(
        self, validator: ManifestValidator | None = None, *, require_namespaces: bool = False
    ) -> None:
        self.validator = validator
        self.require_namespaces = require_namespaces
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str, str], StoredObject] = {}
        self._rv = 1000

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self._lock:
            return self._existing(rt, namespace, name).render()

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: Sequence[Requirement] = (),
        field_reqs: Sequence[FieldRequirement] = (),
    ) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            items = []
            for (group, kind, ns, _), obj in sorted(self._objects.items()):
                if (group, kind) != (rt.group, rt.kind) or (namespace is not None and ns != namespace):
                    continue
                obj_labels = obj.body["metadata"].get("labels") or {}
                if all(r.matches(obj_labels) for r in labels) and all(
                    f.matches(obj.body) for f in field_reqs
                ):
                    items.append(obj.render())
            return items, self.resource_version

    def snapshot(self) -> dict[ObjectKey, dict[str, Any]]:
        with self._lock:
            return {
                ObjectKey(obj.rt.api_version, obj.rt.kind, ns or None, name): obj.render()
                for (_, _, ns, name), obj in sorted(self._objects.items())
            }

    def owners(self, rt: ResourceType, namespace: str | None, name: str) -> dict[ManagerKey, set[str]]:
        """Who owns which fields, as ``.spec.x`` strings (for tests)."""
        with self._lock:
            obj = self._existing(rt, namespace, name)
            return {k: {fields.display(p) for p in v} for k, v in obj.owners.items()}

    # ------------------------------------------------------------------ writes

    def create(
        self, rt: ResourceType, namespace: str | None, body: Any, manager: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            content, _ = self._incoming(rt, namespace, None, body)
            name = content["metadata"]["name"]
            if self._key(rt, namespace, name) in self._objects:
                raise StatusError(
                    409, "AlreadyExists", f'{rt.qualified_plural} "{name}" already exists', details(rt, name)
                )
            owners = fields.update(None, content, {}, (manager, "Update"))
            return self._commit(rt, namespace, None, content, owners, (manager, "Update"), dry_run)

    def replace(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        manager: str,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        with self._lock:
            old = self._existing(rt, namespace, name)
            _check_uid(rt, old, body)
            content, rv = self._incoming(rt, namespace, name, body)
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            me = (manager, "Update")
            owners = fields.update(strip_server_fields(old.body), content, old.owners, me)
            return self._commit(rt, namespace, old, content, owners, me, dry_run)

    def merge_patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        manager: str,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        with self._lock:
            old = self._existing(rt, namespace, name)
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            current = copy.deepcopy(old.body)
            merged = fields.merge_patch(current, patch)
            _check_uid(rt, old, merged)
            content, rv = self._incoming(rt, namespace, name, merged)
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            me = (manager, "Update")
            owners = fields.update(strip_server_fields(old.body), content, old.owners, me)
            return self._commit(rt, namespace, old, content, owners, me, dry_run)

    def apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        manager: str,
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Server-side apply; returns (object, created)."""
        with self._lock:
            if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
                raise bad_request("apply patches must have apiVersion and kind set")
            content, rv = self._incoming(rt, namespace, name, body)
            me = (manager, "Apply")
            old = self._objects.get(self._key(rt, namespace, name))
            if old is None:
                base: dict[str, Any] = {
                    "apiVersion": rt.api_version,
                    "kind": rt.kind,
                    "metadata": {k: v for k, v in content["metadata"].items() if k in ("name", "namespace")},
                }
                result, owners, _ = fields.apply(base, content, {}, me, force=force)
                return self._commit(rt, namespace, None, result, owners, me, dry_run), True
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            current = strip_server_fields(old.body)
            result, owners, conflicts = fields.apply(current, content, old.owners, me, force=True)
            if conflicts and not force:
                self._validate(rt, result)  # an invalid request is reported as such, not as a conflict
                raise apply_conflict(rt, name, conflicts)
            return self._commit(rt, namespace, old, result, owners, me, dry_run), False

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        with self._lock:
            obj = self._existing(rt, namespace, name)
            if not dry_run:
                del self._objects[self._key(rt, namespace, name)]
                self._rv += 1
            return obj.render()

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: Sequence[Requirement] = (),
        field_reqs: Sequence[FieldRequirement] = (),
        *,
        dry_run: bool = False,
    ) -> list[dict[str, Any]]:
        with self._lock:
            items, _ = self.list_objects(rt, namespace, labels, field_reqs)
            for item in items:
                self.delete(rt, item["metadata"].get("namespace"), item["metadata"]["name"], dry_run=dry_run)
            return items

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (rt.group, rt.kind, (namespace or "") if rt.namespaced else "", name)

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> StoredObject:
        obj = self._objects.get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _incoming(
        self, rt: ResourceType, namespace: str | None, url_name: str | None, body: Any
    ) -> tuple[dict[str, Any], str | None]:
        """A request body checked against the URL and stripped of server fields; and its resourceVersion."""
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
            if self.require_namespaces and ("", "Namespace", "", namespace) not in self._objects:
                raise StatusError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
        else:
            meta.pop("namespace", None)  # like a real server: ignored for cluster-scoped kinds
        rv = meta.get("resourceVersion")
        content.pop("status", None)  # status is a subresource; writes to the main resource ignore it
        return strip_server_fields(content), str(rv) if rv else None

    def _validate(self, rt: ResourceType, content: dict[str, Any]) -> None:
        if self.validator is not None and self.validator.supports(rt.api_version, rt.kind):
            issues = self.validator.issues(content)
            if issues:
                raise invalid(rt, str(content["metadata"].get("name", "")), issues)
        elif not content["metadata"].get("name"):
            raise invalid(rt, "", [Issue("metadata.name", "name or generateName is required")])

    def _commit(
        self,
        rt: ResourceType,
        namespace: str | None,
        old: StoredObject | None,
        content: dict[str, Any],
        owners: dict[ManagerKey, set[FieldPath]],
        me: ManagerKey,
        dry_run: bool,
    ) -> dict[str, Any]:
        self._validate(rt, content)
        now = _now()
        meta = content["metadata"]
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=now, generation=1)
            times = dict.fromkeys(owners, now)
        else:
            old_content = strip_server_fields(old.body)
            if old_content == content and old.owners == owners:
                return old.render()  # a no-op write: nothing changes, not even resourceVersion
            old_meta = old.body["metadata"]
            bump = _spec_part(old_content) != _spec_part(content)
            meta.update(
                uid=old_meta["uid"],
                creationTimestamp=old_meta["creationTimestamp"],
                generation=old_meta["generation"] + (1 if bump else 0),
                resourceVersion=old_meta["resourceVersion"],
            )
            times = {
                k: now if k == me or old.owners.get(k) != v else old.times.get(k, now)
                for k, v in owners.items()
            }
        stored = StoredObject(rt, content, owners, times)
        if dry_run:
            return stored.render()
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[self._key(rt, namespace, meta["name"])] = stored
        return stored.render()
