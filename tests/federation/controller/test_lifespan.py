"""The controller's Kubernetes client comes from the settings, or start-up fails with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from qcdr_federation.hub.controller.lifespan import ControllerConfigError, kube_client
from qcdr_federation.settings import FederationSettings

from tests.federation.conftest import make_hub_settings


def settings(**overrides: object) -> FederationSettings:
    return make_hub_settings(
        "postgresql+asyncpg://x@127.0.0.1/none", "redis://127.0.0.1:6379/0", "t", **overrides
    )


def test_no_cluster_configured_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ControllerConfigError, match="set QCDR_KUBECONFIG or QCDR_KUBE_IN_CLUSTER=true"):
        kube_client(settings(controller_enabled=True))


def test_a_broken_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(ControllerConfigError, match="invalid Kubernetes configuration"):
        kube_client(settings(kubeconfig=path))
    with pytest.raises(ControllerConfigError, match="invalid Kubernetes configuration"):
        kube_client(settings(kubeconfig=tmp_path / "missing"))


async def test_a_kubeconfig_without_credentials_gives_a_client(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    client = kube_client(settings(kubeconfig=path))
    await client.close()


def test_in_cluster_without_a_service_account_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ControllerConfigError, match="invalid Kubernetes configuration"):
        kube_client(settings(kube_in_cluster=True))
