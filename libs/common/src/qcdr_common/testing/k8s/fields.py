"""Server-side apply field ownership, simplified.

A field path is a tuple of map keys from the object root (``("spec", "kprobes")``). A manager owns
*leaf* paths: scalars, **lists (atomic: a list is owned, replaced and compared as a whole, as with
``x-kubernetes-list-type: atomic``; real Kubernetes merges ``map``/``set`` lists item by item)**,
and empty maps. Maps are granular: two managers may own different keys of the same map.
``metadata`` contributes only ``labels.*``, ``annotations.*``, ``finalizers`` and
``ownerReferences``; ``apiVersion`` and ``kind`` are never owned, ``status`` only where it is written:
through the ``/status`` subresource (``status_leaves``, kept apart from the main resource's owners) or,
for a custom kind without that subresource, with the object (``leaves(obj, status=True)``).

The rules (those of real server-side apply, on these paths):
- apply: the manager's set becomes exactly the paths it sent; paths it owned before but no longer
  sends are removed from the object unless another manager still owns them (or something inside);
- a path another manager owns, sent with a different value, is a conflict (409) unless ``force``,
  which moves the ownership; sent with the same value, the ownership is shared;
- update (PUT, merge patch, POST): the updater takes every path whose value it changed or added.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FieldPath = tuple[str, ...]
ManagerKey = tuple[str, str]  # (manager, operation: "Apply" | "Update")
LeavesOf = Callable[[Mapping[str, Any]], dict[FieldPath, Any]]

_META_MAPS = ("labels", "annotations")
_META_ATOMIC = ("finalizers", "ownerReferences")
_NEVER_OWNED = frozenset({"apiVersion", "kind", "status"})


def leaves(obj: Mapping[str, Any], *, status: bool = False) -> dict[FieldPath, Any]:
    """Every owned-able leaf path of an object and its value (``status`` too when it is a field)."""
    out: dict[FieldPath, Any] = {}
    for key, value in obj.items():
        if key in _NEVER_OWNED and not (status and key == "status"):
            continue
        if key == "metadata":
            if isinstance(value, Mapping):
                for name in _META_MAPS:
                    if isinstance(value.get(name), Mapping):
                        _walk(value[name], ("metadata", name), out)
                for name in _META_ATOMIC:
                    if name in value:
                        out[("metadata", name)] = value[name]
            continue
        _walk(value, (key,), out)
    return out


def status_leaves(obj: Mapping[str, Any]) -> dict[FieldPath, Any]:
    """The leaf paths of ``status`` only: what a write through the ``/status`` subresource owns."""
    out: dict[FieldPath, Any] = {}
    if "status" in obj:
        _walk(obj["status"], ("status",), out)
    return out


def leaves_with_status(obj: Mapping[str, Any]) -> dict[FieldPath, Any]:
    return leaves(obj, status=True)


def _walk(value: Any, path: FieldPath, out: dict[FieldPath, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, sub in value.items():
            _walk(sub, (*path, str(key)), out)
    else:
        out[path] = value


def get_path(obj: Mapping[str, Any], path: FieldPath) -> tuple[bool, Any]:
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def set_path(obj: dict[str, Any], path: FieldPath, value: Any) -> None:
    current = obj
    for part in path[:-1]:
        nxt = current.get(part)
        if not isinstance(nxt, dict):
            nxt = current[part] = {}
        current = nxt
    last = path[-1]
    if isinstance(value, Mapping) and not value and isinstance(current.get(last), dict):
        return  # an empty map only says "this map exists"; keep what others put in it
    current[last] = copy.deepcopy(value)


def delete_path(obj: dict[str, Any], path: FieldPath, keep: set[FieldPath]) -> None:
    """Remove ``path``, then the maps it leaves empty (unless someone owns them as empty maps)."""
    parents: list[tuple[dict[str, Any], str]] = []
    current: Any = obj
    for part in path[:-1]:
        if not isinstance(current, dict) or not isinstance(current.get(part), dict):
            return
        parents.append((current, part))
        current = current[part]
    if isinstance(current, dict):
        current.pop(path[-1], None)
    for depth in range(len(parents) - 1, -1, -1):
        parent, key = parents[depth]
        owned_path = path[: depth + 1]
        if parent[key] or owned_path in keep or owned_path == ("metadata",):
            break
        del parent[key]


def display(path: FieldPath) -> str:
    return "." + ".".join(path)


def to_fields_v1(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """The FieldsV1 form (``{"f:spec": {"f:replicas": {}}}``) of a set of leaf paths."""
    root: dict[str, Any] = {}
    owned = sorted(paths)
    for path in owned:
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    # a path owned itself and also the parent of owned paths is marked with ".": {}
    for path in owned:
        node = root
        for part in path:
            node = node[f"f:{part}"]
        if any(k != "." for k in node):
            node["."] = {}
    return root


@dataclass(frozen=True)
class Conflict:
    manager: ManagerKey
    path: FieldPath


def _prefixes(paths: Iterable[FieldPath]) -> set[FieldPath]:
    return {p[:i] for p in paths for i in range(1, len(p))}


def find_conflicts(
    current: Mapping[str, Any],
    applied: Mapping[FieldPath, Any],
    owners: Mapping[ManagerKey, set[FieldPath]],
    me: ManagerKey,
) -> list[Conflict]:
    """Paths other managers own that this apply would change."""
    conflicts: list[Conflict] = []
    applied_prefixes = _prefixes(applied)
    for other, paths in owners.items():
        if other == me:
            continue
        for owned in sorted(paths):
            exists, value = get_path(current, owned)
            if owned in applied:
                if not exists or value != applied[owned]:
                    conflicts.append(Conflict(other, owned))
                continue
            if owned in applied_prefixes and exists and not isinstance(value, Mapping):
                # the other manager owns an atomic value here, and this apply puts a map inside it
                conflicts.append(Conflict(other, owned))
                continue
            for i in range(1, len(owned)):
                ancestor = owned[:i]
                if ancestor in applied:
                    new = applied[ancestor]
                    if not (isinstance(new, Mapping) and not new):
                        # replacing a map that holds the other manager's field by an atomic value
                        conflicts.append(Conflict(other, owned))
                    break
    return conflicts


def _overlaps(path: FieldPath, paths: Iterable[FieldPath]) -> bool:
    """``path`` itself or something inside it is in ``paths``."""
    n = len(path)
    return any(p[:n] == path for p in paths)


def apply(
    current: Mapping[str, Any],
    applied_object: Mapping[str, Any],
    owners: Mapping[ManagerKey, set[FieldPath]],
    me: ManagerKey,
    *,
    force: bool,
    leaves_of: LeavesOf = leaves,
) -> tuple[dict[str, Any], dict[ManagerKey, set[FieldPath]], list[Conflict]]:
    """Server-side apply of ``applied_object`` by ``me`` onto ``current``.

    Returns (new object, new ownership, conflicts); when there are conflicts and not ``force`` the
    object and ownership are returned unchanged.
    """
    applied = leaves_of(applied_object)
    new_owners = {k: set(v) for k, v in owners.items()}
    conflicts = find_conflicts(current, applied, owners, me)
    if conflicts and not force:
        return dict(current), new_owners, conflicts
    for conflict in conflicts:
        new_owners[conflict.manager].discard(conflict.path)
    result = copy.deepcopy(dict(current))
    previous = new_owners.get(me, set())
    others = [p for k, v in new_owners.items() if k != me for p in v]
    for gone in sorted(previous - set(applied), key=len, reverse=True):
        if _overlaps(gone, others) or _overlaps(gone, applied):
            continue
        delete_path(result, gone, keep=set(others))
    for path, value in applied.items():
        set_path(result, path, value)
    new_owners[me] = set(applied)
    return result, _prune_owners(result, new_owners), conflicts


def update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    owners: Mapping[ManagerKey, set[FieldPath]],
    me: ManagerKey,
    *,
    leaves_of: LeavesOf = leaves,
) -> dict[ManagerKey, set[FieldPath]]:
    """Ownership after a non-apply write of ``new`` (``old`` is None on create)."""
    before = leaves_of(old) if old is not None else {}
    after = leaves_of(new)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    new_owners = {k: set(v) - changed for k, v in owners.items()}
    new_owners[me] = new_owners.get(me, set()) | changed
    return _prune_owners(new, new_owners)


def _prune_owners(
    obj: Mapping[str, Any], owners: dict[ManagerKey, set[FieldPath]]
) -> dict[ManagerKey, set[FieldPath]]:
    """Drop paths that no longer exist, and managers left owning nothing."""
    out: dict[ManagerKey, set[FieldPath]] = {}
    for key, paths in owners.items():
        kept = {p for p in paths if get_path(obj, p)[0]}
        if kept:
            out[key] = kept
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(dict(target)) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
