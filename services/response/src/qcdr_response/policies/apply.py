"""Server-side apply of generated policies, then pruning of the ones no longer generated.

``apply_documents`` applies every ``PolicyDocument`` with server-side apply (one field manager,
``qcdr`` by default) and reports each object as created, configured, unchanged or failed. A
failure (a 409 field-manager conflict, a 422 invalid object, a kind whose CRD is not installed,
...) is reported with the server's message and never stops the other documents.

Pruning then deletes, for each managed kind, the objects that carry the managed selector labels
but are not among the documents. Rules, chosen so that pruning can only remove what qcdr owns and
never leaves a gap in protection:

- only the kinds in ``managed_kinds`` (default: the five Tetragon/Cilium kinds) are pruned;
  built-in kinds (ConfigMap, NetworkPolicy, ...) can be applied but are never pruned;
- only objects matching *all* ``managed_selector`` labels are candidates; an empty selector
  disables pruning (it would select every object of the kind);
- a kind is **not pruned when any of its documents failed to apply**: if a policy was renamed
  and the new object failed, deleting the old one would leave the workload unprotected;
- a kind whose list answers 404 is not installed on the cluster: a warning, not a failure;
- with ``dry_run`` every request is sent with ``dryRun=All`` and the report says what would
  happen (``pruned`` then lists what would be deleted).

Documents should carry the managed selector labels themselves (generators add them); a document
without them is applied but reported in ``warnings``, because it can never be pruned.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import httpx2
from lightkube import ALL_NS, ApiError, AsyncClient, ConfigError, KubeConfig, LoadResourceError
from lightkube.codecs import resource_registry
from lightkube.config.kubeconfig import SERVICE_ACCOUNT
from lightkube.config.models import User
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType
from qcdr_common.contracts.policies.v1 import PolicyDocument

DEFAULT_FIELD_MANAGER = "qcdr"
DEFAULT_MANAGED_SELECTOR: Mapping[str, str] = MappingProxyType({"app.kubernetes.io/managed-by": "qcdr"})
DEFAULT_CONCURRENCY = 8
# what an API server says for a kind it does not serve (e.g. a CRD that is not installed)
_NO_SUCH_RESOURCE = "the server could not find the requested resource"


@dataclass(frozen=True)
class ManagedKind:
    """A custom resource kind qcdr writes (and therefore prunes)."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool


DEFAULT_MANAGED_KINDS: tuple[ManagedKind, ...] = (
    ManagedKind("cilium.io/v1alpha1", "TracingPolicy", "tracingpolicies", False),
    ManagedKind("cilium.io/v1alpha1", "TracingPolicyNamespaced", "tracingpoliciesnamespaced", True),
    ManagedKind("cilium.io/v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies", True),
    ManagedKind("cilium.io/v2", "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies", False),
    ManagedKind("cilium.io/v2", "CiliumCIDRGroup", "ciliumcidrgroups", False),
    ManagedKind("cilium.io/v2alpha1", "CiliumCIDRGroup", "ciliumcidrgroups", False),
)


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ObjectRef:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace")
        return cls(
            str(body.get("apiVersion", "")),
            str(body.get("kind", "")),
            str(namespace) if namespace else None,
            str(meta.get("name", "")),
        )

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}/{where}{self.name}"


@dataclass(frozen=True)
class ApplyFailure:
    ref: ObjectRef
    message: str
    code: int | None = None  # the HTTP status, when the server answered
    reason: str | None = None  # the Status reason: Conflict, Invalid, NotFound, ...
    action: Literal["apply", "prune"] = "apply"

    def __str__(self) -> str:
        code = f" ({self.code} {self.reason})" if self.code else ""
        return f"{self.action} {self.ref}{code}: {self.message}"


@dataclass
class ApplyReport:
    created: list[ObjectRef] = field(default_factory=list)
    configured: list[ObjectRef] = field(default_factory=list)
    unchanged: list[ObjectRef] = field(default_factory=list)
    pruned: list[ObjectRef] = field(default_factory=list)
    failed: list[ApplyFailure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        counts = (
            f"{len(self.created)} created, {len(self.configured)} configured, "
            f"{len(self.unchanged)} unchanged, {len(self.pruned)} pruned, {len(self.failed)} failed"
        )
        return f"{counts} (dry run)" if self.dry_run else counts


Outcome = Literal["created", "configured", "unchanged"]


# --------------------------------------------------------------------------- resource classes


@cache
def _generic_resource(kind: ManagedKind) -> Any:
    group, _, version = kind.api_version.rpartition("/")
    if kind.namespaced:
        return create_namespaced_resource(group, version, kind.kind, kind.plural)
    return create_global_resource(group, version, kind.kind, kind.plural)


def resource_for(
    api_version: str, kind: str, managed_kinds: Sequence[ManagedKind] = DEFAULT_MANAGED_KINDS
) -> Any:
    """The lightkube resource class of a kind: generic for the managed CRD kinds, else lightkube's model."""
    for managed in (*managed_kinds, *DEFAULT_MANAGED_KINDS):
        if (managed.api_version, managed.kind) == (api_version, kind):
            return _generic_resource(managed)
    return resource_registry.load(api_version, kind)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    to_dict = getattr(obj, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else {}


def _resource_version(obj: Mapping[str, Any] | None) -> str | None:
    meta = (obj or {}).get("metadata") or {}
    rv = meta.get("resourceVersion")
    return str(rv) if rv else None


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = dict(out.get("metadata") or {})
    for key in ("resourceVersion", "managedFields", "generation"):
        meta.pop(key, None)
    out["metadata"] = meta
    return out


def _failure(ref: ObjectRef, exc: Exception, action: Literal["apply", "prune"] = "apply") -> ApplyFailure:
    if isinstance(exc, ApiError):
        status = exc.status
        code = int(status.code) if status.code else None
        message = status.message or str(exc)
        if code == 404 and action == "apply" and message == _NO_SUCH_RESOURCE:
            message += f" (is the {ref.kind} kind ({ref.api_version}) installed on the cluster?)"
        return ApplyFailure(ref, message, code, status.reason, action)
    return ApplyFailure(ref, f"{type(exc).__name__}: {exc}", action=action)


# --------------------------------------------------------------------------- apply


async def _apply_one(
    client: AsyncClient,
    doc: PolicyDocument,
    managed_kinds: Sequence[ManagedKind],
    *,
    field_manager: str,
    force: bool,
    dry_run: bool,
) -> tuple[ObjectRef, Outcome | ApplyFailure]:
    body = doc.body
    ref = ObjectRef.of(body)
    if not ref.api_version or not ref.kind or not ref.name:
        return ref, ApplyFailure(ref, "the document has no apiVersion, kind or metadata.name")
    try:
        res = resource_for(ref.api_version, ref.kind, managed_kinds)
    except (LoadResourceError, ValueError) as exc:
        return ref, ApplyFailure(ref, f"unknown kind: {exc}")
    namespaced = issubclass(res, NamespacedResource)
    if namespaced and ref.namespace is None:
        ref = ObjectRef(ref.api_version, ref.kind, client.namespace, ref.name)
    namespace = ref.namespace if namespaced else None
    try:
        try:
            before: dict[str, Any] | None = _as_dict(await client.get(res, ref.name, namespace=namespace))
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            before = None  # missing object, or a kind that is not installed (then the apply says so)
        after = _as_dict(
            await client.patch(
                res,
                ref.name,
                body,
                namespace=namespace,
                patch_type=PatchType.APPLY,
                field_manager=field_manager,
                force=force,
                dry_run=dry_run,
            )
        )
    except (ApiError, httpx2.HTTPError) as exc:
        return ref, _failure(ref, exc)
    if before is None:
        return ref, "created"
    if dry_run:  # nothing is stored, so the resourceVersion cannot tell
        return ref, "unchanged" if _comparable(before) == _comparable(after) else "configured"
    return ref, "unchanged" if _resource_version(before) == _resource_version(after) else "configured"


async def apply_documents(
    docs: Sequence[PolicyDocument],
    client: AsyncClient,
    *,
    field_manager: str = DEFAULT_FIELD_MANAGER,
    managed_selector: Mapping[str, str] = DEFAULT_MANAGED_SELECTOR,
    prune: bool = True,
    dry_run: bool = False,
    force: bool = False,
    managed_kinds: Sequence[ManagedKind] = DEFAULT_MANAGED_KINDS,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ApplyReport:
    """Server-side apply ``docs``, then prune; see the module docstring for the rules."""
    report = ApplyReport(dry_run=dry_run)
    seen: set[ObjectRef] = set()
    unique: list[PolicyDocument] = []
    for doc in docs:
        ref = ObjectRef.of(doc.body)
        if ref in seen:
            report.failed.append(ApplyFailure(ref, "the same object appears in more than one document"))
            continue
        seen.add(ref)
        unique.append(doc)
        labels = (doc.body.get("metadata") or {}).get("labels") or {}
        if managed_selector and any(labels.get(k) != v for k, v in managed_selector.items()):
            report.warnings.append(
                f"{ref} lacks the managed labels {dict(managed_selector)}: it will never be pruned"
            )

    limit = asyncio.Semaphore(max(concurrency, 1))

    async def one(doc: PolicyDocument) -> tuple[ObjectRef, Outcome | ApplyFailure]:
        async with limit:
            return await _apply_one(
                client, doc, managed_kinds, field_manager=field_manager, force=force, dry_run=dry_run
            )

    # Namespaces first, so that the objects inside them can be created.
    first = [d for d in unique if d.kind == "Namespace"]
    rest = [d for d in unique if d.kind != "Namespace"]
    results = [*await asyncio.gather(*map(one, first)), *await asyncio.gather(*map(one, rest))]
    desired: set[ObjectRef] = set()
    for ref, outcome in results:
        desired.add(ref)
        if isinstance(outcome, ApplyFailure):
            report.failed.append(outcome)
        else:
            getattr(report, outcome).append(ref)

    if prune:
        await _prune(client, report, desired, managed_kinds, managed_selector, dry_run=dry_run)
    return report


def _identity(ref: ObjectRef) -> tuple[str, str, str | None, str]:
    group = ref.api_version.rpartition("/")[0]
    return group, ref.kind, ref.namespace, ref.name


async def _prune(
    client: AsyncClient,
    report: ApplyReport,
    desired: set[ObjectRef],
    managed_kinds: Sequence[ManagedKind],
    selector: Mapping[str, str],
    *,
    dry_run: bool,
) -> None:
    if not selector:
        report.warnings.append(
            "the managed selector is empty: pruning skipped (it would select every object)"
        )
        return
    # by group and kind, as _identity: one CRD served at two versions (CiliumCIDRGroup v2 and
    # v2alpha1) lists the same objects under either, so a failure at one version holds back both
    failed_kinds = {_identity(f.ref)[:2] for f in report.failed}
    wanted = {_identity(ref) for ref in desired}
    held: set[tuple[str, str]] = set()
    for managed in managed_kinds:
        group_kind = (managed.api_version.rpartition("/")[0], managed.kind)
        if group_kind in failed_kinds:
            if group_kind not in held:
                held.add(group_kind)
                report.warnings.append(
                    f"{managed.kind}: not pruned because some of its documents failed to apply"
                )
            continue
        res = _generic_resource(managed)
        try:
            if managed.namespaced:
                found = [_as_dict(o) async for o in client.list(res, namespace=ALL_NS, labels=dict(selector))]
            else:
                found = [_as_dict(o) async for o in client.list(res, labels=dict(selector))]
        except ApiError as exc:
            if exc.status.code == 404:
                report.warnings.append(
                    f"{managed.kind} ({managed.api_version}) is not installed: nothing to prune"
                )
            else:
                report.warnings.append(f"{managed.kind}: cannot list objects to prune: {exc.status.message}")
            continue
        except httpx2.HTTPError as exc:
            report.warnings.append(f"{managed.kind}: cannot list objects to prune: {exc}")
            continue
        for obj in sorted(found, key=lambda o: (ObjectRef.of(o).namespace or "", ObjectRef.of(o).name)):
            ref = ObjectRef.of({**obj, "apiVersion": managed.api_version, "kind": managed.kind})
            # A CRD served at several versions lists the same objects under each of them
            # (CiliumCIDRGroup v2alpha1 and v2): identity ignores the version.
            if _identity(ref) in wanted:
                continue
            try:
                if managed.namespaced:
                    await client.delete(res, ref.name, namespace=ref.namespace, dry_run=dry_run)
                else:
                    await client.delete(res, ref.name, dry_run=dry_run)
            except ApiError as exc:
                if exc.status.code != 404:  # already gone: nothing to do
                    report.failed.append(_failure(ref, exc, "prune"))
                continue
            except httpx2.HTTPError as exc:
                report.failed.append(_failure(ref, exc, "prune"))
                continue
            report.pruned.append(ref)


# --------------------------------------------------------------------------- client


class KubeConfigError(RuntimeError):
    """No usable Kubernetes configuration (one line, fit for a CLI error)."""


def load_client(
    kubeconfig: Path | None = None,
    *,
    context: str | None = None,
    service_account: Path = Path(SERVICE_ACCOUNT),
) -> AsyncClient:
    """An AsyncClient from, in order: ``kubeconfig``, ``$KUBECONFIG`` (first existing file of the
    list), the in-cluster service account, ``~/.kube/config``; else ``KubeConfigError``."""
    source = "the in-cluster service account"
    try:
        if kubeconfig is not None:
            source = str(kubeconfig)
            config = KubeConfig.from_file(kubeconfig)
        elif os.environ.get("KUBECONFIG"):
            paths = [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
            existing = [p for p in paths if p.is_file()]
            if not existing:
                raise KubeConfigError(f"KUBECONFIG={os.environ['KUBECONFIG']} names no existing file")
            source = str(existing[0])
            config = KubeConfig.from_file(existing[0])
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and (service_account / "token").is_file():
            config = KubeConfig.from_service_account(service_account)
        elif Path("~/.kube/config").expanduser().is_file():
            source = "~/.kube/config"
            config = KubeConfig.from_file("~/.kube/config")
        else:
            raise KubeConfigError(
                "no Kubernetes configuration: pass a kubeconfig, set KUBECONFIG, or run in a pod "
                "with a service account"
            )
        single = config.get(context_name=context)
        if single is None:
            raise KubeConfigError("the kubeconfig has no usable context")
        if single.user is None:  # lightkube asserts a user entry exists; an empty one means "no auth"
            single = single._replace(user=User())
        return AsyncClient(config=single)
    except (ConfigError, KeyError, OSError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        if isinstance(exc, UnicodeDecodeError):  # its text names a byte, not the file
            detail = f"not UTF-8 text (byte {exc.start})"
        raise KubeConfigError(f"invalid Kubernetes configuration ({source}): {detail}") from None
