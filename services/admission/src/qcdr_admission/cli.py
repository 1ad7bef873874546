"""``qcdr-admission``: run the admission service."""

from __future__ import annotations

from qcdr_common.service_cli import make_service_cli

from qcdr_admission.settings import get_settings

cli = make_service_cli("admission", "qcdr_admission.app:create_app", get_settings)
