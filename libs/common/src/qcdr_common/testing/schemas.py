"""Strict, offline validation of Kubernetes manifests against the upstream schemas.

``ManifestValidator`` checks a manifest the way ``kubectl apply --validate=strict`` would have the
API server check it, as far as that is possible without one:

- Tetragon ``TracingPolicy`` / ``TracingPolicyNamespaced`` (``cilium.io/v1alpha1``) against the
  CRDs' ``openAPIV3Schema`` (``../shared/schemas/tetragon-*.yaml``);
- ``CiliumNetworkPolicy``, ``CiliumClusterwideNetworkPolicy`` and ``CiliumCIDRGroup``
  (``cilium.io/v2``) against the JSON Schemas of those CRDs (``../shared/schemas/cilium-*.json``);
- built-in kinds (``NetworkPolicy``, ``ConfigMap``, ``Namespace``, ...) against the strict schemas
  bundled with kubernetes-validate for one pinned Kubernetes version.

Strictness: unknown fields are errors. The CRD schemas are made strict by adding
``additionalProperties: false`` to every ``type: object`` schema that lists ``properties`` and has
neither ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields``. (Cilium's schemas
also use ``properties`` inside ``oneOf``/``anyOf`` branches to say "one of these keys is
required"; those branches have no ``type`` and are left alone, or every branch would reject the
other keys.) A CRD's ``metadata`` is only ``type: object``, so ObjectMeta is checked here by hand:
name, namespace, label and annotation syntax, and no unknown keys.

Not covered: CEL ``x-kubernetes-validations`` rules, ``idn-hostname`` formats, defaulting, and
the checks an API server makes against other objects.

Validators are built once per (shared dir, kind) and per (Kubernetes version, kind) and cached
for the process, so validating thousands of documents costs well under a millisecond each.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml
from referencing import Registry, Resource
from rfc3339_validator import validate_rfc3339

DEFAULT_KUBERNETES_VERSION = "1.31"

_CSafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SchemaKind(NamedTuple):
    """A kind this module has a schema for."""

    api_version: str
    kind: str


@dataclass(frozen=True)
class _CrdSource:
    api_version: str
    kind: str
    filename: str  # in ``<shared>/schemas/``: a CRD (.yaml, schema inside) or a plain JSON Schema (.json)


CRD_SOURCES: tuple[_CrdSource, ...] = tuple(
    _CrdSource(api_version, kind, filename)
    for api_version, kind, filename in (
        ("cilium.io/v1alpha1", "TracingPolicy", "tetragon-cilium.io_tracingpolicies.yaml"),
        (
            "cilium.io/v1alpha1",
            "TracingPolicyNamespaced",
            "tetragon-cilium.io_tracingpoliciesnamespaced.yaml",
        ),
        ("cilium.io/v2", "CiliumNetworkPolicy", "cilium-ciliumnetworkpolicy_v2.json"),
        ("cilium.io/v2", "CiliumClusterwideNetworkPolicy", "cilium-ciliumclusterwidenetworkpolicy_v2.json"),
        ("cilium.io/v2", "CiliumCIDRGroup", "cilium-ciliumcidrgroup_v2.json"),
        # Cilium < 1.18 serves CIDR groups as v2alpha1 with the same spec (externalCIDRs); only the
        # v2 schema is published in shared/, so it checks both.
        ("cilium.io/v2alpha1", "CiliumCIDRGroup", "cilium-ciliumcidrgroup_v2.json"),
    )
)
_CRD_BY_KIND: dict[tuple[str, str], _CrdSource] = {(s.api_version, s.kind): s for s in CRD_SOURCES}

# Built-in kinds whose name must be a DNS-1123 label rather than a subdomain.
_LABEL_NAMED_KINDS = frozenset({"Namespace", "Service"})

_OBJECT_META_KEYS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_TOTAL_ANNOTATION_SIZE = 256 * 1024

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CIDR_PREFIX = re.compile(r"[0-9]{1,3}")
_ANY_STRING = "^.*$"


@dataclass(frozen=True)
class Issue:
    """One problem: where (``spec.kprobes[0].args``; ``<root>`` for the top) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


# --------------------------------------------------------------------------- formats


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())

    def _cidr(value: object) -> bool:
        if not isinstance(value, str):
            return True
        # Like Go's net.ParseCIDR: an address, a slash and a prefix length; no host bits set.
        address, slash, prefix = value.partition("/")
        if not slash or not _CIDR_PREFIX.fullmatch(prefix):
            raise ValueError(f"{value!r} is not a CIDR (address/prefix-length)")
        ipaddress.ip_network(value, strict=True)
        return bool(address)

    def _ip(value: object) -> bool:
        if isinstance(value, str):
            ipaddress.ip_address(value)
        return True

    def _ipv4(value: object) -> bool:
        if isinstance(value, str):
            ipaddress.IPv4Address(value)
        return True

    def _ipv6(value: object) -> bool:
        if isinstance(value, str):
            ipaddress.IPv6Address(value)
        return True

    def _date_time(value: object) -> bool:
        return not isinstance(value, str) or bool(validate_rfc3339(value))

    def _int32(value: object) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    def _int64(value: object) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    checker.checks("cidr", raises=ValueError)(_cidr)
    checker.checks("ip", raises=ValueError)(_ip)
    checker.checks("ipv4", raises=ValueError)(_ipv4)
    checker.checks("ipv6", raises=ValueError)(_ipv6)
    checker.checks("date-time")(_date_time)
    checker.checks("int32")(_int32)
    checker.checks("int64")(_int64)
    return checker


FORMAT_CHECKER = _format_checker()


# --------------------------------------------------------------------------- schema loading


def _strictify(node: Any, fixed_patterns: list[str], where: str = "") -> None:
    """In place: forbid unknown fields in object schemas, replace regexes Python cannot compile."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _strictify(item, fixed_patterns, f"{where}/{index}")
        return
    if not isinstance(node, dict):
        return
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error:
            # Go/RE2 syntax (Cilium's "^\PC*$", "no control characters") that `re` cannot compile.
            node["pattern"] = _ANY_STRING
            fixed_patterns.append(f"{where}: {pattern!r} -> {_ANY_STRING!r}")
    if (
        node.get("type") == "object"
        and isinstance(node.get("properties"), dict)
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions", "$defs") and isinstance(value, dict):
            for name, sub in value.items():
                _strictify(sub, fixed_patterns, f"{where}/{key}/{name}")
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            _strictify(value, fixed_patterns, f"{where}/{key}")


def _load_crd_schema(shared_dir: Path, source: _CrdSource) -> tuple[dict[str, Any], list[str]]:
    path = shared_dir / "schemas" / source.filename
    with path.open("rb") as fh:
        is_crd = source.filename.endswith(".yaml")
        loaded: Any = yaml.load(fh, Loader=_CSafeLoader) if is_crd else json.load(fh)
    if is_crd:
        versions = loaded["spec"]["versions"]
        version = source.api_version.split("/")[1]
        chosen = next((v for v in versions if v.get("name") == version), versions[0])
        schema: dict[str, Any] = chosen["schema"]["openAPIV3Schema"]
    else:
        schema = loaded
    schema = copy.deepcopy(schema)
    fixed: list[str] = []
    _strictify(schema, fixed)
    return schema, fixed


@dataclass
class _Compiled:
    validator: Any  # a jsonschema validator instance (untyped library)
    notes: list[str]


_lock = threading.RLock()
_crd_cache: dict[tuple[Path, str, str], _Compiled] = {}
_k8s_defs_cache: dict[str, tuple[Registry[Any], dict[tuple[str, str], str]]] = {}
_k8s_cache: dict[tuple[str, str, str], _Compiled] = {}
_DEFS_URI = "https://kubernetes.io/api/_definitions.json"


def _crd_validator(shared_dir: Path, source: _CrdSource) -> _Compiled:
    key = (shared_dir, source.api_version, source.kind)
    with _lock:
        compiled = _crd_cache.get(key)
        if compiled is None:
            schema, notes = _load_crd_schema(shared_dir, source)
            # OpenAPI v3.0 schemas are closest to draft 4/7; the files declare no $schema.
            validator = jsonschema.Draft7Validator(schema, format_checker=FORMAT_CHECKER)
            compiled = _crd_cache[key] = _Compiled(validator, notes)
        return compiled


def _kubernetes_schema_dir(version: str) -> str:
    root = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    wanted = version.removeprefix("v")
    for entry in root.iterdir():
        name = entry.name
        if name.startswith(f"v{wanted}.") and name.endswith("-local-strict"):
            return name
        if name == f"v{wanted}-local-strict":
            return name
    raise ValueError(f"kubernetes-validate has no strict schemas for Kubernetes {version}")


def _k8s_definitions(version: str) -> tuple[Registry[Any], dict[tuple[str, str], str]]:
    """The strict definitions of one Kubernetes version, and (apiVersion, kind) -> definition name."""
    with _lock:
        cached = _k8s_defs_cache.get(version)
        if cached is None:
            cached = _k8s_defs_cache[version] = _load_k8s_definitions(version)
        return cached


def _load_k8s_definitions(version: str) -> tuple[Registry[Any], dict[tuple[str, str], str]]:
    schema_dir = _kubernetes_schema_dir(version)
    ref = resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", schema_dir, "_definitions.json"
    )
    definitions: dict[str, Any] = json.loads(ref.read_bytes())
    index: dict[tuple[str, str], str] = {}
    for def_name, schema in definitions["$defs"].items():
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        props = schema.get("properties") or {}
        # Top-level objects only: exactly one GVK, with metadata; not lists or option types.
        if len(gvks) != 1 or "metadata" not in props or gvks[0]["kind"].endswith("List"):
            continue
        gvk = gvks[0]
        api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
        index[(api_version, gvk["kind"])] = def_name
    registry: Registry[Any] = Registry().with_resource(_DEFS_URI, Resource.from_contents(definitions))
    return registry, index


def _k8s_validator(version: str, api_version: str, kind: str) -> _Compiled | None:
    key = (version, api_version, kind)
    with _lock:
        compiled = _k8s_cache.get(key)
        if compiled is None:
            registry, index = _k8s_definitions(version)
            def_name = index.get((api_version, kind))
            if def_name is None:
                return None
            schema = {"$ref": f"{_DEFS_URI}#/$defs/{def_name}"}
            validator = jsonschema.Draft202012Validator(
                schema, registry=registry, format_checker=FORMAT_CHECKER
            )
            compiled = _k8s_cache[key] = _Compiled(validator, [])
        return compiled


# --------------------------------------------------------------------------- paths and messages

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(parts: Sequence[str | int]) -> str:
    """``spec.kprobes[0].args``; map keys with dots or slashes as ``labels["app.kubernetes.io/name"]``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "<root>"


def _issues_from_error(error: jsonschema.ValidationError) -> Iterator[Issue]:
    parts = list(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        instance = error.instance if isinstance(error.instance, dict) else {}
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, dict) else {}
        extras = [
            key for key in instance if key not in known and not any(re.search(p, key) for p in patterns)
        ]
        if extras:
            for key in extras:
                yield Issue(format_path([*parts, key]), f'unknown field "{key}"')
            return
    message = error.message
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            message = f"{message} ({format_path(list(best.absolute_path))}: {best.message})"
    if len(message) > 400:
        message = message[:397] + "..."
    yield Issue(format_path(parts), message)


def _qualified_name_issues(path: list[str | int], key: str, what: str) -> list[Issue]:
    problems: list[str] = []
    prefix, slash, name = key.rpartition("/")
    if not slash:
        name = key
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        problems.append("prefix part must be a lowercase DNS-1123 subdomain (at most 253 characters)")
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        problems.append(
            "name part must be at most 63 characters, start and end with an alphanumeric "
            "character, and contain only alphanumerics, '-', '_' or '.'"
        )
    return [Issue(format_path([*path, key]), f"invalid {what} key {key!r}: {p}") for p in problems]


def metadata_issues(meta: object, *, name_rule: str = "subdomain", structural: bool = True) -> list[Issue]:
    """ObjectMeta as the API server validates it. ``structural`` adds type and unknown-key checks
    (the built-in schemas already do those)."""
    base: list[str | int] = ["metadata"]
    if not isinstance(meta, dict):
        return [Issue("metadata", "must be an object")]
    issues: list[Issue] = []
    if structural:
        for key in meta:
            if key not in _OBJECT_META_KEYS:
                issues.append(Issue(format_path([*base, key]), f'unknown field "{key}"'))
    name = meta.get("name")
    if name is None:
        if not meta.get("generateName"):
            issues.append(Issue("metadata.name", "name or generateName is required"))
    elif not isinstance(name, str):
        issues.append(Issue("metadata.name", "must be a string"))
    elif name_rule == "label":
        if len(name) > 63 or not _DNS1123_LABEL.fullmatch(name):
            issues.append(
                Issue(
                    "metadata.name",
                    f"{name!r} must be a DNS-1123 label (lowercase alphanumerics and '-', ≤ 63)",
                )
            )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        issues.append(
            Issue(
                "metadata.name",
                f"{name!r} must be a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', ≤ 253)",
            )
        )
    namespace = meta.get("namespace")
    if namespace is not None and (
        not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace)
    ):
        issues.append(Issue("metadata.namespace", f"{namespace!r} must be a DNS-1123 label"))
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            issues.append(Issue("metadata.labels", "must be a map of strings"))
        else:
            for key, value in labels.items():
                issues += _qualified_name_issues([*base, "labels"], str(key), "label")
                where = format_path([*base, "labels", str(key)])
                if not isinstance(value, str):
                    issues.append(Issue(where, f"label value must be a string, not {type(value).__name__}"))
                elif len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
                    issues.append(
                        Issue(
                            where,
                            f"invalid label value {value!r}: at most 63 characters, empty or starting and "
                            "ending with an alphanumeric character, with only alphanumerics, '-', '_' or '.'",
                        )
                    )
    annotations = meta.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict):
            issues.append(Issue("metadata.annotations", "must be a map of strings"))
        else:
            total = 0
            for key, value in annotations.items():
                issues += _qualified_name_issues([*base, "annotations"], str(key).lower(), "annotation")
                if not isinstance(value, str):
                    where = format_path([*base, "annotations", str(key)])
                    issues.append(
                        Issue(where, f"annotation value must be a string, not {type(value).__name__}")
                    )
                    continue
                total += len(str(key)) + len(value)
            if total > _TOTAL_ANNOTATION_SIZE:
                issues.append(
                    Issue("metadata.annotations", f"total size {total} bytes exceeds 262144 bytes (256 KiB)")
                )
    return issues


# --------------------------------------------------------------------------- the validator


class ManifestValidator:
    """Strict validation of Kubernetes manifests; see the module docstring."""

    def __init__(self, shared_dir: Path, *, kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> None:
        self.shared_dir = Path(shared_dir).resolve()
        self.kubernetes_version = kubernetes_version
        if not (self.shared_dir / "schemas").is_dir():
            raise FileNotFoundError(f"{self.shared_dir / 'schemas'} is missing (upstream schemas)")

    def supports(self, api_version: str, kind: str) -> bool:
        if (api_version, kind) in _CRD_BY_KIND:
            return True
        _, index = _k8s_definitions(self.kubernetes_version)
        return (api_version, kind) in index

    def iter_schema_kinds(self, *, include_builtin: bool = True) -> Iterator[SchemaKind]:
        """The five CRD kinds first, then (optionally) every built-in kind of the pinned version."""
        for source in CRD_SOURCES:
            yield SchemaKind(source.api_version, source.kind)
        if include_builtin:
            _, index = _k8s_definitions(self.kubernetes_version)
            for api_version, kind in sorted(index):
                yield SchemaKind(api_version, kind)

    def notes(self, api_version: str, kind: str) -> list[str]:
        """What was changed in a CRD schema to load it (uncompilable regexes replaced)."""
        source = _CRD_BY_KIND.get((api_version, kind))
        return list(_crd_validator(self.shared_dir, source).notes) if source else []

    def issues(self, body: Mapping[str, Any]) -> list[Issue]:
        if not isinstance(body, Mapping):
            return [Issue("<root>", "a manifest must be a mapping")]
        api_version = body.get("apiVersion")
        kind = body.get("kind")
        if not isinstance(api_version, str) or not api_version:
            return [Issue("apiVersion", "apiVersion is required")]
        if not isinstance(kind, str) or not kind:
            return [Issue("kind", "kind is required")]
        source = _CRD_BY_KIND.get((api_version, kind))
        issues: list[Issue] = []
        if source is not None:
            compiled = _crd_validator(self.shared_dir, source)
            issues += metadata_issues(body.get("metadata"))
        else:
            maybe = _k8s_validator(self.kubernetes_version, api_version, kind)
            if maybe is None:
                return [Issue("kind", f"no schema for kind {kind} (apiVersion {api_version})")]
            compiled = maybe
            meta = body.get("metadata")
            if isinstance(meta, dict):
                name_rule = "label" if kind in _LABEL_NAMED_KINDS else "subdomain"
                issues += metadata_issues(meta, name_rule=name_rule, structural=False)
            else:
                issues.append(Issue("metadata", "metadata is required"))
        for error in compiled.validator.iter_errors(dict(body)):
            issues.extend(_issues_from_error(error))
        unique = {(i.path, i.message): i for i in issues}
        return sorted(unique.values(), key=lambda i: (i.path, i.message))

    def errors(self, body: Mapping[str, Any]) -> list[str]:
        """Human-readable problems, ``path: message``; empty when the manifest is valid."""
        return [str(issue) for issue in self.issues(body)]

    def is_valid(self, body: Mapping[str, Any]) -> bool:
        return not self.issues(body)
