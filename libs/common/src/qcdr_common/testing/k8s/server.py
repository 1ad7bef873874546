"""``K8sTestServer``: a Kubernetes API server double on 127.0.0.1, for lightkube clients in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import lightkube
import yaml
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User

from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.k8s.app import RequestLog, RequestRecord, create_app
from qcdr_common.testing.k8s.crds import CrdSource, crd_resource_types, load_crds
from qcdr_common.testing.k8s.resources import DEFAULT_INSTALLED, GVK, Discovery, ResourceType, resolve
from qcdr_common.testing.k8s.store import ObjectKey, Store
from qcdr_common.testing.schemas import ManifestValidator

Installable = GVK | ResourceType | tuple[str, str, str] | Mapping[str, Any]


class K8sTestServer:
    """An in-memory API server: discovery, CRUD, label/field selectors, merge patch, server-side
    apply, watches, custom kinds from CRDs and their ``/status`` subresource.

    ``installed`` says which kinds exist (like installed CRDs): GVKs of ``KNOWN_RESOURCES``,
    ``ResourceType``s, or CustomResourceDefinition manifests (dicts; ``from_crds`` also takes YAML
    files); any other kind answers 404 like a missing CRD. With a ``validator``, every stored object
    of a kind it knows is validated strictly (422 otherwise); custom kinds from CRDs are checked
    against their own schema (``crds.py``: defaults, strict unknown fields, no CEL rules). With
    ``require_namespaces``, namespaced writes need the Namespace object (404 otherwise);
    ``namespaces`` are created at start when the Namespace kind is installed.

    Watches (``?watch=true``, ``watch.py``): events after a ``resourceVersion`` from a bounded
    history (``watch_history`` changes; older versions get an ``ERROR`` 410 Expired, see
    ``compact()``), or ``ADDED`` for the current objects first; selectors, ``timeoutSeconds`` and
    bookmarks (every ``bookmark_interval`` seconds). Every change gets the next resourceVersion,
    which is also the list's ``metadata.resourceVersion``. ``close_watches()`` ends the open watches
    (clients reconnect from their last version); stopping the server ends them too.

    Subresources: ``status`` of kinds that declare it (custom kinds; GET is the object, PUT, merge
    and apply patches change only ``.status``, owned apart in managedFields; main-resource writes
    keep the stored status, and ``metadata.generation`` counts changes outside metadata and status),
    ``pods/eviction`` (PodDisruptionBudgets honoured when that kind is installed) and ``scale`` of
    Deployments, ReplicaSets and StatefulSets (``subresources.py``). The built-in kinds here have no
    ``/status``: their status is dropped on every write. Not served: JSON patch (RFC 6902),
    admission, controllers, garbage collection, the deprecated ``/watch/`` paths, watch-list.

    For tests: ``seed``/``set_status`` write without HTTP (and are seen by watches), ``snapshot``,
    ``objects``, ``owners`` and ``requests`` inspect, ``wait_for_watches`` waits for clients to be
    watching, ``close_watches``/``compact`` drive reconnects and relists.

        server = K8sTestServer(validator=ManifestValidator(shared_dir))
        with server.serve():
            async with server.async_client() as client:
                ...
    """

    def __init__(
        self,
        installed: Iterable[Installable] | None = None,
        validator: ManifestValidator | None = None,
        *,
        require_namespaces: bool = False,
        namespaces: Iterable[str] = ("default", "kube-system"),
        watch_history: int = 1000,
        bookmark_interval: float = 60.0,
    ) -> None:
        self.resource_types = _resolve(DEFAULT_INSTALLED if installed is None else installed)
        self.discovery = Discovery(self.resource_types)
        self.store = Store(validator, require_namespaces=require_namespaces, history=watch_history)
        self.log = RequestLog()
        self._url: str | None = None
        self.app = create_app(
            self.store, self.discovery, self.log, self._server_address, bookmark_interval=bookmark_interval
        )
        namespace_type = self.discovery.find_kind("v1", "Namespace")
        if namespace_type is not None:
            for name in namespaces:
                self.store.create(namespace_type, None, {"metadata": {"name": name}}, "qcdr-test-server")

    @classmethod
    def from_crds(
        cls,
        crds: Iterable[CrdSource],
        *,
        installed: Iterable[Installable] | None = None,
        prune_unknown: bool = False,
        **kwargs: Any,
    ) -> Self:
        """A server for the kinds of these CRDs (manifests, YAML files, directories of them) next to
        ``installed`` (``DEFAULT_INSTALLED`` unless given)."""
        custom = [
            rt for crd in load_crds(crds) for rt in crd_resource_types(crd, prune_unknown=prune_unknown)
        ]
        base = _resolve(DEFAULT_INSTALLED if installed is None else installed)
        return cls([*base, *custom], **kwargs)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the test API server is not running: use `with server.serve():`")
        return self._url

    def _server_address(self) -> str:
        return self.url.removeprefix("http://")

    @contextmanager
    def serve(self, *, timeout: float = 10.0, graceful_shutdown_s: int = 2) -> Iterator[str]:
        """Run on 127.0.0.1 (a free port) in a background thread; yields the base URL.
        ``graceful_shutdown_s``: how long the server waits for open responses when it stops."""
        self.store.events.resume()
        with serve_app(
            self.app,
            name="k8s-test-server",
            startup_timeout_s=timeout,
            graceful_shutdown_s=graceful_shutdown_s,
        ) as url:
            self._url = url
            try:
                yield url
            finally:
                self._url = None
                # open watches would hold the server's graceful shutdown until its timeout
                self.store.events.stop()

    # ------------------------------------------------------------------ watches

    @property
    def resource_version(self) -> str:
        """The store's current resourceVersion (that of the last change)."""
        return self.store.resource_version

    @property
    def open_watches(self) -> int:
        return self.store.events.open_watches

    def close_watches(self) -> int:
        """End every open watch, as an API server restart or a load balancer would; their clients
        reconnect from the last resourceVersion they saw. Returns how many were open."""
        return self.store.events.close_all()

    def compact(self) -> None:
        """Forget the change history (like etcd compaction): a watch from any version up to now
        gets ``ERROR`` 410 Expired, and a lightkube client raises ``ApiError`` and must relist."""
        self.store.compact()

    async def wait_for_watches(self, count: int = 1, *, within_s: float = 30.0) -> None:
        """Wait (without blocking the caller's event loop) until at least ``count`` watches are open."""
        deadline = time.monotonic() + within_s
        while self.open_watches < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_watches} watch(es) open after {within_s:g} s, not {count}")
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------------ clients

    def kubeconfig(self, namespace: str = "default") -> KubeConfig:
        # lightkube asserts that a user entry exists, so give it an empty one (no credentials)
        return KubeConfig.from_one(cluster=Cluster(server=self.url), user=User(), namespace=namespace)

    def kubeconfig_dict(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "qcdr-test", "cluster": {"server": self.url}}],
            "users": [{"name": "qcdr-test", "user": {}}],
            "contexts": [
                {
                    "name": "qcdr-test",
                    "context": {"cluster": "qcdr-test", "user": "qcdr-test", "namespace": namespace},
                }
            ],
            "current-context": "qcdr-test",
        }

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file pointing at this server (for code that loads one)."""
        path.write_text(yaml.safe_dump(self.kubeconfig_dict(namespace)))
        return path

    def async_client(self, *, namespace: str = "default", **kwargs: Any) -> lightkube.AsyncClient:
        """A lightkube AsyncClient for this server (``trust_env=False``: no proxies from the environment)."""
        return lightkube.AsyncClient(config=self.kubeconfig(namespace), trust_env=False, **kwargs)

    def client(self, *, namespace: str = "default", **kwargs: Any) -> lightkube.Client:
        return lightkube.Client(config=self.kubeconfig(namespace), trust_env=False, **kwargs)

    # ------------------------------------------------------------------ inspection

    def snapshot(self) -> dict[ObjectKey, dict[str, Any]]:
        """Every stored object (as the server would return it), by (apiVersion, kind, namespace, name)."""
        return self.store.snapshot()

    def objects(self, kind: str) -> dict[tuple[str | None, str], dict[str, Any]]:
        """The stored objects of one kind, by (namespace, name)."""
        return {(k.namespace, k.name): v for k, v in self.snapshot().items() if k.kind == kind}

    def owners(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, set[str]]:
        """Field ownership of one object: ``{"manager (Apply)": {".spec.x", ...}}``."""
        rt = self._type(api_version, kind)
        return {f"{m} ({op})": paths for (m, op), paths in self.store.owners(rt, namespace, name).items()}

    @property
    def requests(self) -> list[RequestRecord]:
        return self.log.records()

    def seed(self, body: dict[str, Any], *, field_manager: str = "qcdr-test-seed") -> dict[str, Any]:
        """Create an object directly (no HTTP), as another client would have (an Update). As on
        create, the status of a kind with a status subresource is dropped: see ``set_status``."""
        rt = self._type(body["apiVersion"], body["kind"])
        namespace = body.get("metadata", {}).get("namespace") if rt.namespaced else None
        return self.store.create(rt, namespace, body, field_manager)

    def set_status(
        self,
        api_version: str,
        kind: str,
        name: str,
        status: dict[str, Any] | None,
        *,
        namespace: str | None = None,
        field_manager: str = "qcdr-test-seed",
    ) -> dict[str, Any]:
        """Replace an object's status directly (no HTTP), as a controller writing ``/status`` would;
        ``None`` removes it. The kind must have the status subresource."""
        rt = self._type(api_version, kind)
        if not rt.has_status:
            raise ValueError(f"{kind} ({api_version}) has no status subresource on this test server")
        current = self.store.get(rt, namespace if rt.namespaced else None, name)
        body = (
            {**current, "status": status}
            if status is not None
            else {k: v for k, v in current.items() if k != "status"}
        )
        return self.store.write_status(rt, namespace if rt.namespaced else None, name, body, field_manager)

    def _type(self, api_version: str, kind: str) -> ResourceType:
        rt = self.discovery.find_kind(api_version, kind)
        if rt is None:
            raise KeyError(f"{kind} ({api_version}) is not installed on this test server")
        return rt


def _resolve(installed: Iterable[Installable]) -> list[ResourceType]:
    """``resolve`` plus CRD manifests (each gives a kind per served version)."""
    out: list[ResourceType] = []
    for item in installed:
        if isinstance(item, Mapping):
            out.extend(crd_resource_types(item))
        else:
            out.extend(resolve([item]))
    return out
