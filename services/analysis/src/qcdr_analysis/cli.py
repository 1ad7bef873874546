"""``qcdr-analysis``: run the analysis service."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_analysis.settings import get_settings

cli = make_service_cli("analysis", "qcdr_analysis.app:create_app", get_settings)
