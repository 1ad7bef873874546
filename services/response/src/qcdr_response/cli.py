"""``qcdr-response``: run the response service."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_response.settings import get_settings

cli = make_service_cli("response", "qcdr_response.app:create_app", get_settings)
