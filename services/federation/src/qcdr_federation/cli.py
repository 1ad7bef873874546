"""``qcdr-federation``: run the federation service."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_federation.settings import get_settings

cli = make_service_cli("federation", "qcdr_federation.app:create_app", get_settings)
