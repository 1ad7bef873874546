"""What the action rules need besides the session: the mode, the protections, the limits, the
playbooks. Built once from the settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from qcdr_response.actions.playbook import Playbook
from qcdr_response.settings import ActionsMode, ResponseSettings


@dataclass(frozen=True)
class ActionsContext:
    cluster_id: str
    enforce: bool = False
    protected_namespaces: tuple[str, ...] = ("kube-system", "kube-public", "kube-node-lease")
    protected_workloads: tuple[str, ...] = ()
    action_rate_per_hour: int = 60
    workload_rate_per_hour: int = 10
    lease_default_s: int = 3600
    lease_max_s: int = 7 * 86400
    playbooks: tuple[Playbook, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(
        cls, settings: ResponseSettings, playbooks: tuple[Playbook, ...] = ()
    ) -> ActionsContext:
        return cls(
            cluster_id=settings.cluster_id,
            enforce=settings.actions_mode == ActionsMode.ENFORCE,
            protected_namespaces=settings.all_protected_namespaces,
            protected_workloads=settings.protected_workloads,
            action_rate_per_hour=settings.action_rate_per_hour,
            workload_rate_per_hour=settings.workload_rate_per_hour,
            lease_default_s=settings.lease_default_s,
            lease_max_s=settings.lease_max_s,
            playbooks=playbooks,
        )
