"""``qcdr --help`` and the light subcommands start without importing the pipeline: the once-mode
CronJob and a SOAR script calling ``qcdr action`` pay only for what their command uses."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "sqlalchemy",
    "redis",
    "asyncpg",
    "numpy",
    "sklearn",
    "lightkube",
    "qcdr_response",
    "qcdr_ingest",
    "qcdr_analysis",
    "qcdr.pipeline",
)


def test_the_command_line_imports_no_service_code_until_a_command_needs_it() -> None:
    probe = f"import sys, qcdr.cli\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    assert loaded == ""
