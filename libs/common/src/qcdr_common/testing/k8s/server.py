"""``K8sTestServer``: a Kubernetes API server double on 127.0.0.1, for lightkube clients in tests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightkube
import yaml
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User

from qcdr_common.testing.asgi_server import serve_app
from qcdr_common.testing.k8s.app import RequestLog, RequestRecord, create_app
from qcdr_common.testing.k8s.resources import DEFAULT_INSTALLED, GVK, Discovery, ResourceType, resolve
from qcdr_common.testing.k8s.store import ObjectKey, Store
from qcdr_common.testing.schemas import ManifestValidator


class K8sTestServer:
    """An in-memory API server: discovery, CRUD, label/field selectors, merge patch, server-side apply.

    ``installed`` says which kinds exist (like installed CRDs); any other kind answers 404 like a
    missing CRD. With a ``validator``, every stored object is validated strictly (422 otherwise).
    With ``require_namespaces``, namespaced writes need the Namespace object (404 otherwise);
    ``namespaces`` are created at start when the Namespace kind is installed. Subresources:
    ``pods/eviction`` (PodDisruptionBudgets honoured when that kind is installed) and ``scale`` of
    Deployments, ReplicaSets and StatefulSets (``subresources.py``). No watch, no ``/status``, no
    admission, no controllers, no garbage collection.

        server = K8sTestServer(validator=ManifestValidator(shared_dir))
        with server.serve():
            async with server.async_client() as client:
                ...
    """

    def __init__(
        self,
        installed: Iterable[GVK | ResourceType | tuple[str, str, str]] | None = None,
        validator: ManifestValidator | None = None,
        *,
        require_namespaces: bool = False,
        namespaces: Iterable[str] = ("default", "kube-system"),
    ) -> None:
        self.resource_types = resolve(DEFAULT_INSTALLED if installed is None else installed)
        self.discovery = Discovery(self.resource_types)
        self.store = Store(validator, require_namespaces=require_namespaces)
        self.log = RequestLog()
        self._url: str | None = None
        self.app = create_app(self.store, self.discovery, self.log, self._server_address)
        namespace_type = self.discovery.find_kind("v1", "Namespace")
        if namespace_type is not None:
            for name in namespaces:
                self.store.create(namespace_type, None, {"metadata": {"name": name}}, "qcdr-test-server")

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the test API server is not running: use `with server.serve():`")
        return self._url

    def _server_address(self) -> str:
        return self.url.removeprefix("http://")

    @contextmanager
    def serve(self, *, timeout: float = 10.0) -> Iterator[str]:
        """Run on 127.0.0.1 (a free port) in a background thread; yields the base URL."""
        with serve_app(self.app, name="k8s-test-server", startup_timeout_s=timeout) as url:
            self._url = url
            try:
                yield url
            finally:
                self._url = None

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
        """Create an object directly (no HTTP), as another client would have (an Update)."""
        rt = self._type(body["apiVersion"], body["kind"])
        namespace = body.get("metadata", {}).get("namespace") if rt.namespaced else None
        return self.store.create(rt, namespace, body, field_manager)

    def _type(self, api_version: str, kind: str) -> ResourceType:
        rt = self.discovery.find_kind(api_version, kind)
        if rt is None:
            raise KeyError(f"{kind} ({api_version}) is not installed on this test server")
        return rt
