"""The cluster a policy is applied to: server-side apply of one document, and deletion on revoke.

Only lightkube talks to Kubernetes (through ``policies.apply``). One client per process, created
on first use; a service without a configured cluster has no gateway at all, and the API answers
409 to apply and to revoking an applied policy.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.core.resource import NamespacedResource
from qcdr_common.contracts.policies.v1 import PolicyDocument

from qcdr_response.policies.apply import (
    DEFAULT_FIELD_MANAGER,
    KubeConfigError,
    ObjectRef,
    apply_documents,
    load_client,
    resource_for,
)
from qcdr_response.settings import ResponseSettings


class ClusterError(RuntimeError):
    """The cluster refused or could not be reached (one line, with the server's message)."""


class ClusterGateway:
    def __init__(
        self, client_factory: Callable[[], AsyncClient], *, field_manager: str = DEFAULT_FIELD_MANAGER
    ) -> None:
        self._factory = client_factory
        self._client: AsyncClient | None = None
        self.field_manager = field_manager

    @classmethod
    def from_settings(cls, settings: ResponseSettings) -> ClusterGateway | None:
        if not settings.cluster_configured:
            return None

        def factory() -> AsyncClient:
            return load_client(settings.kubeconfig, context=settings.kube_context)

        return cls(factory, field_manager=settings.field_manager)

    def client(self) -> AsyncClient:
        """The lightkube client (created on first use); ``ClusterError`` if it cannot be made."""
        return self._get_client()

    def _get_client(self) -> AsyncClient:
        if self._client is None:
            try:
                self._client = self._factory()
            except KubeConfigError as exc:
                raise ClusterError(str(exc)) from None
        return self._client

    async def apply(self, doc: PolicyDocument) -> str:
        """Server-side apply one document; returns created, configured or unchanged."""
        report = await apply_documents(
            [doc], self._get_client(), field_manager=self.field_manager, prune=False
        )
        if report.failed:
            raise ClusterError(str(report.failed[0]))
        for outcome in ("created", "configured", "unchanged"):
            if getattr(report, outcome):
                return outcome
        return "unchanged"

    async def delete(self, ref: ObjectRef) -> bool:
        """Delete the object; False when it was not there (already gone is not an error)."""
        client = self._get_client()
        try:
            res = resource_for(ref.api_version, ref.kind)
        except Exception as exc:  # lightkube raises several types for an unknown kind
            raise ClusterError(f"delete {ref}: unknown kind: {exc}") from None
        try:
            if issubclass(res, NamespacedResource):
                await client.delete(res, ref.name, namespace=ref.namespace or client.namespace)
            else:
                await client.delete(res, ref.name)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise ClusterError(f"delete {ref}: {exc.status.code} {exc.status.message}") from None
        except httpx2.HTTPError as exc:
            raise ClusterError(f"delete {ref}: {type(exc).__name__}: {exc}") from None
        return True

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
