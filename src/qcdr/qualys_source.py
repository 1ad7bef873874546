"""Findings from the Qualys CDR API, through the ingest service's client."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError
from qcdr_common.logging import redact_url
from qcdr_ingest.qualys.client import QualysCdrClient
from qcdr_ingest.qualys.config import QualysSettings
from qcdr_ingest.qualys.errors import QualysError
from qcdr_ingest.qualys.platforms import resolve_gateway
from qcdr_ingest.qualys.results import FetchProgress

from qcdr.sources import ProgressFn, SourceError, SourceResult


class MissingCredentialsError(ValueError):
    pass


class QualysSource:
    def __init__(
        self,
        settings: QualysSettings,
        base_url: str,
        *,
        severity: str | None = None,
        resource_type: str | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url
        self.severity = severity
        self.resource_type = resource_type

    @classmethod
    def from_environment(
        cls, *, platform: str | None, gateway: str | None, severity: str | None, resource_type: str | None
    ) -> QualysSource:
        try:
            settings = QualysSettings()
        except ValidationError as exc:
            raise ValueError(f"Qualys settings: {exc.errors()[0]['msg']}") from exc
        if not settings.has_credentials:
            raise MissingCredentialsError(
                "no Qualys credentials: set QUALYS_USERNAME and QUALYS_PASSWORD (or QUALYS_ACCESS_TOKEN), "
                "or use --events-file FILE, or try `make demo`"
            )
        base_url = resolve_gateway(platform or settings.platform, gateway or settings.gateway_url)
        return cls(settings, base_url, severity=severity, resource_type=resource_type)

    async def fetch(
        self, start: datetime, end: datetime, *, progress: ProgressFn | None = None
    ) -> SourceResult:
        def on_page(p: FetchProgress) -> None:
            if progress:
                progress(p.fetched, p.expected)

        try:
            async with QualysCdrClient(self.settings, base_url=self.base_url) as client:
                result = await client.fetch_findings(
                    start, end, severity=self.severity, resource_type=self.resource_type, progress=on_page
                )
        except QualysError as exc:
            raise SourceError(str(exc)) from exc
        warnings = list(result.warnings) + [
            f"window {w.start:%Y-%m-%dT%H:%M:%SZ}..{w.end:%Y-%m-%dT%H:%M:%SZ}: fetched {w.fetched} of "
            f"{w.reported if w.reported is not None else 'unknown'}: {w.reason}"
            for w in result.truncated_windows
        ]
        return SourceResult(
            name=f"qualys:{redact_url(self.base_url)}",
            findings=[*result.findings, *result.unidentified],
            reported_total=result.reported_total,
            pages=result.pages,
            requests=result.requests,
            retries=result.retries,
            window_splits=result.window_splits,
            duplicates_dropped=result.duplicates_dropped,
            warnings=warnings,
        )
