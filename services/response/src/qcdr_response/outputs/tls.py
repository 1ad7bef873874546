"""TLS files of a sink's configuration (``ca_file``; syslog's ``cert_file``/``key_file``), loaded
when the configuration is validated: a missing or non-PEM file is then a configuration error (one
line, ``qcdr outputs`` exit 2) instead of a traceback when the sink is built or first sends.

A ``ca_file`` only serves to verify the server, so one with ``verify_tls: false`` is refused as a
contradiction (it used to turn verification back on for some sinks and be ignored by others).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ValidationInfo
from qcdr_common.tls_files import ca_context


def _check_ca_file(value: str, info: ValidationInfo) -> str:
    if info.data.get("verify_tls") is False:
        raise ValueError("contradicts verify_tls: false (a CA bundle only serves to verify)")
    ca_context(value)
    return value


# declare after ``verify_tls`` (the check reads it)
CaFile = Annotated[str, AfterValidator(_check_ca_file)]
