"""The test API server's in-memory object store: CRUD, optimistic concurrency, server-side apply,
the ``/status`` subresource, and the change history watches read (``events.py``)."""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Literal

from qcdr_common.testing.k8s import fields
from qcdr_common.testing.k8s.events import Event, EventHistory, EventType
from qcdr_common.testing.k8s.fields import ManagerKey
from qcdr_common.testing.k8s.objects import (
    ObjectKey,
    Owners,
    StoredObject,
    changed_times,
    check_uid,
    incoming,
    leaves_of,
    now,
    spec_part,
    strip_server_fields,
)
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
)
from qcdr_common.testing.schemas import Issue, ManifestValidator

__all__ = ["ObjectKey", "Store", "StoredObject", "strip_server_fields"]

StatusWrite = Literal["update", "merge", "apply"]


class Store:
    """Objects by (group, kind, namespace, name); every public method is atomic."""

    def __init__(
        self,
        validator: ManifestValidator | None = None,
        *,
        require_namespaces: bool = False,
        history: int = 1000,
    ) -> None:
        self.validator = validator
        self.require_namespaces = require_namespaces
        self._lock = threading.RLock()
        self._objects: dict[tuple[str, str, str, str], StoredObject] = {}
        self._rv = 1000
        self.events = EventHistory(self._rv, history)

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> str:
        """The version of the last change (what a list answers with)."""
        with self._lock:
            return str(self._rv)

    def compact(self) -> None:
        """Forget the change history so far: a watch from any version before now gets 410 Expired."""
        with self._lock:
            self.events.compact(self._rv)

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
            owners = fields.update(None, content, {}, (manager, "Update"), leaves_of=leaves_of(rt))
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
            check_uid(rt, old, body)
            content, rv = self._incoming(rt, namespace, name, body)
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            me = (manager, "Update")
            owners = fields.update(
                strip_server_fields(old.body), content, old.owners, me, leaves_of=leaves_of(rt)
            )
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
            check_uid(rt, old, merged)
            content, rv = self._incoming(rt, namespace, name, merged)
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            me = (manager, "Update")
            owners = fields.update(
                strip_server_fields(old.body), content, old.owners, me, leaves_of=leaves_of(rt)
            )
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
                result, owners, _ = fields.apply(base, content, {}, me, force=force, leaves_of=leaves_of(rt))
                return self._commit(rt, namespace, None, result, owners, me, dry_run), True
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            current = strip_server_fields(old.body)
            result, owners, conflicts = fields.apply(
                current, content, old.owners, me, force=True, leaves_of=leaves_of(rt)
            )
            if conflicts and not force:
                self._check(rt, result)  # an invalid request is reported as such, not as a conflict
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
                last = obj.render()
                # a watch sees the deleted object at the deletion's version (as the API server sends it)
                last["metadata"]["resourceVersion"] = str(self._rv)
                self._record("DELETED", rt, namespace, last, last)
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

    # ------------------------------------------------------------------ the /status subresource

    def write_status(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        manager: str,
        *,
        how: StatusWrite = "update",
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """A write through ``/status``: only ``.status`` changes (the rest of ``body`` is ignored, as
        by the API server), owned by ``manager`` apart from its main-resource fields. ``how``: a PUT
        of the whole object, a merge patch, or a server-side apply."""
        with self._lock:
            old = self._existing(rt, namespace, name)
            if not isinstance(body, dict):
                raise bad_request("the request body must be a JSON/YAML object")
            if how == "apply" and (not body.get("apiVersion") or not body.get("kind")):
                raise bad_request("apply patches must have apiVersion and kind set")
            wanted = fields.merge_patch(copy.deepcopy(old.body), body) if how == "merge" else body
            check_uid(rt, old, wanted)
            content, rv = self._incoming(rt, namespace, name, wanted, keep_status=True)
            if rv and rv != old.body["metadata"]["resourceVersion"]:
                raise rv_conflict(rt, name)
            current = strip_server_fields(old.body)
            me: ManagerKey = (manager, "Apply" if how == "apply" else "Update")
            if how == "apply":
                result, status_owners, conflicts = fields.apply(
                    current, content, old.status_owners, me, force=True, leaves_of=fields.status_leaves
                )
                if conflicts and not force:
                    self._check(rt, result)
                    raise apply_conflict(rt, name, conflicts)
            else:
                result = copy.deepcopy(current)
                result.pop("status", None)
                if "status" in content:
                    result["status"] = content["status"]
                status_owners = fields.update(
                    current, result, old.status_owners, me, leaves_of=fields.status_leaves
                )
            return self._commit(
                rt, namespace, old, result, old.owners, me, dry_run, status_owners=status_owners
            )

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
        self,
        rt: ResourceType,
        namespace: str | None,
        url_name: str | None,
        body: Any,
        *,
        keep_status: bool = False,
    ) -> tuple[dict[str, Any], str | None]:
        exists = self._namespace_exists if self.require_namespaces else None
        return incoming(rt, namespace, url_name, body, keep_status=keep_status, namespace_exists=exists)

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", "Namespace", "", namespace) in self._objects

    def _check(self, rt: ResourceType, content: dict[str, Any]) -> None:
        """Normalise (a CRD's pruning and defaults) and validate an object about to be stored."""
        if rt.schema is not None:
            rt.schema.prepare(content)
            issues = rt.schema.issues(content)
            if issues:
                raise invalid(rt, str(content["metadata"].get("name", "")), issues)
        elif self.validator is not None and self.validator.supports(rt.api_version, rt.kind):
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
        owners: Owners,
        me: ManagerKey,
        dry_run: bool,
        *,
        status_owners: Owners | None = None,
    ) -> dict[str, Any]:
        """Store ``content``; ``status_owners`` is given by /status writes only (they own status)."""
        if old is not None and status_owners is None and rt.has_status:
            content.pop("status", None)
            if "status" in old.body:
                content["status"] = copy.deepcopy(old.body["status"])
        self._check(rt, content)
        at = now()
        meta = content["metadata"]
        if old is None:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=at, generation=1)
            stored = StoredObject(rt, content, owners, dict.fromkeys(owners, at))
        else:
            old_content = strip_server_fields(old.body)
            unchanged_status = status_owners is None or status_owners == old.status_owners
            if old_content == content and old.owners == owners and unchanged_status:
                return old.render()  # a no-op write: nothing changes, not even resourceVersion
            old_meta = old.body["metadata"]
            bump = spec_part(rt, old_content) != spec_part(rt, content)
            meta.update(
                uid=old_meta["uid"],
                creationTimestamp=old_meta["creationTimestamp"],
                generation=old_meta["generation"] + (1 if bump else 0),
                resourceVersion=old_meta["resourceVersion"],
            )
            if status_owners is None:
                times = changed_times(old.times, old.owners, owners, me, at)
                stored = StoredObject(rt, content, owners, times, old.status_owners, old.status_times)
            else:
                status_times = changed_times(old.status_times, old.status_owners, status_owners, me, at)
                stored = StoredObject(rt, content, owners, old.times, status_owners, status_times)
        if dry_run:
            return stored.render()
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[self._key(rt, namespace, meta["name"])] = stored
        prev = None if old is None else old.render()
        self._record("ADDED" if old is None else "MODIFIED", rt, namespace, stored.render(), prev)
        return stored.render()

    def _record(
        self,
        kind: EventType,
        rt: ResourceType,
        namespace: str | None,
        obj: dict[str, Any],
        prev: dict[str, Any] | None,
    ) -> None:
        ns = (namespace or None) if rt.namespaced else None
        self.events.record(Event(self._rv, kind, rt.group, rt.kind, ns, obj, prev))
