"""Custom kinds from CustomResourceDefinition manifests, checked against their ``openAPIV3Schema``.

``crd_resource_types(crd)`` gives one ``ResourceType`` per served version: scope, plural and short
names from the CRD, a ``/status`` subresource when the version declares one (without it, ``status``
is an ordinary field written with the object, as on a real cluster), and a ``CrdSchema``.

``CrdSchema`` does what the API server does with a structural schema before storing an object:
null values of non-nullable fields are dropped, ``default``s filled in, then the object validated
(types, enums, patterns, lengths, ``required``, ``format``s such as ``date-time`` and ``int64``) and
ObjectMeta checked. Unknown fields are rejected (422, like ``fieldValidation=Strict``) unless built with
``prune_unknown=True`` (the server's default, which drops them silently). Not covered: CEL
``x-kubernetes-validations``, list-type uniqueness (``x-kubernetes-list-type: set|map``), the
``scale`` subresource of CRDs, conversion between versions (all served versions share one store).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from qcdr_common.testing.k8s.resources import ResourceType, status_subresource
from qcdr_common.testing.schemas import FORMAT_CHECKER, Issue, format_path, metadata_issues

CRD_API_VERSION = "apiextensions.k8s.io/v1"
_OBJECT_KEYS = ("apiVersion", "kind", "metadata")  # handled by the server, not the schema
_ANY: dict[str, Any] = {}

CrdSource = Mapping[str, Any] | str | os.PathLike[str]


class CrdSchema:
    """One version's ``openAPIV3Schema``: normalise and validate objects as the API server does."""

    def __init__(self, schema: Mapping[str, Any], *, prune_unknown: bool = False) -> None:
        self.schema = copy.deepcopy(dict(schema))
        self.prune_unknown = prune_unknown
        self.notes: list[str] = []  # what had to be changed to load the schema (uncompilable patterns)
        translated = _to_json_schema(self.schema, self.notes, root=True)
        self._validator = jsonschema.Draft7Validator(translated, format_checker=FORMAT_CHECKER)

    def prepare(self, obj: dict[str, Any]) -> None:
        _normalise(obj, self.schema, self.prune_unknown, root=True)

    def issues(self, obj: Mapping[str, Any]) -> list[Issue]:
        found = metadata_issues(obj.get("metadata"))
        for error in self._validator.iter_errors(dict(obj)):
            found.extend(_issues(error))
        unique = {(i.path, i.message): i for i in found}
        return sorted(unique.values(), key=lambda i: (i.path, i.message))


# --------------------------------------------------------------------------- CRD manifests


def crd_resource_types(crd: Mapping[str, Any], *, prune_unknown: bool = False) -> list[ResourceType]:
    """The kinds a CRD serves, one per served version; ValueError when it is not a usable CRD."""
    if crd.get("apiVersion") != CRD_API_VERSION or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"not an {CRD_API_VERSION} CustomResourceDefinition: {crd.get('kind')!r}")
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError("the CRD has no spec")
    group, names, scope = spec.get("group"), spec.get("names") or {}, spec.get("scope")
    kind, plural = names.get("kind"), names.get("plural")
    if not group or not kind or not plural:
        raise ValueError("the CRD needs spec.group, spec.names.kind and spec.names.plural")
    if scope not in ("Namespaced", "Cluster"):
        raise ValueError(f"spec.scope must be Namespaced or Cluster, not {scope!r}")
    crd_name = (crd.get("metadata") or {}).get("name")
    if crd_name != f"{plural}.{group}":
        raise ValueError(
            f"the CRD must be named {plural}.{group} (spec.names.plural.spec.group), not {crd_name!r}"
        )
    types: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        name = version.get("name")
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if not name or not isinstance(schema, Mapping):
            raise ValueError(f"{crd_name}: every served version needs a name and an openAPIV3Schema")
        with_status = "status" in (version.get("subresources") or {})
        types.append(
            ResourceType(
                group,
                name,
                kind,
                plural,
                scope == "Namespaced",
                custom=True,
                short_names=tuple(names.get("shortNames") or ()),
                subresources=(status_subresource(group, name, kind),) if with_status else (),
                status_is_field=not with_status,
                schema=CrdSchema(schema, prune_unknown=prune_unknown),
            )
        )
    if not types:
        raise ValueError(f"{crd_name}: no served version")
    return types


def crd_resource_type(
    crd: Mapping[str, Any], version: str | None = None, *, prune_unknown: bool = False
) -> ResourceType:
    """One served version of a CRD (by default the storage version) as a ``ResourceType``."""
    types = crd_resource_types(crd, prune_unknown=prune_unknown)
    if version is None:
        storage = [v.get("name") for v in crd["spec"]["versions"] if v.get("storage")]
        version = storage[0] if storage else types[0].version
    for rt in types:
        if rt.version == version:
            return rt
    raise ValueError(f"{crd['metadata']['name']} serves no version {version!r}")


def load_crds(sources: Iterable[CrdSource]) -> list[dict[str, Any]]:
    """CRD manifests from dicts, YAML files (multi-document) and directories of YAML files; in
    files only the CustomResourceDefinition documents count (a kustomization next to them is
    skipped), but each file or directory must hold at least one."""
    out: list[dict[str, Any]] = []
    for source in sources:
        if isinstance(source, Mapping):
            out.append(dict(source))
            continue
        path = Path(source)
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        found = [doc for file in files for doc in _yaml_documents(file) if _is_crd(doc)]
        if not found:
            raise ValueError(f"{path}: no CustomResourceDefinition found")
        out.extend(found)
    return out


def _yaml_documents(path: Path) -> Iterator[Any]:
    with path.open("rb") as fh:
        yield from (doc for doc in yaml.safe_load_all(fh) if doc is not None)


def _is_crd(doc: Any) -> bool:
    return isinstance(doc, Mapping) and doc.get("kind") == "CustomResourceDefinition"


# --------------------------------------------------------------------------- schema -> JSON Schema


def _to_json_schema(node: Any, notes: list[str], *, root: bool = False, where: str = "") -> Any:
    """An OpenAPI v3 structural schema as a strict JSON Schema (draft 7) jsonschema can check."""
    if isinstance(node, list):
        return [_to_json_schema(item, notes, where=f"{where}/{i}") for i, item in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {
                name: _to_json_schema(sub, notes, where=f"{where}/{key}/{name}")
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _to_json_schema(value, notes, where=f"{where}/{key}")
        else:
            out[key] = value
    pattern = out.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error:  # RE2 syntax Python cannot compile: not checked rather than wrongly checked
            del out["pattern"]
            notes.append(f"{where or '/'}: pattern {pattern!r} not checked")
    if out.get("x-kubernetes-int-or-string") and "type" not in out:
        out["type"] = ["integer", "string"]
    if out.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    if root or out.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        for key in _OBJECT_KEYS:
            # ObjectMeta is checked by the server (metadata_issues), apiVersion/kind match the URL
            props[key] = _ANY if key == "metadata" or key not in props else props[key]
    if (
        out.get("type") == "object"
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # strict: unknown fields are errors, not pruned
    return out


def _normalise(value: Any, schema: Mapping[str, Any], prune: bool, *, root: bool = False) -> None:
    """In place, as the API server before validating: drop nulls the schema does not allow, drop
    unknown fields (``prune``), fill in defaults."""
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _normalise(item, items, prune)
        return
    if not isinstance(value, dict):
        return
    props: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    object_keys = root or bool(schema.get("x-kubernetes-embedded-resource"))
    for key in list(value):
        if object_keys and key in _OBJECT_KEYS:
            continue
        sub = props.get(key)
        if sub is None and isinstance(extra, Mapping):
            sub = extra
        if sub is None:
            if prune and not keep_unknown:
                del value[key]
            continue
        if value[key] is None and not sub.get("nullable"):
            del value[key]
            continue
        _normalise(value[key], sub, prune)
    for key, sub in props.items():
        if key not in value and isinstance(sub, Mapping) and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
            _normalise(value[key], sub, prune)


# --------------------------------------------------------------------------- messages


def _issues(error: jsonschema.ValidationError) -> list[Issue]:
    """A validation error worded as the API server words it (``spec.x: Unsupported value: ...``)."""
    parts: list[str | int] = list(error.absolute_path)
    instance, expected = error.instance, error.validator_value
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        return [Issue(format_path([*parts, k]), f'unknown field "{k}"') for k in instance if k not in known]
    if error.validator == "required" and isinstance(instance, Mapping):
        return [Issue(format_path([*parts, k]), "Required value") for k in expected if k not in instance]
    shown = json.dumps(instance)
    if error.validator == "enum":
        values = ", ".join(json.dumps(v) for v in expected)
        return [Issue(format_path(parts), f"Unsupported value: {shown}: supported values: {values}")]
    if error.validator == "type":
        return [Issue(format_path(parts), f"Invalid value: {shown}: must be of type {expected}")]
    message = error.message if len(error.message) <= 400 else error.message[:397] + "..."
    return [Issue(format_path(parts), f"Invalid value: {message}")]
