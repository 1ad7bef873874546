"""Settings of the federation service (env prefix ``QCDR_``; the seed's ``FEDERATION_ROLE`` and
``FEDERATION_HUB_URL`` are read as well).

One service, three roles: ``standalone`` (the default: the API answers, nothing federates),
``hub`` (serves spokes, places policies, gathers events) and ``spoke`` (registers with the hub at
``FEDERATION_HUB_URL`` and keeps in step with it).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from qcdr_common.contracts.events.v1 import Severity
from qcdr_common.contracts.federation.v1 import CLUSTER_NAME_PATTERN, FederationRole
from qcdr_common.settings import CommonSettings
from qcdr_common.tls_files import ca_context

# the longest a bootstrap token lives: the API, the CLI and the configured default alike
MAX_BOOTSTRAP_TOKEN_TTL_S = 30 * 86_400
# the heartbeat intervals a hub may set and a spoke takes from its hub (clamped into this range):
# a spoke computes "three intervals ago" and sleeps an interval, which a huge value overflows or
# turns into never
MIN_HEARTBEAT_INTERVAL_S = 0.1
MAX_HEARTBEAT_INTERVAL_S = 300.0


class FederationSettings(CommonSettings):
    service_name: str = "federation"

    role: FederationRole = Field(
        default=FederationRole.STANDALONE,
        validation_alias=AliasChoices("QCDR_FEDERATION_ROLE", "FEDERATION_ROLE"),
    )
    consume_in_app: bool = Field(
        default=True,
        validation_alias="QCDR_FEDERATION_CONSUME_IN_APP",
        description="Run the role's background loops (hub: health sweep, outbox relay, CRD "
        "controller; spoke: the agent) inside `serve`.",
    )

    # ------------------------------------------------------------------ hub
    heartbeat_interval_s: float = Field(
        default=10.0,
        ge=MIN_HEARTBEAT_INTERVAL_S,
        le=MAX_HEARTBEAT_INTERVAL_S,
        validation_alias="QCDR_FEDERATION_HEARTBEAT_INTERVAL_S",
        description="The interval the hub tells spokes to heartbeat at (Karmada's agent: 10 s).",
    )
    degraded_after_s: float = Field(
        default=20.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_DEGRADED_AFTER_S",
        description="A spoke silent this long is degraded.",
    )
    offline_after_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_OFFLINE_AFTER_S",
        description="A spoke silent this long is offline (OCM waits 5 minutes; we do not).",
    )
    health_sweep_s: float = Field(
        default=2.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_HEALTH_SWEEP_S",
        description="How often the hub re-derives health (transitions are logged and counted).",
    )
    rollout_interval_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_ROLLOUT_INTERVAL_S",
        description="How often the hub moves progressive rollouts on (releases the next clusters).",
    )
    long_poll_max_s: float = Field(
        default=30.0,
        gt=0,
        le=300,
        validation_alias="QCDR_FEDERATION_LONG_POLL_MAX_S",
        description="Longest a policy or command pull is held open when nothing changed.",
    )
    bootstrap_token_ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        le=MAX_BOOTSTRAP_TOKEN_TTL_S,
        validation_alias="QCDR_FEDERATION_BOOTSTRAP_TOKEN_TTL_S",
    )
    credential_cache_s: float = Field(
        default=5.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_CREDENTIAL_CACHE_S",
        description="How long a replica trusts a spoke credential it verified (0: check every "
        "request); revocation on this replica takes effect at once, on others within this time.",
    )
    register_retry_s: float = Field(
        default=300.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_REGISTER_RETRY_S",
        description="A used bootstrap token is accepted again this long when the spoke never "
        "heartbeated with the credential it got (the answer was lost); 0: never.",
    )
    command_wait_s: float = Field(
        default=15.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_COMMAND_WAIT_S",
        description="How long an approve/reject/undo proxied to a spoke waits for its answer before "
        "the hub answers 202 with the command to poll.",
    )
    credential_overlap_s: float = Field(
        default=300.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_CREDENTIAL_OVERLAP_S",
        description="How long a spoke's old credential keeps working after it rotated to a new one.",
    )
    command_redeliver_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_COMMAND_REDELIVER_S",
        description="A command handed to a spoke without an answer this long is handed out again.",
    )
    command_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_COMMAND_TTL_S",
        description="A command nobody answered within this time expires (never delivered again).",
    )
    received_retention_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_RECEIVED_RETENTION_S",
        description="How long the hub remembers forwarded item ids to drop re-sent copies "
        "(a spoke retries for minutes, not days).",
    )
    findings_retention_s: float = Field(
        default=90 * 86_400.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_FINDINGS_RETENTION_S",
        description="Hub: findings the spokes forwarded are deleted this long after their event "
        "time (90 days); 0: never.",
    )
    forward_max_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        validation_alias="QCDR_FEDERATION_FORWARD_MAX_BYTES",
        description="Largest body of a forwarded batch or a baseline upload (413 beyond).",
    )
    controller_enabled: bool = Field(
        default=False,
        validation_alias="QCDR_FEDERATION_CONTROLLER",
        description="Reconcile FederatedCluster / FederatedTracingPolicy / FederatedNetworkPolicy "
        "objects from the hub's Kubernetes API (lightkube; QCDR_KUBECONFIG or in-cluster).",
    )
    kubeconfig: Path | None = Field(default=None, validation_alias="QCDR_KUBECONFIG")
    kube_in_cluster: bool = Field(default=False, validation_alias="QCDR_KUBE_IN_CLUSTER")
    controller_namespace: str = Field(
        default="qualys-system",
        validation_alias="QCDR_FEDERATION_CONTROLLER_NAMESPACE",
        description="Where bootstrap-token Secrets named by FederatedCluster objects may live.",
    )
    controller_resync_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_CONTROLLER_RESYNC_S",
        description="Full resync: list every federation object again, reconcile it (re-reading its "
        "Secret) and remove hub clusters and policies made from objects that no longer exist.",
    )
    controller_status_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_CONTROLLER_STATUS_S",
        description="How often the controller writes health and sync status back to the objects "
        "(only what changed is patched).",
    )
    controller_watch_timeout_s: int = Field(
        default=300,
        ge=1,
        validation_alias="QCDR_FEDERATION_CONTROLLER_WATCH_TIMEOUT_S",
        description="The API server ends each watch after this long; the controller watches again "
        "from the last resourceVersion it saw.",
    )
    controller_backoff_max_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_CONTROLLER_BACKOFF_MAX_S",
        description="Longest wait before re-watching after a dropped connection, or retrying an "
        "object whose reconcile failed.",
    )
    controller_gc_skew_s: float = Field(
        default=60.0,
        ge=0,
        validation_alias="QCDR_FEDERATION_CONTROLLER_GC_SKEW_S",
        description="Hub rows made within this long before a full list are not collected against "
        "it: every hub replica runs the controller, and another replica's watch may have made them "
        "for an object created after the list (allowing for clocks that differ this much).",
    )

    # ------------------------------------------------------------------ serving
    tls_cert: Path | None = Field(
        default=None,
        validation_alias="QCDR_FEDERATION_TLS_CERT",
        description="PEM certificate (chain) `serve` answers HTTPS with; needs QCDR_FEDERATION_TLS_KEY. "
        "Without both it serves plain HTTP (behind a TLS-terminating proxy or ingress).",
    )
    tls_key: Path | None = Field(
        default=None,
        validation_alias="QCDR_FEDERATION_TLS_KEY",
        description="The PEM private key of QCDR_FEDERATION_TLS_CERT.",
    )

    # ------------------------------------------------------------------ spoke
    hub_url: str | None = Field(
        default=None, validation_alias=AliasChoices("QCDR_FEDERATION_HUB_URL", "FEDERATION_HUB_URL")
    )
    hub_ca_file: Path | None = Field(
        default=None,
        validation_alias="QCDR_FEDERATION_HUB_CA_FILE",
        description="CA bundle the hub's TLS certificate is checked against (default: system CAs).",
    )
    client_cert_file: Path | None = Field(
        default=None, validation_alias="QCDR_FEDERATION_CLIENT_CERT_FILE", description="mTLS (optional)."
    )
    client_key_file: Path | None = Field(default=None, validation_alias="QCDR_FEDERATION_CLIENT_KEY_FILE")
    cluster_name: str | None = Field(
        default=None,
        validation_alias="QCDR_FEDERATION_CLUSTER_NAME",
        description="This spoke's name at the hub (default: QCDR_CLUSTER_ID).",
    )
    cluster_labels: dict[str, str] = Field(
        default_factory=dict,
        validation_alias="QCDR_FEDERATION_CLUSTER_LABELS",
        description='JSON object, e.g. {"region": "eu-west-1", "env": "prod"}.',
    )
    bootstrap_token: SecretStr | None = Field(
        default=None, validation_alias="QCDR_FEDERATION_BOOTSTRAP_TOKEN"
    )
    bootstrap_token_file: Path | None = Field(
        default=None, validation_alias="QCDR_FEDERATION_BOOTSTRAP_TOKEN_FILE"
    )
    response_url: str = Field(
        default="http://127.0.0.1:8003",
        validation_alias="QCDR_FEDERATION_RESPONSE_URL",
        description="This cluster's response API (pending actions, proxied approve/reject/undo).",
    )
    response_token: SecretStr | None = Field(
        default=None,
        validation_alias="QCDR_FEDERATION_RESPONSE_TOKEN",
        description="Bearer token (read+write) for the response API.",
    )
    response_token_file: Path | None = Field(
        default=None, validation_alias="QCDR_FEDERATION_RESPONSE_TOKEN_FILE"
    )
    forward_events: bool = Field(default=True, validation_alias="QCDR_FEDERATION_FORWARD_EVENTS")
    forward_findings: bool = Field(default=True, validation_alias="QCDR_FEDERATION_FORWARD_FINDINGS")
    forward_min_severity: Severity = Field(
        default=Severity.INFO,
        validation_alias="QCDR_FEDERATION_FORWARD_MIN_SEVERITY",
        description="Events below this severity stay in the spoke.",
    )
    forward_batch: int = Field(default=500, ge=1, le=1000, validation_alias="QCDR_FEDERATION_FORWARD_BATCH")
    share_baselines: bool = Field(default=True, validation_alias="QCDR_FEDERATION_SHARE_BASELINES")
    baseline_sync_s: float = Field(default=30.0, gt=0, validation_alias="QCDR_FEDERATION_BASELINE_SYNC_S")
    retry_max_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_RETRY_MAX_S",
        description="Longest back-off between attempts while the hub is unreachable.",
    )
    http_timeout_s: float = Field(default=10.0, gt=0, validation_alias="QCDR_FEDERATION_HTTP_TIMEOUT_S")
    command_results_keep_s: float = Field(
        default=86_400.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_COMMAND_RESULTS_KEEP_S",
        description="How long a spoke keeps the result of a hub user's command, to answer the hub "
        "handing it out again without running it twice; longer than the hub's "
        "QCDR_FEDERATION_COMMAND_TTL_S.",
    )
    credential_max_age_s: float = Field(
        default=7 * 86_400.0,
        gt=0,
        validation_alias="QCDR_FEDERATION_CREDENTIAL_MAX_AGE_S",
        description="A spoke rotates its hub credential once it is this old (and whenever the hub asks).",
    )

    # ------------------------------------------------------------------ console (/ui)
    console_session_idle_s: float = Field(
        default=1800.0,
        gt=0,
        validation_alias="QCDR_CONSOLE_SESSION_IDLE_S",
        description="A console session unused this long ends.",
    )
    console_session_max_s: float = Field(
        default=43_200.0,
        gt=0,
        validation_alias="QCDR_CONSOLE_SESSION_MAX_S",
        description="A console session ends this long after sign-in, however busy.",
    )
    console_service_token: SecretStr | None = Field(
        default=None,
        validation_alias="QCDR_CONSOLE_SERVICE_TOKEN",
        description="Bearer token (read+write) the console uses on the other services' APIs.",
    )
    console_service_token_file: Path | None = Field(
        default=None, validation_alias="QCDR_CONSOLE_SERVICE_TOKEN_FILE"
    )
    console_ingest_url: str = Field(default="http://ingest:8000", validation_alias="QCDR_CONSOLE_INGEST_URL")
    console_analysis_url: str = Field(
        default="http://analysis:8000", validation_alias="QCDR_CONSOLE_ANALYSIS_URL"
    )
    console_response_url: str = Field(
        default="http://response:8000", validation_alias="QCDR_CONSOLE_RESPONSE_URL"
    )
    console_admission_url: str = Field(
        default="http://admission:8000", validation_alias="QCDR_CONSOLE_ADMISSION_URL"
    )
    console_admission_ca_file: Path | None = Field(
        default=None,
        validation_alias="QCDR_CONSOLE_ADMISSION_CA_FILE",
        description="PEM CA the console trusts for an https:// QCDR_CONSOLE_ADMISSION_URL (admission "
        "serves HTTPS only once registered as a webhook: k8s/admission mounts the webhook's CA here).",
    )
    console_http_timeout_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="QCDR_CONSOLE_HTTP_TIMEOUT_S",
        description="How long a console page waits for a backend before showing it as unavailable.",
    )

    @field_validator(
        "console_ingest_url", "console_analysis_url", "console_response_url", "console_admission_url"
    )
    @classmethod
    def _console_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("console_admission_ca_file")
    @classmethod
    def _ca_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            ca_context(value)  # unreadable or not PEM: one line at start-up, not a failing page
        return value

    def console_token(self) -> SecretStr | None:
        """The console's service token: the variable, else the file's first line."""
        if self.console_service_token is not None:
            return self.console_service_token
        if self.console_service_token_file is not None:
            return SecretStr(self.console_service_token_file.read_text(encoding="utf-8").strip())
        return None

    @field_validator("hub_url")
    @classmethod
    def _hub_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("FEDERATION_HUB_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, value: str | None) -> str | None:
        import re

        if value is not None and not re.fullmatch(CLUSTER_NAME_PATTERN, value):
            raise ValueError("must be a DNS-1123 label (lower-case letters, digits and '-', up to 63)")
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> FederationSettings:
        if self.offline_after_s < self.degraded_after_s:
            raise ValueError(
                "QCDR_FEDERATION_OFFLINE_AFTER_S must not be below QCDR_FEDERATION_DEGRADED_AFTER_S"
            )
        if self.role is FederationRole.SPOKE and self.hub_url is None:
            raise ValueError("FEDERATION_ROLE=spoke needs FEDERATION_HUB_URL")
        return self

    @property
    def spoke_name(self) -> str:
        return self.cluster_name or self.cluster_id


@lru_cache
def get_settings() -> FederationSettings:
    return FederationSettings()
