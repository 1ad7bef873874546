"""Settings of the ingest service (env prefix ``QCDR_``, e.g. ``QCDR_EVENTS_MAX_ITEMS=5000``).

The Qualys client keeps its own settings class (:class:`~qcdr_ingest.qualys.config.QualysSettings`,
the original ``QUALYS_*`` variables); the CDR poller runs when those carry credentials.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from qcdr_common.settings import CommonSettings

from qcdr_ingest.qualys.config import QualysSettings


class IngestSettings(CommonSettings):
    service_name: str = "ingest"

    # POST /v1/events/{source}
    events_max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Body size limit (413).")
    events_max_items: int = Field(default=10_000, ge=1, description="Items per request (413).")
    events_max_future_s: float = Field(
        default=300.0,
        gt=0,
        description="Events stamped further ahead of this server's clock are rejected (a wrong node "
        "clock): items posted, Hubble flows, Qualys findings and samples alike.",
    )
    events_retention_s: float = Field(
        default=30 * 86_400.0,
        ge=0,
        description="Stored events are deleted this long after their event time (30 days); 0: never.",
    )
    events_rate_per_s: float = Field(
        default=100_000.0, gt=0, description="Sustained events/s per token and source (429 beyond)."
    )
    events_rate_burst: int = Field(
        default=200_000, ge=1, description="Events a token may send at once per source (bucket size)."
    )
    events_rejections_listed: int = Field(
        default=100, ge=0, description="Rejected items described in a response (all are counted)."
    )

    # process
    background_workers: bool = Field(
        default=True,
        description="serve also runs the outbox relay, CDR poller and intel scheduler (false: a "
        "separate 'qcdr-ingest consume' runs them).",
    )

    # streams (stream_maxlen, outbox_poll_s: CommonSettings)
    relay_batch: int = Field(default=2000, ge=1, description="Outbox rows per relay round trip.")

    # the Qualys CDR poller (runs when QUALYS_* credentials are set)
    poller_enabled: bool = Field(default=True, description="Off: never poll, even with credentials.")
    poller_interval: timedelta = Field(default=timedelta(minutes=5))
    poller_overlap: timedelta = Field(
        default=timedelta(minutes=10), description="Re-read before the watermark (late findings)."
    )
    poller_lookback: timedelta = Field(
        default=timedelta(hours=24), description="How far back the very first poll reads."
    )

    # the threat-intel scheduler
    intel_enabled: bool = Field(default=False, description="Refresh threat-intel feeds on an interval.")
    intel_feeds_file: Path | None = Field(
        default=None, description="YAML feed list; built-in feeds if unset."
    )
    intel_interval: timedelta = Field(default=timedelta(minutes=15))
    # Container Security image status for admission's block_unscanned_images (needs QUALYS_*)
    images_enabled: bool = Field(
        default=True, description="Poll the Qualys CS images list when credentials are set."
    )
    images_interval: timedelta = Field(default=timedelta(minutes=15))
    # AbuseIPDB reputation of event destinations (needs ABUSEIPDB_API_KEY; intel/reputation_queue.py)
    reputation_enabled: bool = Field(
        default=True,
        description="With ABUSEIPDB_API_KEY: queue the public destinations of stored events and "
        "check them; off: never, even with a key.",
    )
    reputation_interval_s: float = Field(default=10.0, gt=0, description="Seconds between queue checks.")
    reputation_batch: int = Field(default=100, ge=1, le=1000, description="Addresses checked per cycle.")
    intel_ttl: timedelta = Field(
        default=timedelta(days=7), description="An indicator no feed lists any more goes after this."
    )
    intel_never_block: tuple[str, ...] = Field(
        default=(), description="Extra CIDRs never listed (cluster, node and service ranges)."
    )

    # Hubble Relay, followed (GetFlows): connection starts and DNS flows become events
    hubble_relay_address: str | None = Field(
        default=None, description="host:port of Hubble Relay (hubble-relay.kube-system:80); unset: off."
    )
    hubble_tls_ca_file: Path | None = Field(default=None, description="CA of Relay's certificate: TLS on.")
    hubble_tls_cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    hubble_tls_key_file: Path | None = Field(default=None, description="Its private key.")
    hubble_tls_server_name: str | None = Field(
        default=None, description="Name Relay's certificate carries (Cilium's: *.hubble-relay.cilium.io)."
    )
    hubble_batch_max: int = Field(default=1000, ge=1, description="Flows stored per transaction.")
    hubble_batch_wait_s: float = Field(default=0.5, gt=0, description="Longest wait to fill a batch.")
    hubble_backfill: timedelta = Field(
        default=timedelta(minutes=5), description="How far back a new stream reads at most."
    )
    hubble_retry_max_s: float = Field(default=60.0, gt=0, description="Longest pause between reconnects.")

    # DGA scores for the verdict API, asked of analysis (POST /v1/dns/classify) for unlisted names
    dga_analysis_url: str | None = Field(
        default=None, description="Analysis base URL (http://analysis:8000); unset: verdicts are feed-only."
    )
    dga_analysis_token: SecretStr | None = Field(default=None, description="A read token of analysis.")
    dga_analysis_token_file: Path | None = Field(default=None, description="The token from a file.")
    dga_timeout_s: float = Field(
        default=2.0, gt=0, description="Past this the verdict answers feed-only and says so."
    )
    dga_cache_s: float = Field(
        default=600.0, ge=0, description="How long a name's score is reused (scores are deterministic)."
    )

    def dga_token(self) -> SecretStr | None:
        if self.dga_analysis_token is not None and self.dga_analysis_token.get_secret_value():
            return self.dga_analysis_token
        if self.dga_analysis_token_file is not None:
            return SecretStr(self.dga_analysis_token_file.read_text(encoding="utf-8").strip())
        return None

    @model_validator(mode="after")
    def _hubble_client_certificate_whole(self) -> IngestSettings:
        if (self.hubble_tls_cert_file is None) != (self.hubble_tls_key_file is None):
            raise ValueError("hubble_tls_cert_file and hubble_tls_key_file go together (mutual TLS)")
        if self.hubble_tls_cert_file is not None and self.hubble_tls_ca_file is None:
            raise ValueError("a client certificate needs TLS: set hubble_tls_ca_file too")
        return self

    @model_validator(mode="after")
    def _burst_fits_a_batch(self) -> IngestSettings:
        # a batch larger than the bucket could never pass: it would be rate limited forever
        if self.events_rate_burst < self.events_max_items:
            raise ValueError("events_rate_burst must be at least events_max_items")
        return self


@lru_cache
def get_settings() -> IngestSettings:
    return IngestSettings()


@lru_cache
def get_qualys_settings() -> QualysSettings:
    return QualysSettings()
