"""Settings of the response service (env prefix ``QCDR_``)."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from qcdr_common.settings import CommonSettings

from qcdr_response.dns.resolve_deny import parse_resolvers
from qcdr_response.policies.config import EnforcementAction, GenerationConfig, OverrideHooks
from qcdr_response.policies.threat_intel import IntelFormat


class ActionsMode(StrEnum):
    DRY_RUN = "dry-run"
    ENFORCE = "enforce"


class DnsResolveDenyMode(StrEnum):
    OFF = "off"
    FILES = "files"
    APPLY = "apply"


class ThreatIntelMode(StrEnum):
    OFF = "off"
    FILES = "files"
    APPLY = "apply"


class ResponseSettings(CommonSettings):
    service_name: str = "response"

    # --- the findings consumer and the outbox relay
    # (stream tuning, the consumer name and the outbox poll interval come from CommonSettings)
    consume_in_app: bool = Field(
        default=True,
        description="`serve` also runs the findings consumer and the outbox relay; turn off when "
        "`consume` runs as its own process.",
    )
    received_retention_s: float = Field(
        default=7 * 86_400.0,
        ge=0,
        description="Envelope ids of handled findings are remembered this long to drop redeliveries "
        "(longer than analysis's QCDR_OUTBOX_RETENTION_S, what a replay can send again); 0: for good.",
    )
    consumer_group: str = Field(
        default="response", description="Consumer group on analysis:findings and federation:policies."
    )
    federation_policies: bool = Field(
        default=True,
        description="Also consume federation:policies (policies a federation hub placed on this "
        "cluster, published by the federation spoke), in the same consumer group.",
    )
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
    ioc_reputation_threshold: int = Field(
        default=50,
        ge=0,
        le=100,
        description="An IOC address AbuseIPDB scores below this (or whitelists) and no feed lists "
        "is left out of the CDR IOC blocklists, as once mode's --reputation-threshold; 0: never. "
        "The answers come from ingest (ABUSEIPDB_API_KEY); an address not checked yet stays blocked.",
    )
    ioc_refresh_s: float = Field(
        default=300.0,
        ge=0,
        description="Seconds between checks of the CDR IOC blocklists against ingest's AbuseIPDB answers "
        "and feed listings, so a clean answer lifts a block without waiting for the next verdict; 0: only "
        "batches of findings regenerate them.",
    )
    override_hooks: OverrideHooks = Field(
        default=OverrideHooks.KPROBES,
        description="With policy_action Override: kprobes (error injection) or lsm (BPF LSM hooks).",
    )
    ioc_blocklist: bool = Field(
        default=True,
        description="Keep once mode's CDR IOC blocklists (qualys-cdr-blocklist, cdr-dynamic-blocklist) "
        "from every verdict finding (source, intel_match, attack_technique, chain) naming a "
        "destination address or suspicious port.",
    )

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
    policy_resync_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between re-derivations of the policy files and auto-applies of approved "
        "policies without a new finding (what failed, a cluster away or a full disk, is retried).",
    )

    # --- response actions (dry-run unless actions_mode is enforce)
    actions_enabled: bool = Field(default=True, description="Run playbooks and accept action requests.")
    actions_mode: ActionsMode = Field(
        default=ActionsMode.DRY_RUN,
        description="dry-run: every action only checks and records what it would do; enforce: "
        "actions act (a playbook step or request may still ask for dry-run).",
    )
    playbooks_dir: Path | None = Field(
        default=None, description="Your playbooks (*.yaml) beside the shipped ones."
    )
    builtin_playbooks: bool | None = Field(
        default=None,
        description="Load the playbooks shipped with qcdr; unset: only when a cluster is configured "
        "(without one their actions could only fail).",
    )
    protected_namespaces: tuple[str, ...] = Field(
        default=("kube-system", "kube-public", "kube-node-lease", "qualys-system", "qualys-node-agent"),
        description="Never acted on (namespace names or fnmatch patterns).",
    )
    extra_protected_namespaces: tuple[str, ...] = Field(
        default=(), description="Added to protected_namespaces (so the defaults need not be repeated)."
    )
    protected_workloads: tuple[str, ...] = Field(
        default=(),
        description="Never acted on: 'namespace/name' patterns over pod and owner names (fnmatch).",
    )
    action_rate_per_hour: int = Field(
        default=60, ge=0, description="Per action type: at most this many acting (not dry-run) per hour."
    )
    workload_rate_per_hour: int = Field(
        default=10, ge=0, description="Per workload: at most this many actions acting on it per hour."
    )
    lease_default_s: int = Field(default=3600, ge=1, description="Containment lease when none is given.")
    lease_max_s: int = Field(default=7 * 86400, ge=1, description="Longest lease (and renewal) allowed.")
    lease_poll_s: float = Field(default=5.0, gt=0, description="How often expired leases are looked for.")

    # --- outputs (Slack, PagerDuty, Teams, Splunk HEC, Elasticsearch, syslog, webhooks)
    outputs_file: Path | None = Field(
        default=None, description="YAML list of sinks (docs/OUTPUTS.md); the seed's env variables add more."
    )
    outputs_poll_s: float = Field(
        default=1.0, gt=0, description="How often each sink looks for due messages."
    )
    outputs_retention_s: float = Field(
        default=7 * 86400, gt=0, description="Delivered messages are kept this long (grouping, the API)."
    )
    console_url: str | None = Field(
        default=None, description="Base URL of the console; messages link to the finding there."
    )

    # --- resolve-and-deny: the domain feeds' names -> their addresses -> CIDR groups Cilium denies
    dns_resolve_deny: DnsResolveDenyMode = Field(
        default=DnsResolveDenyMode.OFF,
        description="off; files: write dns-resolve-deny.yaml into output_dir on every refresh; apply: "
        "also server-side apply it (and prune its groups no longer needed). Turning it on is the "
        "approval: the groups change with DNS answers, not by review (docs/DNS.md).",
    )
    dns_resolvers: tuple[str, ...] = Field(
        default=(),
        description="IP or IP:PORT of the resolvers (the cluster DNS service); empty: /etc/resolv.conf.",
    )
    dns_refresh_s: float = Field(default=60.0, ge=1, description="Seconds between refreshes.")
    dns_max_names: int = Field(
        default=5000, ge=1, le=100_000, description="Names resolved per refresh (most-listed first)."
    )
    dns_asked_days: int = Field(
        default=7,
        ge=0,
        description="Names pods asked for in this many days (dns.malicious_domain findings) go first.",
    )
    dns_min_ttl_s: int = Field(default=60, ge=0, description="An address is kept at least this long.")
    dns_max_ttl_s: int = Field(
        default=3600, ge=1, description="... and at most this long after its last answer."
    )
    dns_tetragon: bool = Field(
        default=False, description="Also a Tetragon tcp_connect policy on the addresses."
    )
    dns_listed_view: str = Field(
        default="ingest_intel_domains",
        pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$",
        description="Where the listed names are read (ingest's view, same database).",
    )

    # --- the threat-intel blocklist: ingest's listed CIDRs -> once mode's threat-intel-blocklist.yaml
    threat_intel_blocklist: ThreatIntelMode = Field(
        default=ThreatIntelMode.OFF,
        description="off; files: write threat-intel-blocklist.yaml into output_dir when ingest's "
        "listed set changes; apply: also server-side apply it (and prune shards no longer needed). "
        "Turning it on is the approval: the set follows the feeds, not a review.",
    )
    threat_intel_refresh_s: float = Field(default=60.0, ge=1, description="Seconds between reads of the set.")
    threat_intel_view: str = Field(
        default="ingest_intel_listed",
        pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$",
        description="Where the listed CIDRs are read (ingest's view, same database).",
    )
    threat_intel_format: IntelFormat = Field(
        default=IntelFormat.GROUPS, description="groups: CiliumCIDRGroups behind one policy; inline."
    )
    threat_intel_group_size: int = Field(default=5000, ge=1, le=50_000, description="CIDRs per group.")

    @model_validator(mode="after")
    def _auto_apply_needs_a_cluster(self) -> ResponseSettings:
        if self.auto_apply and not self.cluster_configured:
            raise ValueError("auto_apply needs a cluster: set kubeconfig or kube_in_cluster")
        if self.dns_resolve_deny is DnsResolveDenyMode.APPLY and not self.cluster_configured:
            raise ValueError("dns_resolve_deny=apply needs a cluster: set kubeconfig or kube_in_cluster")
        if self.dns_resolve_deny is DnsResolveDenyMode.FILES and self.output_dir is None:
            raise ValueError("dns_resolve_deny=files needs output_dir")
        if self.threat_intel_blocklist is ThreatIntelMode.APPLY and not self.cluster_configured:
            raise ValueError(
                "threat_intel_blocklist=apply needs a cluster: set kubeconfig or kube_in_cluster"
            )
        if self.threat_intel_blocklist is ThreatIntelMode.FILES and self.output_dir is None:
            raise ValueError("threat_intel_blocklist=files needs output_dir")
        try:
            parse_resolvers(self.dns_resolvers)
        except ValueError as exc:
            raise ValueError(f"dns_resolvers: {exc}") from None
        if self.dns_min_ttl_s > self.dns_max_ttl_s:
            raise ValueError("dns_min_ttl_s is above dns_max_ttl_s")
        return self

    @property
    def cluster_configured(self) -> bool:
        return self.kubeconfig is not None or self.kube_in_cluster

    @property
    def use_builtin_playbooks(self) -> bool:
        return self.cluster_configured if self.builtin_playbooks is None else self.builtin_playbooks

    @property
    def all_protected_namespaces(self) -> tuple[str, ...]:
        return self.protected_namespaces + self.extra_protected_namespaces

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            action=self.policy_action,
            tetragon_version=self.tetragon_version,
            kernel_version=self.kernel_version,
            cilium_version=self.cilium_version,
            never_block=self.never_block,
            override_hooks=self.override_hooks,
        )


@lru_cache
def get_settings() -> ResponseSettings:
    return ResponseSettings()
