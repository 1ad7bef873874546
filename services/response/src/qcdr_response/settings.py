"""Settings of the response service (env prefix ``QCDR_``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from qcdr_common.settings import CommonSettings

from qcdr_response.policies.config import EnforcementAction, GenerationConfig


class ResponseSettings(CommonSettings):
    service_name: str = "response"

    # --- the findings consumer and the outbox relay
    # (stream tuning, the consumer name and the outbox poll interval come from CommonSettings)
    consume_in_app: bool = Field(
        default=True,
        description="`serve` also runs the findings consumer and the outbox relay; turn off when "
        "`consume` runs as its own process.",
    )
    consumer_group: str = Field(default="response", description="Consumer group on analysis:findings.")
    event_cache_size: int = Field(
        default=200_000,
        ge=0,
        description="Findings kept decoded in memory for scope regeneration (0 disables the cache).",
    )

    # --- generation (audit mode by default: Post actions, nothing applied until approved)
    policy_action: EnforcementAction = EnforcementAction.POST
    tetragon_version: str = "1.5"
    kernel_version: str = "5.10"
    cilium_version: str = "1.17"
    never_block: tuple[str, ...] = ()

    # --- outputs
    output_dir: Path | None = Field(
        default=None, description="Write the current policies as YAML files here (once mode's names)."
    )
    auto_apply: bool = Field(
        default=False,
        description="Approve every new version and server-side apply it (needs a cluster); off: "
        "policies stay proposed until approved through the API.",
    )
    kubeconfig: Path | None = Field(default=None, description="The cluster to apply to (a kubeconfig file).")
    kube_context: str | None = None
    kube_in_cluster: bool = Field(default=False, description="Apply with the pod's service account.")
    field_manager: str = "qcdr"

    @model_validator(mode="after")
    def _auto_apply_needs_a_cluster(self) -> ResponseSettings:
        if self.auto_apply and not self.cluster_configured:
            raise ValueError("auto_apply needs a cluster: set kubeconfig or kube_in_cluster")
        return self

    @property
    def cluster_configured(self) -> bool:
        return self.kubeconfig is not None or self.kube_in_cluster

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            action=self.policy_action,
            tetragon_version=self.tetragon_version,
            kernel_version=self.kernel_version,
            cilium_version=self.cilium_version,
            never_block=self.never_block,
        )


@lru_cache
def get_settings() -> ResponseSettings:
    return ResponseSettings()
